// Encoder-decoder models (T5): the encoder runs over a session's input (SeqState::encoderInput)
// with llama_encode, which leaves its output in the context, where the decoder's cross-attention
// reads it at every llama_decode. A context holds one encoder output at a time (llama.cpp keeps
// the last encode's), so the engine decodes one such sequence per batch and encodes a sequence's
// input again when the context holds another's.
#include "Engine.h"

namespace llama_napi {

Failure Engine::Encode(llama_context* ctx, const std::vector<llama_token>& input, llama_seq_id id) {
  if (input.empty()) return {"ERR_STATE", "The session has no encoder input: prompt it first"};
  compat::Batch batch(static_cast<int32_t>(input.size()));
  // The encoder sees the whole input at once (positions from 0, every row an output).
  for (size_t i = 0; i < input.size(); i++) batch.Add(input[i], static_cast<llama_pos>(i), id, true);
  const int32_t ret = llama_encode(ctx, batch.Get());
  if (ret != 0) return {"ERR_DECODE", "llama_encode failed with code " + std::to_string(ret)};
  return {};
}

Failure Engine::EnsureEncoded(const SeqState& seq) {
  if (!encoderDecoder_) return {};
  if (encodedSeq_ == seq.id && encodedVersion_ == seq.encoderVersion) return {};
  encodedSeq_ = -1;
  if (Failure f = Encode(ctx_.get(), seq.encoderInput, seq.id); !f.ok()) return f;
  encodedSeq_ = seq.id;
  encodedVersion_ = seq.encoderVersion;
  return {};
}

}  // namespace llama_napi
