// `tinysql-eap tokenize`: ids and tokens of each TEXT, for checking a tokenizer by eye.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <memory>

#include "cli/commands.hpp"
#include "model/hf_cache.hpp"
#include "tokenizer/tokenizer.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::cli {

Run add_tokenize_command(CLI::App& app) {
  struct Args {
    std::string tokenizer;
    bool no_special = false;
    std::vector<std::string> texts;
    std::vector<std::string> files;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("tokenize", "Print the token ids and tokens of each TEXT");
  sub->add_option("--tokenizer", args->tokenizer,
                  "tokenizer.json, vocab.json/encoder.json, a model folder holding one, or a repository id in the Hugging Face cache")
      ->required();
  sub->add_flag("--no-special", args->no_special, "do not add the post-processor's special tokens (begin-of-text)");
  sub->add_option("TEXT", args->texts, "text to tokenize");
  // A file takes what a command line cannot: long texts, NUL bytes, exact trailing newlines.
  sub->add_option("-f,--file", args->files, "tokenize the whole content of FILE too ('-': standard input)");
  return [args] {
    if (args->texts.empty() && args->files.empty()) throw InputError("tokenize: give a TEXT or --file");
    const auto tok = tokenizer::Tokenizer::load(model::resolve_tokenizer_path(args->tokenizer));
    spdlog::debug("tokenizer {} ({}), vocabulary {}", tok.source(), tok.family(), tok.vocab_size());
    std::vector<std::string> texts = args->texts;
    for (const auto& f : args->files)
      texts.push_back(f == "-" ? read_stream(stdin, "standard input", kMaxDataFile) : read_file(f, kMaxDataFile));
    for (const auto& text : texts) {
      const auto ids = tok.encode(text, !args->no_special);
      std::string line_ids, line_tokens;
      for (size_t i = 0; i < ids.size(); ++i) {
        line_ids += (i ? " " : "") + std::to_string(ids[i]);
        line_tokens += (i ? " " : "") + tok.token(ids[i]);
      }
      std::printf("ids: %s\ntokens: %s\ncount: %zu\n", line_ids.c_str(), line_tokens.c_str(), ids.size());
    }
  };
}

}  // namespace teap::cli
