// Turns generated tokens into text that is safe to emit as it streams:
//  - a multi-byte UTF-8 character split across tokens is held back until it is complete;
//  - text that could be the start of a stop string is held back until it is known not to be;
//  - when a stop string appears, the text before it is released and the stop string is not.
#pragma once

#include <llama.h>

#include <string>
#include <vector>

namespace llama_napi {

class TextStream {
 public:
  TextStream(const llama_vocab* vocab, std::vector<std::string> stops) : vocab_(vocab), stops_(std::move(stops)) {}

  // Adds one token; returns the text that can be emitted now (possibly empty).
  std::string Push(llama_token token);
  // Releases everything still held (at the end of generation). Incomplete UTF-8 is released as is.
  std::string Flush();
  bool Stopped() const { return stopped_; }
  // The bytes of an incomplete UTF-8 character held back so far.
  const std::string& PendingBytes() const { return pendingBytes_; }

  // Special tokens whose text is written out (by default a control token writes nothing).
  void SetPreserved(std::vector<llama_token> tokens) { preserved_ = std::move(tokens); }
  bool IsPreserved(llama_token token) const;

  // Length of the complete-UTF-8 prefix of `bytes` (an incomplete trailing sequence is excluded).
  static size_t CompleteUtf8Prefix(const std::string& bytes);

 private:
  std::string ReleaseChecked();

  const llama_vocab* vocab_;
  std::vector<std::string> stops_;
  std::vector<llama_token> preserved_;
  std::string pendingBytes_;  // bytes of an incomplete UTF-8 character
  std::string held_;          // complete text held for stop-string matching
  bool stopped_ = false;
};

}  // namespace llama_napi
