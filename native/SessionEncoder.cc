// Sessions of an encoder-decoder model (T5): prompt(input) sets the encoder's input and starts the
// decoder from the model's decoder start token; prompt(tokens, {append: true}) adds decoder
// tokens (the history, `tokens`, is the decoder's). The encoder runs on the engine thread at the
// next decode (native/EngineEncoder.cc).
#include <algorithm>

#include "Model.h"
#include "Session.h"

namespace llama_napi {

size_t SessionWrap::PrepareEncoderPrompt(Napi::Env env, const std::vector<int32_t>& input, bool append) {
  SeqState& seq = *seq_;
  const size_t capacity = engine_->capacity();
  if (append) {
    if (seq.encoderInput.empty()) {
      Throw(env, "ERR_STATE", "This is an encoder-decoder model: prompt the session with the encoder's input first "
                              "(append: false); tokens appended after that go to the decoder");
    }
    if (seq.tokens.size() + input.size() > capacity) {
      Throw(env, "ERR_CONTEXT_FULL", "The decoder would hold " + std::to_string(seq.tokens.size() + input.size()) +
                                         " tokens but a session of this context holds at most " + std::to_string(capacity) +
                                         ": rewind the session, or create the context with a larger contextSize");
    }
    if (input.empty() && seq.tokens.empty()) Throw(env, "ERR_INVALID_ARGUMENT", "The prompt is empty and the decoder holds no tokens");
    seq.tokens.insert(seq.tokens.end(), input.begin(), input.end());
    return 0;
  }
  if (input.empty()) Throw(env, "ERR_INVALID_ARGUMENT", "The prompt is empty: an encoder-decoder model needs the encoder's input");
  if (input.size() > capacity) {
    Throw(env, "ERR_CONTEXT_FULL", "The encoder's input has " + std::to_string(input.size()) +
                                       " tokens but a session of this context holds at most " + std::to_string(capacity) +
                                       ". Shorten the input, or create the context with a larger contextSize.");
  }
  size_t encoded = 0;
  if (!std::equal(input.begin(), input.end(), seq.encoderInput.begin(), seq.encoderInput.end())) {
    seq.encoderInput.assign(input.begin(), input.end());
    seq.encoderVersion = engine_->NextEncoderVersion();
    encoded = input.size();
    // The decoder's cache was computed against the previous input's encoder output.
    if (seq.nKv > 0) {
      seq.nKv = 0;
      seq.needTrim = true;
    }
  }
  // The decoder starts over from its start token; for the same input that token stays cached.
  const llama_token start = DecoderStartToken(engine_->model()->model.get());
  const bool same = seq.tokens.size() == 1 && seq.tokens[0] == start;
  const size_t keep = seq.nKv > 0 && !seq.tokens.empty() && seq.tokens[0] == start ? 1 : 0;
  if (seq.nKv > keep) {
    seq.nKv = keep;
    seq.needTrim = true;
  }
  if (!same || encoded > 0) seq.logitsValid = false;
  seq.tokens.assign(1, start);
  return encoded;
}

Napi::Value SessionWrap::EncoderTokens(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  return ToInt32Array(env, seq_->encoderInput.data(), seq_->encoderInput.size());
}

}  // namespace llama_napi
