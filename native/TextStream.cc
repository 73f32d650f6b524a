#include "TextStream.h"

#include <algorithm>

#include "llama_compat.h"

namespace llama_napi {

size_t TextStream::CompleteUtf8Prefix(const std::string& bytes) {
  const size_t n = bytes.size();
  // Look at most 3 bytes back for the lead byte of a possibly incomplete final character.
  for (size_t back = 1; back <= 3 && back <= n; back++) {
    const auto c = static_cast<unsigned char>(bytes[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t need = 0;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    // An incomplete but still valid start: hold it back. Anything else (ASCII, an invalid
    // byte, or a complete character) ends the text here.
    return need > back ? n - back : n;
  }
  return n;
}

bool TextStream::IsPreserved(llama_token token) const {
  for (llama_token t : preserved_) {
    if (t == token) return true;
  }
  return false;
}

std::string TextStream::Push(llama_token token) {
  if (stopped_) return "";
  pendingBytes_ += compat::TokenPiece(vocab_, token, IsPreserved(token));
  const size_t complete = CompleteUtf8Prefix(pendingBytes_);
  held_.append(pendingBytes_, 0, complete);
  pendingBytes_.erase(0, complete);
  return ReleaseChecked();
}

std::string TextStream::ReleaseChecked() {
  if (stops_.empty()) return std::move(held_);
  // The earliest complete stop string ends the generation.
  size_t first = std::string::npos;
  for (const auto& stop : stops_) {
    size_t at = held_.find(stop);
    if (at != std::string::npos) first = std::min(first, at);
  }
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    pendingBytes_.clear();
    return out;
  }
  // Hold back the longest tail that is a prefix of some stop string.
  size_t keep = 0;
  for (const auto& stop : stops_) {
    const size_t maxLen = std::min(stop.size() - 1, held_.size());
    for (size_t len = maxLen; len > keep; len--) {
      if (held_.compare(held_.size() - len, len, stop, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string TextStream::Flush() {
  if (stopped_) return "";
  std::string out = std::move(held_) + std::move(pendingBytes_);
  held_.clear();
  pendingBytes_.clear();
  return out;
}

}  // namespace llama_napi
