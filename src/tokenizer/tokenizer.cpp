// Encoding and decoding: added-token split, normalisation, pre-tokenizer, byte-level BPE merges,
// post-processor; the order of Hugging Face's `tokenizers`.
#include <algorithm>
#include <cctype>
#include <climits>

#include "tokenizer/impl.hpp"
#include "util/error.hpp"

namespace teap::tokenizer {
namespace {

bool is_word_byte(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }
bool is_space_byte(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

struct Segment {
  std::string text;  // plain text to tokenize, when id < 0
  int id = -1;       // an added token
};

// Cuts `text` at the added tokens (leftmost, then longest match), honouring lstrip, rstrip and
// single_word.
std::vector<Segment> split_added(const Tokenizer::Impl& t, const std::string& text) {
  std::vector<Segment> out;
  size_t plain_begin = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* best = nullptr;
    for (const auto& a : t.added) {
      if (a.content.size() > text.size() - i || (best && a.content.size() <= best->content.size())) continue;
      if (text.compare(i, a.content.size(), a.content) != 0) continue;
      if (a.single_word) {
        const size_t e = i + a.content.size();
        if ((i > 0 && is_word_byte(text[i - 1])) || (e < text.size() && is_word_byte(text[e]))) continue;
      }
      best = &a;
    }
    if (!best) {
      ++i;
      continue;
    }
    size_t b = i, e = i + best->content.size();
    if (best->lstrip)
      while (b > plain_begin && is_space_byte(text[b - 1])) --b;
    if (best->rstrip)
      while (e < text.size() && is_space_byte(text[e])) ++e;
    if (b > plain_begin) out.push_back({text.substr(plain_begin, b - plain_begin), -1});
    out.push_back({"", best->id});
    plain_begin = i = e;
  }
  if (plain_begin < text.size()) out.push_back({text.substr(plain_begin), -1});
  return out;
}

uint64_t pair_key(int a, int b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

// Byte-level BPE of one pre-token: start from single bytes, apply the lowest-ranked merge
// (leftmost on ties) until none applies.
std::vector<int> bpe(const Tokenizer::Impl& t, const std::string& word) {
  if (t.ignore_merges) {
    auto it = t.bytes_id.find(word);
    if (it != t.bytes_id.end()) return {it->second};
  }
  std::vector<int> syms;
  syms.reserve(word.size());
  for (unsigned char c : word) syms.push_back(t.byte_id[c]);
  while (syms.size() > 1) {
    int best_rank = INT_MAX, best_pos = -1, best_id = -1;
    for (size_t k = 0; k + 1 < syms.size(); ++k) {
      auto it = t.merges.find(pair_key(syms[k], syms[k + 1]));
      if (it != t.merges.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        best_pos = static_cast<int>(k);
        best_id = it->second.id;
      }
    }
    if (best_pos < 0) break;
    syms[best_pos] = best_id;
    syms.erase(syms.begin() + best_pos + 1);
  }
  return syms;
}

std::vector<int> bpe_cached(const Tokenizer::Impl& t, const std::string& word) {
  std::lock_guard<std::mutex> lock(t.cache_mutex);
  auto it = t.cache.find(word);
  if (it != t.cache.end()) return it->second;
  if (t.cache.size() > 100000) t.cache.clear();
  return t.cache.emplace(word, bpe(t, word)).first->second;
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) { return Tokenizer(load_impl(path)); }

std::vector<int> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  if (!valid_utf8(text)) throw InputError("text to tokenize is not valid UTF-8");
  std::vector<int> ids;
  if (add_special_tokens) ids = impl_->prefix_ids;
  for (const Segment& seg : split_added(*impl_, text)) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    for (const std::string& piece : pre_tokenize(*impl_, normalize(*impl_, seg.text))) {
      const std::vector<int> word = bpe_cached(*impl_, piece);
      ids.insert(ids.end(), word.begin(), word.end());
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), impl_->suffix_ids.begin(), impl_->suffix_ids.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int id : ids) {
    if (id < 0 || id >= vocab_size())
      throw InputError("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                       std::to_string(vocab_size()) + ") of " + impl_->source);
    if (skip_special_tokens && impl_->id_special[id]) continue;
    bytes += impl_->id_bytes[id];
  }
  return utf8_lossy(bytes);
}

std::string Tokenizer::token(int id) const {
  if (id < 0 || id >= vocab_size()) throw InputError("token id " + std::to_string(id) + " is outside the vocabulary");
  return impl_->id_string[id];
}

const std::string& Tokenizer::token_bytes(int id) const {
  if (id < 0 || id >= vocab_size()) throw InputError("token id " + std::to_string(id) + " is outside the vocabulary");
  return impl_->id_bytes[id];
}

std::optional<int> Tokenizer::token_id(const std::string& vocab_string) const {
  for (const auto& a : impl_->added)
    if (a.content == vocab_string) return a.id;
  std::string bytes;
  if (byte_level_to_bytes(vocab_string, &bytes)) {
    auto it = impl_->bytes_id.find(bytes);
    if (it != impl_->bytes_id.end()) return it->second;
  }
  return std::nullopt;
}

int Tokenizer::vocab_size() const { return static_cast<int>(impl_->id_bytes.size()); }
int Tokenizer::base_vocab_size() const { return impl_->base_vocab; }
const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
const std::vector<int>& Tokenizer::prefix_ids() const { return impl_->prefix_ids; }
const std::string& Tokenizer::source() const { return impl_->source; }
const std::string& Tokenizer::family() const { return impl_->family; }

}  // namespace teap::tokenizer
