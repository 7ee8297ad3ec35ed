// The tokenizer's loaded state, shared by its loader, pre-tokenizer and encoder (internal header).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.hpp"

typedef struct pcre2_real_code_8 pcre2_code_8;

namespace teap::tokenizer {

// A compiled PCRE2 pattern (UTF + Unicode properties, so \p{L}, \s and look-ahead behave as in
// the Oniguruma/Rust engines Hugging Face uses).
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where);
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();
  // Byte ranges [begin, end) of successive non-overlapping matches in `text`.
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& text) const;

 private:
  pcre2_code_8* code_ = nullptr;
};

enum class Normalization { NFC, NFD, NFKC, NFKD };

enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizerStep {
  std::unique_ptr<Regex> regex;  // null: only add_prefix_space applies
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;
};

struct Merge {
  int rank;
  int id;  // the merged token
};

struct Tokenizer::Impl {
  std::string source;
  std::string family = "bpe";

  std::vector<std::string> id_bytes;              // [vocab_size] raw bytes of each token
  std::vector<std::string> id_string;             // [vocab_size] vocabulary string or content
  std::vector<char> id_special;                   // [vocab_size] 1 for special added tokens
  std::unordered_map<std::string, int> bytes_id;  // BPE vocabulary: raw bytes -> id
  std::array<int, 256> byte_id{};                 // the token of each single byte
  std::unordered_map<uint64_t, Merge> merges;     // (left id << 32 | right id) -> merge
  bool ignore_merges = false;
  int base_vocab = 0;

  std::vector<AddedToken> added;
  std::vector<Normalization> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::vector<int> prefix_ids, suffix_ids;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int>> cache;  // pre-token bytes -> ids
};

// The byte-level alphabet: the code point standing for each byte, and back (-1: not a byte).
const std::array<uint32_t, 256>& byte_to_codepoint();
int codepoint_to_byte(uint32_t cp);
// Decodes a byte-level vocabulary string into raw bytes; false if a character is not byte-level.
bool byte_level_to_bytes(const std::string& s, std::string* out);
// Appends `cp` to `out` as UTF-8.
void append_utf8(uint32_t cp, std::string* out);
// Replaces every ill-formed UTF-8 subsequence by U+FFFD (maximal subparts, as Rust and WHATWG).
std::string utf8_lossy(const std::string& bytes);
bool valid_utf8(const std::string& s);

// The pieces the pre-tokenizer cuts a (normalised) segment into, in order.
std::vector<std::string> pre_tokenize(const Tokenizer::Impl& t, const std::string& segment);
std::string normalize(const Tokenizer::Impl& t, const std::string& segment);

// Byte-level BPE of one pre-token (no cache): Hugging Face's merge order, O(n log n) in its length.
std::vector<int> bpe_word(const Tokenizer::Impl& t, const std::string& word);

std::unique_ptr<Tokenizer::Impl> load_impl(const std::string& path);

}  // namespace teap::tokenizer
