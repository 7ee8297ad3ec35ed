// Shared by the tinysql tests: the cached tokenizers of the foundation issue, loaded once each.
#pragma once

#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "tokenizer/tokenizer.hpp"

namespace teap::tinysql::testing {

inline std::string tokenizers_dir() {
  const char* env = std::getenv("TEAP_TOKENIZERS");
  return env ? env : TEAP_DEFAULT_TOKENIZERS;
}

// "gpt2", "qwen2", "llama3" (no begin-of-text) or "llama3-bos" (Llama-3.2's post-processor).
inline const tokenizer::Tokenizer& cached_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<tokenizer::Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) slot = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::load(tokenizers_dir() + "/" + name));
  return *slot;
}

}  // namespace teap::tinysql::testing
