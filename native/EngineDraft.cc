// Speculative decoding with a draft model: a smaller (or more quantized) model that shares the
// target's vocabulary predicts the next few tokens greedily, and the engine verifies them as it
// verifies n-gram lookup's drafts (native/EngineLookup.cc): decoded in the same batch as the next
// token, then sampled position by position with the target's own sampler, kept while the samples
// agree. The output is therefore the target's, token for token, whatever the draft proposes.
//
// The draft model runs in a context of its own, made at first use with the target context's
// settings (sequences, size, batch, threads, cache types) and its thread pools. Its cache mirrors
// each sequence's history: before drafting, the tokens that differ from what it holds (the
// draft's rejected tail, a rewind, a forked or loaded history) are removed and the new ones
// decoded in batches. So a long prompt is read by the draft model once, at the first draft, and
// nothing else keeps the two caches in step. A history with images or audio is not drafted for.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "Engine.h"
#include "GraphCheck.h"
#include "log.h"

namespace llama_napi {

std::string DraftVocabMismatch(const llama_vocab* t, const llama_vocab* d) {
  if (llama_vocab_type(t) != llama_vocab_type(d)) return "its tokenizer type differs from the target's";
  if (llama_vocab_get_add_bos(t) != llama_vocab_get_add_bos(d) ||
      (llama_vocab_get_add_bos(t) && llama_vocab_bos(t) != llama_vocab_bos(d))) {
    return "its BOS token differs from the target's";
  }
  if (llama_vocab_get_add_eos(t) != llama_vocab_get_add_eos(d) ||
      (llama_vocab_get_add_eos(t) && llama_vocab_eos(t) != llama_vocab_eos(d))) {
    return "its EOS token differs from the target's";
  }
  const int32_t nt = llama_vocab_n_tokens(t);
  const int32_t nd = llama_vocab_n_tokens(d);
  // llama.cpp's limits: sizes within 128 tokens, the same texts from token 5 on (the first few
  // are special tokens that converters number differently).
  if (std::abs(nt - nd) > 128) {
    return "it has " + std::to_string(nd) + " tokens and the target " + std::to_string(nt);
  }
  for (int32_t i = 5; i < std::min(nt, nd); i++) {
    if (std::strcmp(llama_vocab_get_text(t, i), llama_vocab_get_text(d, i)) != 0) {
      return "token " + std::to_string(i) + " is \"" + llama_vocab_get_text(d, i) + "\" there and \"" +
             llama_vocab_get_text(t, i) + "\" in the target";
    }
  }
  return "";
}

Engine::DraftContext* Engine::DraftContextFor(GenJob& gen) {
  for (auto& d : drafts_) {
    if (d->model == gen.draftModel) return d.get();
  }
  // A new draft model: the context keeps two draft contexts at most, dropping first those of
  // draft models that no running generation uses.
  for (auto it = drafts_.begin(); it != drafts_.end() && drafts_.size() >= 2;) {
    const bool used = std::any_of(gens_.begin(), gens_.end(), [&](const std::shared_ptr<GenJob>& g) {
      return g->draftModel == (*it)->model && g->reason == FinishReason::None;
    });
    it = used ? it + 1 : drafts_.erase(it);
  }
  llama_model* model = gen.draftModel->model.get();
  Failure failure;
  auto d = std::make_unique<DraftContext>();
  d->model = gen.draftModel;
  const std::string arch = UnsupportedArchitecture(model, false);
  if (!arch.empty()) {
    failure = {"ERR_UNSUPPORTED", "The draft model " + gen.draftModel->path + " cannot run: " + arch};
  } else {
    llama_context_params p = params_;
    p.embeddings = false;
    p.cb_eval = nullptr;
    p.cb_eval_user_data = nullptr;
    LogCapture capture;
    d->ctx.reset(llama_init_from_model(model, p));
    if (!d->ctx) {
      failure = {"ERR_CONTEXT_CREATE", "Could not create the draft model's context (n_ctx=" + std::to_string(p.n_ctx) +
                                           "); llama.cpp said: " + capture.Text()};
    } else if (const std::string node = UncomputableNode(d->ctx.get()); !node.empty()) {
      d->ctx.reset();
      failure = {"ERR_UNSUPPORTED", "The draft model " + gen.draftModel->path + " cannot run: " + node};
    }
  }
  if (!failure.ok()) {
    FinishGen(gen, FinishReason::Error, failure);
    return nullptr;
  }
  llama_set_abort_callback(d->ctx.get(), &Engine::AbortCallback, this);
  if (!draftBatch_) draftBatch_ = std::make_unique<compat::Batch>(static_cast<int32_t>(llama_n_batch(d->ctx.get())));
  if (pool_->get() != nullptr) llama_attach_threadpool(d->ctx.get(), pool_->get(), poolBatch_ ? poolBatch_->get() : pool_->get());
  d->capacity = llama_n_ctx_seq(d->ctx.get());
  if (compat::HasLearnedPositions(model)) {
    d->capacity = std::min<uint32_t>(d->capacity, static_cast<uint32_t>(llama_model_n_ctx_train(model)));
  }
  d->cached.resize(llama_n_seq_max(d->ctx.get()));
  drafts_.push_back(std::move(d));
  return drafts_.back().get();
}

void Engine::DraftFromModel(GenJob& gen, size_t limit) {
  SeqState& seq = *gen.seq;
  DraftContext* d = DraftContextFor(gen);
  if (d == nullptr || !seq.media.empty() || static_cast<size_t>(seq.id) >= d->cached.size()) return;
  llama_context* dctx = d->ctx.get();
  std::vector<llama_token>& cached = d->cached[seq.id];
  const std::vector<llama_token>& h = seq.tokens;
  // The draft's positions: the history, then all but the last draft token.
  if (h.size() + limit > d->capacity) limit = d->capacity > h.size() ? d->capacity - h.size() : 0;
  if (limit == 0 || h.empty()) return;

  // What the draft cache holds of the history, less the last token, whose logits are needed.
  size_t keep = std::mismatch(cached.begin(), cached.end(), h.begin(), h.end()).first - cached.begin();
  keep = std::min(keep, h.size() - 1);
  if (keep < cached.size()) {
    if (!compat::SeqRemove(dctx, seq.id, static_cast<llama_pos>(keep), -1)) {
      compat::SeqRemove(dctx, seq.id, -1, -1);
      keep = 0;
    }
    cached.resize(keep);
  }
  compat::Batch& batch = *draftBatch_;
  auto decode = [&]() {
    const int32_t ret = llama_decode(dctx, batch.Get());
    if (ret == 0) return true;
    // Whatever reached the cache is unknown: the sequence starts over at the next draft.
    compat::SeqRemove(dctx, seq.id, -1, -1);
    cached.clear();
    return false;
  };
  while (cached.size() < h.size()) {
    batch.Clear();
    const size_t n = std::min<size_t>(h.size() - cached.size(), static_cast<size_t>(batch.Capacity()));
    for (size_t k = 0; k < n; k++) {
      const size_t pos = cached.size() + k;
      batch.Add(h[pos], static_cast<llama_pos>(pos), seq.id, pos + 1 == h.size());
    }
    if (!decode()) return;
    cached.insert(cached.end(), h.begin() + static_cast<std::ptrdiff_t>(cached.size()),
                  h.begin() + static_cast<std::ptrdiff_t>(cached.size() + n));
  }
  // Greedy drafting: the draft model's most likely token, while it is likely enough.
  const int32_t nVocab = std::min(llama_vocab_n_tokens(d->model->vocab), model_->nVocab);
  int32_t out = batch.Size() - 1;
  while (gen.draft.size() < limit) {
    const float* logits = llama_get_logits_ith(dctx, out);
    if (logits == nullptr) break;
    const llama_token best = static_cast<llama_token>(std::max_element(logits, logits + nVocab) - logits);
    if (gen.draftMinP > 0) {
      double sum = 0;
      for (int32_t i = 0; i < nVocab; i++) sum += std::exp(static_cast<double>(logits[i] - logits[best]));
      if (1.0 / sum < gen.draftMinP) break;
    }
    gen.draft.push_back(best);
    if (gen.draft.size() == limit) break;
    batch.Clear();
    out = batch.Add(best, static_cast<llama_pos>(cached.size()), seq.id, true);
    if (!decode()) return;
    cached.push_back(best);
  }
}

}  // namespace llama_napi
