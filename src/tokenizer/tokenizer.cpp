// Encoding and decoding: added-token split, normalisation, pre-tokenizer, byte-level BPE merges,
// post-processor; the order of Hugging Face's `tokenizers`.
#include <algorithm>
#include <array>
#include <cctype>
#include <climits>
#include <functional>
#include <queue>

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
  // Llama-3 has 256 added tokens: trying each at every byte of a long text costs more than BPE.
  std::array<bool, 256> starts{};
  for (const auto& a : t.added)
    if (!a.content.empty()) starts[static_cast<unsigned char>(a.content[0])] = true;
  while (i < text.size()) {
    if (!starts[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
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

}  // namespace

// Byte-level BPE of one pre-token: start from single bytes, apply the lowest-ranked merge
// (leftmost on ties) until none applies. Rescanning the word for the best pair after each merge is
// quadratic in its length (a 128 KB word took 26 s), so candidate pairs wait in a heap ordered by
// (rank, position) over a linked list of symbols, as in Hugging Face's `Word::merge_all`: a merge
// only creates the pairs with its two neighbours. Entries made stale by an earlier merge are
// recognised when popped and skipped, which leaves exactly the naive algorithm's order.
std::vector<int> bpe_word(const Tokenizer::Impl& t, const std::string& word) {
  if (t.ignore_merges) {
    auto it = t.bytes_id.find(word);
    if (it != t.bytes_id.end()) return {it->second};
  }
  const int n = static_cast<int>(word.size());
  std::vector<int> id(n), prev(n), next(n);
  for (int k = 0; k < n; ++k) {
    id[k] = t.byte_id[static_cast<unsigned char>(word[k])];
    prev[k] = k - 1;
    next[k] = k + 1 < n ? k + 1 : -1;
  }
  struct Candidate {
    int rank, pos, new_id;  // pos: index of the pair's left symbol, which keeps left-to-right order
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push_pair = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    auto it = t.merges.find(pair_key(id[left], id[next[left]]));
    if (it != t.merges.end()) heap.push({it->second.rank, left, it->second.id});
  };
  for (int k = 0; k + 1 < n; ++k) push_pair(k);
  std::vector<char> alive(n, 1);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int l = c.pos;
    if (!alive[l] || next[l] < 0) continue;
    const int r = next[l];
    // The pair at `l` may have changed since it was pushed (either symbol merged with another).
    auto it = t.merges.find(pair_key(id[l], id[r]));
    if (it == t.merges.end() || it->second.rank != c.rank || it->second.id != c.new_id) continue;
    id[l] = c.new_id;
    alive[r] = 0;
    next[l] = next[r];
    if (next[r] >= 0) prev[next[r]] = l;
    push_pair(prev[l]);
    push_pair(l);
  }
  std::vector<int> out;
  for (int k = n > 0 ? 0 : -1; k >= 0; k = next[k]) out.push_back(id[k]);
  return out;
}

namespace {

// Hugging Face does not cache words this long either: they are rare, and would let one input
// fill the cache with megabytes.
constexpr size_t kMaxCachedWord = 256;

std::vector<int> bpe_cached(const Tokenizer::Impl& t, const std::string& word) {
  if (word.size() > kMaxCachedWord) return bpe_word(t, word);
  {
    std::lock_guard<std::mutex> lock(t.cache_mutex);
    auto it = t.cache.find(word);
    if (it != t.cache.end()) return it->second;
  }
  std::vector<int> ids = bpe_word(t, word);
  std::lock_guard<std::mutex> lock(t.cache_mutex);
  if (t.cache.size() > 100000) t.cache.clear();
  t.cache.emplace(word, ids);
  return ids;
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
