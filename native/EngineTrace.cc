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

Failure Engine::EvalNow(SeqState& seq) {
  compat::Batch& batch = *batch_;
  SyncSeq(seq);
  while (seq.nKv < seq.tokens.size()) {
    batch.Clear();
    const size_t n = std::min<size_t>(nBatch_, seq.tokens.size() - seq.nKv);
    for (size_t k = 0; k < n; k++) {
      const size_t pos = seq.nKv + k;
      batch.Add(seq.tokens[pos], static_cast<llama_pos>(pos), seq.id, pos + 1 == seq.tokens.size());
    }
    const int32_t ret = llama_decode(ctx_.get(), batch.Get());
    stats_.decodeCalls++;
    stats_.tokensDecoded += n;
    if (ret != 0) {
      seq.tokens.resize(seq.nKv);
      seq.needTrim = true;
      return {"ERR_DECODE", "llama_decode failed with code " + std::to_string(ret)};
    }
    seq.nKv += n;
    seq.nDecoded += n;
  }
  std::memcpy(seq.logits, llama_get_logits_ith(ctx_.get(), -1), sizeof(float) * static_cast<size_t>(model_->nVocab));
  seq.logitsValid = true;
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
  if (!traceCtx_) {
    llama_context_params p = params_;
    p.n_ctx = capacity_;
    p.n_seq_max = 1;
    p.n_batch = p.n_ubatch = kTraceBatch;
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
  out.nLayer = llama_model_n_layer(model);
  out.nHead = llama_model_n_head(model);
  out.nHeadKv = llama_model_n_head_kv(model);
  out.nEmbd = llama_model_n_embd(model);
  out.layers = req.layers;
  if (out.layers.empty()) {
    for (int32_t l = 0; l < out.nLayer; l++) out.layers.push_back(l);
  }
  traceCapture_.Begin(req, &out, firstNew, all.size());
  compat::Batch batch(static_cast<int32_t>(kTraceBatch));
  for (size_t start = 0; start < all.size(); start += kTraceBatch) {
    batch.Clear();
    const size_t n = std::min<size_t>(kTraceBatch, all.size() - start);
    // Every row is an output, so that the last layer keeps every row of its residual.
    for (size_t k = 0; k < n; k++) batch.Add(all[start + k], static_cast<llama_pos>(start + k), 0, true);
    traceCapture_.SetChunk(start);
    const int32_t ret = llama_decode(tctx, batch.Get());
    if (ret != 0) {
      traceCapture_.End();
      return {"ERR_DECODE", "llama_decode failed with code " + std::to_string(ret) + " while tracing"};
    }
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
