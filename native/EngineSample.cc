// The per-token part of generation, on the engine thread: the optional JS logits processor,
// token selection, log-probabilities, context shift, stop conditions and handing the token to
// the output buffer. (Engine.cc holds the decode loop and the JS-side bookkeeping.)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>

#include "Engine.h"
#include "Utf8.h"

namespace llama_napi {
namespace {

// log-softmax of the raw logits at `chosen`, and the `topK` most likely tokens.
TokenLogprobs ComputeLogprobs(const float* logits, int32_t n, llama_token chosen, int32_t topK) {
  float max = -INFINITY;
  for (int32_t i = 0; i < n; i++) max = std::max(max, logits[i]);
  double sum = 0;
  for (int32_t i = 0; i < n; i++) sum += std::exp(static_cast<double>(logits[i]) - max);
  const double logZ = max + std::log(sum);
  TokenLogprobs out;
  out.chosen = static_cast<float>(logits[chosen] - logZ);
  if (topK > 0) {
    // A min-heap of the best topK seen so far.
    auto worse = [](const std::pair<llama_token, float>& a, const std::pair<llama_token, float>& b) { return a.second > b.second; };
    std::vector<std::pair<llama_token, float>> heap;
    heap.reserve(static_cast<size_t>(topK) + 1);
    for (int32_t i = 0; i < n; i++) {
      if (static_cast<int32_t>(heap.size()) < topK) {
        heap.emplace_back(i, logits[i]);
        std::push_heap(heap.begin(), heap.end(), worse);
      } else if (logits[i] > heap.front().second) {
        std::pop_heap(heap.begin(), heap.end(), worse);
        heap.back() = {i, logits[i]};
        std::push_heap(heap.begin(), heap.end(), worse);
      }
    }
    std::sort_heap(heap.begin(), heap.end(), worse);
    for (auto& [token, logit] : heap) out.top.emplace_back(token, static_cast<float>(logit - logZ));
  }
  return out;
}

}  // namespace

bool Engine::RunProcessor(GenJob& gen, const float* logits) {
  SeqState& seq = *gen.seq;
  std::memcpy(seq.logits, logits, sizeof(float) * static_cast<size_t>(model_->nVocab));
  {
    std::lock_guard<std::mutex> lk(mu_);
    gen.processorDone = false;
  }
  const uint64_t id = gen.id;
  Post([this, id](Napi::Env env) { CallProcessor(env, id); });
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return gen.processorDone || stopping_; });
  if (stopping_) return false;
  if (!gen.processorError.empty()) {
    lk.unlock();
    FinishGen(gen, FinishReason::Error, {"ERR_INVALID_ARGUMENT", "The logits processor threw: " + gen.processorError});
    return false;
  }
  return true;
}

llama_token Engine::SelectToken(GenJob& gen, const float* logits) {
  const int32_t n = model_->nVocab;
  Sampling& s = gen.sampling;
  auto& cur = gen.candidates;
  auto fill = [&] {
    for (int32_t i = 0; i < n; i++) cur[static_cast<size_t>(i)] = llama_token_data{i, logits[i], 0.0f};
    return llama_token_data_array{cur.data(), cur.size(), -1, false};
  };
  auto pick = [&](llama_token_data_array& arr) -> llama_token {
    llama_sampler_apply(s.chain.get(), &arr);
    if (arr.selected < 0 || static_cast<size_t>(arr.selected) >= arr.size) return LLAMA_TOKEN_NULL;
    return arr.data[arr.selected].id;
  };
  llama_token token = LLAMA_TOKEN_NULL;
  if (s.greedyOnly) {
    // Same result as the chain [greedy], without building the candidate array.
    token = 0;
    for (int32_t i = 1; i < n; i++) {
      if (logits[i] > logits[token]) token = i;
    }
  } else {
    llama_token_data_array arr = fill();
    token = pick(arr);
  }
  if (s.grammar && token != LLAMA_TOKEN_NULL) {
    // Does the grammar allow the token? If not, draw again with the grammar applied first.
    // llama.cpp's grammar engine accepts bytes that are not UTF-8 (such as F5..FF, which decode
    // past U+10FFFF), so constrained output also has to keep the text valid UTF-8.
    const std::string& pending = gen.text.PendingBytes();
    auto validUtf8 = [&](llama_token t) {
      return IsValidUtf8Prefix(pending + compat::TokenPiece(model_->vocab, t, false));
    };
    llama_token_data single{token, 1.0f, 0.0f};
    llama_token_data_array one{&single, 1, -1, false};
    llama_sampler_apply(s.grammar.get(), &one);
    if ((std::isinf(single.logit) && single.logit < 0) || !validUtf8(token)) {
      llama_token_data_array arr = fill();
      llama_sampler_apply(s.grammar.get(), &arr);
      for (size_t i = 0; i < arr.size; i++) {
        if (!std::isinf(arr.data[i].logit) && !validUtf8(arr.data[i].id)) arr.data[i].logit = -INFINITY;
      }
      token = pick(arr);
    }
    if (token != LLAMA_TOKEN_NULL) llama_sampler_accept(s.grammar.get(), token);
  }
  if (token != LLAMA_TOKEN_NULL && !s.greedyOnly) llama_sampler_accept(s.chain.get(), token);
  return token;
}

