// Capture of a model's internals during one evaluation (session.trace()), through llama.cpp's
// graph callback (cb_eval): attention probabilities ("kq_soft_max-<layer>") and the residual
// stream after each layer ("l_out-<layer>"). Only the tensors asked for are copied. The logit
// lens (final norm + unembedding of each layer's residual) is computed here too.
#pragma once

#include <ggml-backend.h>
#include <llama.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ModelTensors.h"

namespace llama_napi {

struct TraceRequest {
  bool attention = true;
  bool hidden = true;
  int32_t lensTopK = 0;       // 0: no logit lens
  std::vector<int32_t> layers;  // empty: every layer
};

struct TraceResult {
  std::vector<llama_token> tokens;  // every token of the session after the trace
  size_t firstNew = 0;              // index in `tokens` of the first evaluated token
  int32_t nHead = 0, nHeadKv = 0, nEmbd = 0, nLayer = 0;
  std::vector<int32_t> layers;
  // attention[l]: nHead × nNew × nKv (row = query token, column = key position 0..nKv-1)
  std::vector<std::vector<float>> attention;
  // hidden[l]: nNew × nEmbd, the residual stream after layer layers[l]
  std::vector<std::vector<float>> hidden;
  // lens[l]: nNew × topK pairs (token, probability)
  std::vector<std::vector<std::pair<llama_token, float>>> lens;
  std::vector<float> logits;  // next-token logits after the last token
  struct MediaSpan {
    size_t start = 0, length = 0;
    bool audio = false;
  };
  std::vector<MediaSpan> media;  // the media chunks among `tokens` (their positions hold -1)
  // Encoder-decoder models (`tokens` are the decoder's): the encoder's input, and per captured
  // layer the encoder's self-attention (nHead × nEnc × nEnc, encoderLayers[l]) and the decoder's
  // cross-attention (nHead × nNew × nEnc, layers[l]) over the encoder's positions.
  std::vector<llama_token> encoderTokens;
  std::vector<int32_t> encoderLayers;
  std::vector<std::vector<float>> encoderAttention;
  std::vector<std::vector<float>> crossAttention;
};

// The cb_eval user data of a trace context. Inactive (returns false for every tensor) outside
// a trace, so the callback costs one name check per graph node.
class TraceCapture {
 public:
  static bool Callback(ggml_tensor* t, bool ask, void* userData);

  // Captures rows of tokens [firstNew, nKvTotal) of an evaluation of tokens [0, nKvTotal) into
  // a fresh cache, where cell i holds position i. An encoder-decoder model's decoder graph holds
  // two attention maps per layer, self-attention first, then cross-attention (src/models/t5.cpp).
  void Begin(const TraceRequest& req, TraceResult* out, size_t firstNew, size_t nKvTotal);
  // Captures the encoder's self-attention while it encodes out->encoderTokens (one batch).
  void BeginEncoder(const TraceRequest& req, TraceResult* out);
  // Before each evaluation (graph): the index of its first token.
  void SetChunk(size_t firstToken) {
    chunkStart_ = firstToken;
    selfDone_.assign(selfDone_.size(), false);
  }
  void End() { out_ = nullptr; }

 private:
  enum class Kind { Attention, Hidden };
  int32_t SlotOf(int32_t layer) const;  // index in the pass's layer list, or -1
  bool Wanted(const ggml_tensor* t, Kind* kind, int32_t* slot) const;
  void Copy(ggml_tensor* t, Kind kind, int32_t slot);
  // Rows [firstQuery, firstQuery + nQuery) of a [nKeys, nQuery, nHead] map of the tensor `t`
  // (queries chunkStart_.. of this evaluation) into dst (nHead × nQuery × nKeys).
  void CopyAttention(const ggml_tensor* t, std::vector<float>& dst, size_t firstQuery, size_t nQuery, size_t nKeys);

  TraceResult* out_ = nullptr;
  bool encoderPass_ = false;
  std::vector<bool> selfDone_;  // per slot: this evaluation's self-attention map was copied
  TraceRequest req_;
  size_t firstNew_ = 0;
  size_t nNew_ = 0;
  size_t nKvTotal_ = 0;
  size_t chunkStart_ = 0;
  std::vector<float> scratch_;
};

// Applies the final norm and the unembedding to every captured residual row; keeps the top
// `topK` tokens with their probabilities (softmax over the whole vocabulary).
bool ComputeLogitLens(const OutputHead& head, TraceResult& result, int32_t topK, int32_t threads, std::string& error);

}  // namespace llama_napi
