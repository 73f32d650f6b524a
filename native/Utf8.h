// UTF-8 validation for token byte streams.
#pragma once

#include <cstddef>
#include <string_view>

namespace llama_napi {

// Whether `bytes` is valid UTF-8 up to its end, where a character may be incomplete (but must
// still be able to become valid: no overlong forms, surrogates or code points past U+10FFFF).
inline bool IsValidUtf8Prefix(std::string_view bytes) {
  size_t i = 0;
  const size_t n = bytes.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return false;
    for (size_t k = 1; k < len; k++) {
      if (i + k >= n) return true;  // incomplete at the end: still a valid prefix
      const auto b = static_cast<unsigned char>(bytes[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return false;
    }
    i += len;
  }
  return true;
}

}  // namespace llama_napi
