// GPT-2's byte-level alphabet and the UTF-8 helpers that go with it.
#include <stdexcept>

#include "tokenizer/impl.hpp"

namespace teap::tokenizer {

const std::array<uint32_t, 256>& byte_to_codepoint() {
  // Printable Latin-1 bytes stand for themselves; the others are moved to 256+ so that every
  // vocabulary string is printable. This is GPT-2's `bytes_to_unicode`.
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[b] = printable ? b : next++;
    }
    return t;
  }();
  return table;
}

int codepoint_to_byte(uint32_t cp) {
  static const std::array<int, 512> back = [] {
    std::array<int, 512> r{};
    r.fill(-1);
    const auto& fwd = byte_to_codepoint();
    for (int b = 0; b < 256; ++b) r[fwd[b]] = b;
    return r;
  }();
  return cp < back.size() ? back[cp] : -1;
}

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// Length of the well-formed UTF-8 sequence at s[i], or 0 with *bad set to the length of the
// maximal ill-formed prefix (at least 1), following Unicode's table of well-formed sequences.
size_t utf8_step(const std::string& s, size_t i, uint32_t* cp, size_t* bad) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  uint32_t v = c & (0x3F >> need);
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= s.size()) {
      *bad = k;
      return 0;
    }
    const unsigned char x = b(i + k);
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (x < l || x > h) {
      *bad = k;
      return 0;
    }
    v = (v << 6) | (x & 0x3F);
  }
  *cp = v;
  return need + 1;
}

}  // namespace

std::string utf8_lossy(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    uint32_t cp;
    size_t bad = 0;
    const size_t n = utf8_step(bytes, i, &cp, &bad);
    if (n) {
      out.append(bytes, i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += bad;
    }
  }
  return out;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp;
    size_t bad = 0;
    const size_t n = utf8_step(s, i, &cp, &bad);
    if (!n) return false;
    i += n;
  }
  return true;
}

bool byte_level_to_bytes(const std::string& s, std::string* out) {
  out->clear();
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp;
    size_t bad = 0;
    const size_t n = utf8_step(s, i, &cp, &bad);
    if (!n) return false;
    const int byte = codepoint_to_byte(cp);
    if (byte < 0) return false;
    out->push_back(static_cast<char>(byte));
    i += n;
  }
  return true;
}

std::string bytes_to_unicode(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) append_utf8(byte_to_codepoint()[c], &out);
  return out;
}

}  // namespace teap::tokenizer
