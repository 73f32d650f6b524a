// session.trace(): the session evaluates the new tokens as after prompt(..., {append: true}),
// and a separate capture context of the same model (flash attention off, F32 KV cache, graph
// callback on) evaluates the whole history again, from an empty cache, to record what happens
// inside. An empty cache keeps the mapping "cell i = position i" that the attention maps rely
// on, whatever the session's own cache went through (context shifts, a unified cache, other
// KV layouts), and the session's own context pays nothing for tracing.
#include <cstring>

#include "Engine.h"
#include "GraphCheck.h"

namespace llama_napi {
namespace {

constexpr uint32_t kTraceBatch = 64;  // every row outputs logits: keep the output buffer small

}  // namespace

Failure Engine::DecodeRun(SeqState& seq, size_t end) {
  compat::Batch& batch = *batch_;
  if (seq.nKv < end) {
    if (Failure f = EnsureEncoded(seq); !f.ok()) return f;
  }
  while (seq.nKv < end) {
    batch.Clear();
    const size_t n = std::min<size_t>(nBatch_, end - seq.nKv);
    for (size_t k = 0; k < n; k++) {
      const size_t pos = seq.nKv + k;
      batch.Add(seq.tokens[pos], static_cast<llama_pos>(pos), seq.id, pos + 1 == seq.tokens.size());
    }
    const int32_t ret = llama_decode(ctx_.get(), batch.Get());
    stats_.decodeCalls++;
    stats_.tokensDecoded += n;
    if (ret != 0) return {"ERR_DECODE", "llama_decode failed with code " + std::to_string(ret)};
    seq.nKv += n;
    seq.nDecoded += n;
  }
  return {};
}

Failure Engine::EvalNow(SeqState& seq) {
  SyncSeq(seq);
  if (Failure f = DecodeRun(seq, seq.tokens.size()); !f.ok()) {
    seq.tokens.resize(seq.nKv);
    seq.needTrim = true;
    return f;
  }
  std::memcpy(seq.logits, llama_get_logits_ith(ctx_.get(), -1), sizeof(float) * static_cast<size_t>(model_->nVocab));
  seq.logitsValid = true;
  return {};
}

// The capture pass over one media chunk: the projector's embeddings decoded as one batch (every
// row an output), with causal attention off where libmtmd turns it off for the chunk.
Failure Engine::TraceMedia(llama_context* tctx, const MediaChunk& media, size_t start) {
  std::shared_ptr<Projector> projector = model_->projector();
  if (!projector) return {"ERR_STATE", "The model's projector is gone"};
  const int32_t width = llama_model_n_embd_inp(model_->model.get());
  const size_t n = media.nTokens;
  std::vector<float> embd;
  bool nonCausal = false;
  {
    std::lock_guard<std::mutex> lk(projector->mu);
    if (mtmd_encode_chunk(projector->ctx.get(), media.chunk.get()) != 0) return {"ERR_DECODE", "The projector failed to encode a media chunk while tracing"};
    const float* out = mtmd_get_output_embd(projector->ctx.get());
    embd.assign(out, out + n * static_cast<size_t>(width));
    nonCausal = mtmd_decode_use_non_causal(projector->ctx.get(), media.chunk.get());
  }
  llama_batch batch = llama_batch_init(static_cast<int32_t>(n), width, 1);
  std::memcpy(batch.embd, embd.data(), embd.size() * sizeof(float));
  for (size_t k = 0; k < n; k++) {
    batch.pos[k] = static_cast<llama_pos>(start + k);
    batch.n_seq_id[k] = 1;
    batch.seq_id[k][0] = 0;
    batch.logits[k] = 1;
  }
  batch.n_tokens = static_cast<int32_t>(n);
  traceCapture_.SetChunk(start);
  if (nonCausal) llama_set_causal_attn(tctx, false);
  const int32_t ret = llama_decode(tctx, batch);
  if (nonCausal) llama_set_causal_attn(tctx, true);
  llama_batch_free(batch);
  if (ret != 0) return {"ERR_DECODE", "llama_decode failed with code " + std::to_string(ret) + " on a media chunk while tracing"};
  return {};
}

Failure Engine::RunTrace(SeqState& seq, const std::vector<llama_token>& input, const TraceRequest& req, TraceResult& out) {
  const size_t firstNew = seq.nKv;
  if (seq.tokens.size() + input.size() > capacity_) {
    return {"ERR_CONTEXT_FULL", "Tracing needs " + std::to_string(seq.tokens.size() + input.size()) +
                                    " tokens but a session of this context holds at most " + std::to_string(capacity_)};
  }
  if (firstNew == seq.tokens.size() && input.empty()) return {"ERR_INVALID_ARGUMENT", "Nothing to trace: pass some text or tokens"};
  seq.tokens.insert(seq.tokens.end(), input.begin(), input.end());
  Failure evaluated = EvalNow(seq);
  if (!evaluated.ok()) return evaluated;

  const llama_model* model = model_->model.get();
  // A media chunk is evaluated in one batch when its attention is not causal (libmtmd's rule).
  uint32_t traceBatch = kTraceBatch;
  for (const auto& [at, chunk] : seq.media) traceBatch = std::max<uint32_t>(traceBatch, static_cast<uint32_t>(chunk->nTokens));
  // So is an encoder-decoder model's encoder input.
  traceBatch = std::max<uint32_t>(traceBatch, static_cast<uint32_t>(seq.encoderInput.size()));
  if (traceCtx_ && traceBatch > traceBatch_) traceCtx_.reset();
  if (!traceCtx_) {
    llama_context_params p = params_;
    p.n_ctx = capacity_;
    p.n_seq_max = 1;
    p.n_batch = p.n_ubatch = traceBatch;
    traceBatch_ = traceBatch;
    p.n_outputs_max = 0;
    p.n_outputs_max_per_seq = 0;
    p.kv_unified = false;
    p.type_k = p.type_v = GGML_TYPE_F32;
    p.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    p.cb_eval = &TraceCapture::Callback;
    p.cb_eval_user_data = &traceCapture_;
    traceCtx_.reset(llama_init_from_model(const_cast<llama_model*>(model), p));
    if (!traceCtx_) return {"ERR_CONTEXT_CREATE", "Could not create the capture context for trace()"};
    // Its graph differs from the context's (flash attention off, f32 cache): checked too.
    if (const std::string problem = UncomputableNode(traceCtx_.get()); !problem.empty()) {
      traceCtx_.reset();
      return {"ERR_UNSUPPORTED", "trace() cannot run this model: " + problem};
    }
    if (pool_->get() != nullptr) llama_attach_threadpool(traceCtx_.get(), pool_->get(), poolBatch_ ? poolBatch_->get() : pool_->get());
  }
  llama_context* tctx = traceCtx_.get();
  llama_memory_clear(compat::Memory(tctx), true);

  const std::vector<llama_token>& all = seq.tokens;
  out.tokens = all;
  out.firstNew = firstNew;
  for (const auto& [at, chunk] : seq.media) out.media.push_back({at, chunk->nTokens, chunk->audio});
  // An encoder-decoder model's `layers` are the decoder's, and the encoder's layers are captured
  // as far as they exist.
  out.nLayer = DecoderLayers(model);
  out.nHead = llama_model_n_head(model);
  out.nHeadKv = llama_model_n_head_kv(model);
  out.nEmbd = llama_model_n_embd(model);
  auto pick = [&req](int32_t n, std::vector<int32_t>& into) {
    for (int32_t l = 0; l < n && req.layers.empty(); l++) into.push_back(l);
    for (int32_t l : req.layers) {
      if (l < n) into.push_back(l);
    }
  };
  pick(out.nLayer, out.layers);
  if (encoderDecoder_) {
    pick(llama_model_n_layer(model), out.encoderLayers);
    out.encoderTokens = seq.encoderInput;
    traceCapture_.BeginEncoder(req, &out);
    Failure encoded = Encode(tctx, seq.encoderInput, 0);
    traceCapture_.End();
    if (!encoded.ok()) return encoded;
  }
  traceCapture_.Begin(req, &out, firstNew, all.size());
  compat::Batch batch(static_cast<int32_t>(kTraceBatch));
  for (size_t start = 0; start < all.size();) {
    auto media = seq.media.find(start);
    if (media != seq.media.end()) {
      if (Failure f = TraceMedia(tctx, *media->second, start); !f.ok()) {
        traceCapture_.End();
        return f;
      }
      start += media->second->nTokens;
      continue;
    }
    auto next = seq.media.upper_bound(start);
    const size_t end = next == seq.media.end() ? all.size() : next->first;
    batch.Clear();
    const size_t n = std::min<size_t>(kTraceBatch, end - start);
    // Every row is an output, so that the last layer keeps every row of its residual.
    for (size_t k = 0; k < n; k++) batch.Add(all[start + k], static_cast<llama_pos>(start + k), 0, true);
    traceCapture_.SetChunk(start);
    const int32_t ret = llama_decode(tctx, batch.Get());
    if (ret != 0) {
      traceCapture_.End();
      return {"ERR_DECODE", "llama_decode failed with code " + std::to_string(ret) + " while tracing"};
    }
    start += n;
  }
  traceCapture_.End();
  const float* last = llama_get_logits_ith(tctx, -1);
  out.logits.assign(last, last + model_->nVocab);

  if (req.lensTopK > 0) {
    std::string error;
    const OutputHead* head = model_->tensors->Head(error);
    if (head == nullptr || !ComputeLogitLens(*head, out, req.lensTopK, params_.n_threads, error)) {
      return {"ERR_UNSUPPORTED", "The logit lens is not available for this model: " + error};
    }
  }
  if (!req.hidden) out.hidden.clear();
  return {};
}

}  // namespace llama_napi
