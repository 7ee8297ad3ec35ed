// Normalisation (NFC and friends, through libunistring) and the regex pre-tokenizer (PCRE2).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <uninorm.h>

#include <cstdlib>

#include "tokenizer/impl.hpp"
#include "util/error.hpp"

namespace teap::tokenizer {

Regex::Regex(const std::string& pattern, const std::string& where) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &offset, nullptr);
  if (!code_) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail_input(where, "pre-tokenizer pattern does not compile at offset " + std::to_string(offset) +
                          ": " + reinterpret_cast<const char*>(msg));
  }
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // optional: falls back to the interpreter
}

Regex::Regex(Regex&& o) noexcept : code_(o.code_) { o.code_ = nullptr; }
Regex& Regex::operator=(Regex&& o) noexcept {
  std::swap(code_, o.code_);
  return *this;
}
Regex::~Regex() {
  if (code_) pcre2_code_free(code_);
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(const std::string& text) const {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(code_, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) break;  // no match (or a resource limit, which these patterns cannot reach)
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t b = ov[0], e = ov[1];
    if (e == b) {  // an empty match yields nothing; step over one whole character
      start = e + 1;
      while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
      continue;
    }
    out.emplace_back(b, e);
    start = e;
  }
  pcre2_match_data_free(md);
  return out;
}

std::string normalize(const Tokenizer::Impl& t, const std::string& segment) {
  std::string s = segment;
  for (Normalization n : t.normalizers) {
    uninorm_t form = n == Normalization::NFC    ? UNINORM_NFC
                     : n == Normalization::NFD  ? UNINORM_NFD
                     : n == Normalization::NFKC ? UNINORM_NFKC
                                                : UNINORM_NFKD;
    size_t len = 0;
    uint8_t* r = u8_normalize(form, reinterpret_cast<const uint8_t*>(s.data()), s.size(), nullptr, &len);
    if (!r) throw std::runtime_error("Unicode normalisation failed");
    s.assign(reinterpret_cast<const char*>(r), len);
    std::free(r);
  }
  return s;
}

namespace {

// One Split step over one piece, with Hugging Face's behaviours.
void split_piece(const PreTokenizerStep& step, const std::string& piece, std::vector<std::string>* out) {
  struct Part {
    size_t b, e;
    bool is_match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  for (auto [b, e] : step.regex->find_all(piece)) {
    if (b > prev) parts.push_back({prev, b, false});
    parts.push_back({b, e, true});
    prev = e;
  }
  if (prev < piece.size()) parts.push_back({prev, piece.size(), false});
  if (step.invert)
    for (auto& p : parts) p.is_match = !p.is_match;

  std::vector<std::string> pieces;
  auto sub = [&](const Part& p) { return piece.substr(p.b, p.e - p.b); };
  switch (step.behavior) {
    case SplitBehavior::Isolated:
      for (const auto& p : parts) pieces.push_back(sub(p));
      break;
    case SplitBehavior::Removed:
      for (const auto& p : parts)
        if (!p.is_match) pieces.push_back(sub(p));
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool prev_match = false;
      for (const auto& p : parts) {
        if (p.is_match && !pieces.empty() && !prev_match) pieces.back() += sub(p);
        else pieces.push_back(sub(p));
        prev_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool pending = false;  // the last piece was a match waiting for what follows it
      for (const auto& p : parts) {
        if (pending) pieces.back() += sub(p);
        else pieces.push_back(sub(p));
        pending = p.is_match;
      }
      break;
    }
    case SplitBehavior::Contiguous: {
      bool prev_match = false;
      for (const auto& p : parts) {
        if (p.is_match && prev_match) pieces.back() += sub(p);
        else pieces.push_back(sub(p));
        prev_match = p.is_match;
      }
      break;
    }
  }
  for (auto& p : pieces)
    if (!p.empty()) out->push_back(std::move(p));
}

}  // namespace

std::vector<std::string> pre_tokenize(const Tokenizer::Impl& t, const std::string& segment) {
  std::vector<std::string> pieces{segment};
  for (const auto& step : t.pre_tokenizer) {
    std::vector<std::string> next;
    for (auto& piece : pieces) {
      std::string p = piece;
      // Hugging Face's ByteLevel adds the space to every piece it is given that lacks one.
      if (step.add_prefix_space && !p.empty() && p[0] != ' ') p.insert(p.begin(), ' ');
      if (step.regex) split_piece(step, p, &next);
      else if (!p.empty()) next.push_back(std::move(p));
    }
    pieces = std::move(next);
  }
  return pieces;
}

}  // namespace teap::tokenizer
