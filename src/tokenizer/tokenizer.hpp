// Owns text <-> token ids for the TinySQL model families: byte-level BPE exactly as Hugging Face's
// `tokenizers` does it (GPT-2, Qwen2 and Llama-3 pre-tokenizer patterns, added and special tokens,
// the begin-of-text post-processor). Knows nothing of LibTorch or of models.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace teap::tokenizer {

struct AddedToken {
  int id = -1;
  std::string content;  // literal text matched in the input
  bool special = false;
  bool lstrip = false;  // absorbs whitespace on its left
  bool rstrip = false;  // absorbs whitespace on its right
  bool single_word = false;
};

class Tokenizer {
 public:
  // `path` is a model folder, a `tokenizer.json`, or GPT-2's `vocab.json` / `encoder.json` (the
  // merges file `merges.txt` / `vocab.bpe` is then looked up beside it). A folder is searched in
  // that order. Any problem is an InputError naming the file and what is wrong.
  static Tokenizer load(const std::string& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // `add_special_tokens` runs the post-processor (Llama-3.2's begin-of-text prefix). Literal
  // special-token strings in `text` become their ids either way, as in Hugging Face.
  std::vector<int> encode(const std::string& text, bool add_special_tokens = true) const;
  std::string decode(const std::vector<int>& ids, bool skip_special_tokens = false) const;

  // The token's vocabulary string (byte-level form, `Ġprice`), or the added token's content.
  std::string token(int id) const;
  // Raw bytes the token stands for when decoded.
  const std::string& token_bytes(int id) const;
  std::optional<int> token_id(const std::string& vocab_string) const;

  int vocab_size() const;       // highest id + 1, added tokens included
  int base_vocab_size() const;  // the BPE model's own vocabulary, without added tokens
  const std::vector<AddedToken>& added_tokens() const;
  // Ids the post-processor puts before the text (empty for GPT-2 and Qwen2).
  const std::vector<int>& prefix_ids() const;
  const std::string& source() const;  // the file it was loaded from
  // Short name for messages: "gpt2", "qwen2", "llama3" (from the pre-tokenizer), or "bpe".
  const std::string& family() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Copies the tokenizer files found at `path` (a folder, or a file with its siblings: tokenizer.json,
// tokenizer_config.json, vocab.json, merges.txt, encoder.json, vocab.bpe, special_tokens_map.json)
// into the folder `out`, so that a model folder carries its own tokenizer.
void copy_tokenizer_files(const std::string& path, const std::string& out);

// GPT-2's mapping between bytes and printable code points (`Ġ` for a space), used by every
// byte-level vocabulary.
std::string bytes_to_unicode(const std::string& bytes);

}  // namespace teap::tokenizer
