// Owns showing text taken from a file (names, keys, values) inside a one-line error message.
#pragma once

#include <string>

namespace teap::model {

// Control characters escaped as \xNN and the text cut after ~80 characters, so that a hostile or
// corrupt file cannot break the one-line message contract.
inline std::string printable(const std::string& s) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    if (out.size() > 80) return out + "...";
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace teap::model