bool Engine::ShiftContext(GenJob& gen) {
  SeqState& seq = *gen.seq;
  const size_t keep = static_cast<size_t>(std::max(gen.shiftKeep, 0));
  if (gen.shiftKeep < 0 || learnedPositions_ || !compat::CanShift(ctx_.get()) || keep + 2 > seq.tokens.size() || !seq.media.empty()) {
    std::string why = learnedPositions_
                          ? " This model has learned absolute positions (like GPT-2), so its context cannot be shifted."
                      : !seq.media.empty() ? " A session holding images or audio is not shifted."
                      : gen.shiftKeep < 0  ? " Pass contextShift to drop old tokens instead."
                                           : "";
    FinishGen(gen, FinishReason::ContextFull,
              {"ERR_CONTEXT_FULL", "The session is full: it holds " + std::to_string(seq.tokens.size()) +
                                       " tokens, all its context has room for. Rewind or truncate the session, or "
                                       "create the context with a larger contextSize." + why});
    return false;
  }
  // Drop half of what follows the kept prefix, and move the rest back (as llama.cpp's tools do).
  SyncSeq(seq);
  const size_t discard = (seq.nKv - keep) / 2;
  compat::SeqRemove(ctx_.get(), seq.id, static_cast<llama_pos>(keep), static_cast<llama_pos>(keep + discard));
  compat::SeqShift(ctx_.get(), seq.id, static_cast<llama_pos>(keep + discard), -1, -static_cast<llama_pos>(discard));
  seq.tokens.erase(seq.tokens.begin() + static_cast<std::ptrdiff_t>(keep),
                   seq.tokens.begin() + static_cast<std::ptrdiff_t>(keep + discard));
  seq.nKv -= discard;
  stats_.contextShifts++;
  return true;
}

void Engine::Sample(GenJob& gen, const float* logits) {
  SeqState& seq = *gen.seq;
  if (seq.tokens.size() >= capacity_ && !ShiftContext(gen)) return;
  if (gen.hasProcessor) {
    if (!RunProcessor(gen, logits)) return;
  }
  const float* selectFrom = gen.hasProcessor ? seq.logits : logits;
  llama_token token = LLAMA_TOKEN_NULL;
  try {
    token = SelectToken(gen, selectFrom);
  } catch (const std::exception& e) {
    // llama.cpp's samplers throw from a few places (the grammar's accept on an empty stack, a
    // vocabulary lookup); on this thread an escaping exception would end the process.
    FinishGen(gen, FinishReason::Error, {"ERR_INTERNAL", std::string("llama.cpp's sampler failed: ") + e.what()});
    return;
  }
  if (token == LLAMA_TOKEN_NULL) {
    FinishGen(gen, FinishReason::Error, {"ERR_INTERNAL", "The sampler chain did not select a token"});
    return;
  }
  TokenLogprobs lp;
  if (gen.logprobs >= 0) lp = ComputeLogprobs(logits, model_->nVocab, token, gen.logprobs);
  seq.tokens.push_back(token);
  seq.logitsValid = false;
  gen.produced++;

  std::string text = gen.text.Push(token);
  FinishReason reason = FinishReason::None;
  if (gen.text.Stopped()) {
    reason = FinishReason::Stop;
  } else if (llama_vocab_is_eog(model_->vocab, token)) {
    reason = FinishReason::Eog;
  } else if (gen.produced >= gen.maxTokens) {
    reason = FinishReason::Length;
  }
  if (reason == FinishReason::Eog || reason == FinishReason::Length) text += gen.text.Flush();
  Emit(gen, token, std::move(text), gen.logprobs >= 0 ? &lp : nullptr, reason);
}

void Engine::Emit(GenJob& gen, llama_token token, std::string text, TokenLogprobs* logprobs, FinishReason reason) {
  bool post = false;
  {
    std::lock_guard<std::mutex> lk(gen.outMu);
    gen.outTokens.push_back(token);
    gen.outTexts.push_back(std::move(text));
    if (logprobs != nullptr) gen.outLogprobs.push_back(std::move(*logprobs));
    if (reason != FinishReason::None) gen.reason = reason;
    post = !gen.notifyPending;
    gen.notifyPending = true;
  }
  if (post) {
    const uint64_t id = gen.id;
    Post([this, id](Napi::Env env) { DrainGen(env, id); });
  }
}

void Engine::CallProcessor(Napi::Env env, uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  auto gen = std::static_pointer_cast<GenJob>(it->second.job);
  std::string error;
  try {
    Napi::Int32Array history = ToInt32Array(env, gen->seq->tokens.data(), gen->seq->tokens.size());
    it->second.processor.Call({it->second.logitsView.Value(), history});
  } catch (const Napi::Error& e) {
    error = e.Message();
    if (error.empty()) error = "(no message)";
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    gen->processorError = error;
    gen->processorDone = true;
  }
  cv_.notify_all();
}

}  // namespace llama_napi
