// Engine, JS thread: sequences, job submission and the settling of finished jobs (the decode
// loop is in Engine.cc, sampling in EngineSample.cc).
#include <algorithm>
#include <cstring>
#include <utility>

#include "Engine.h"

namespace llama_napi {

std::shared_ptr<SeqState> Engine::AcquireSeq() {
  for (uint32_t i = 0; i < nSeq_; i++) {
    if (!seqInUse_[i]) {
      seqInUse_[i] = true;
      auto seq = std::make_shared<SeqState>();
      seq->id = static_cast<llama_seq_id>(i);
      return seq;
    }
  }
  return nullptr;
}

void Engine::ReleaseSeq(std::shared_ptr<SeqState> seq, Napi::Reference<Napi::ArrayBuffer> keepAlive) {
  if (disposed_) return;
  auto job = std::make_shared<TaskJob>();
  job->seq = seq;
  job->run = [](llama_context* ctx, TaskJob& t) {
    compat::SeqRemove(ctx, t.seq->id, -1, -1);
    t.seq->tokens.clear();
    t.seq->media.clear();
    t.seq->nKv = 0;
    t.seq->logits = nullptr;
    return Failure{};
  };
  // The id can be reused at once: the engine runs this release before any later job.
  seqInUse_[static_cast<size_t>(seq->id)] = false;
  job->toJs = [](Napi::Env env, TaskJob&) { return env.Undefined(); };
  JsPending p{std::nullopt, {}, std::move(keepAlive), job, false, {}, {}};
  Track(env_, job, std::move(p));
}

void Engine::Track(Napi::Env env, std::shared_ptr<Job> job, JsPending pending) {
  job->id = nextId_++;
  if (job->seq) job->seq->busy = true;
  if (pending.counted) RefLoop(env, +1);
  pending_.emplace(job->id, std::move(pending));
  {
    std::lock_guard<std::mutex> lk(mu_);
    incoming_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void Engine::RefLoop(Napi::Env env, int delta) {
  const int before = loopRefs_;
  loopRefs_ += delta;
  if (!tsfnAlive_) return;
  if (before == 0 && loopRefs_ > 0) tsfn_.Ref(env);
  if (before > 0 && loopRefs_ == 0) tsfn_.Unref(env);
}

Napi::Value Engine::SubmitEval(Napi::Env env, std::shared_ptr<EvalJob> job) {
  auto deferred = Napi::Promise::Deferred::New(env);
  Track(env, job, JsPending{deferred, {}, {}, job, true, {}, {}});
  return deferred.Promise();
}

Napi::Value Engine::SubmitTask(Napi::Env env, std::shared_ptr<TaskJob> job) {
  auto deferred = Napi::Promise::Deferred::New(env);
  Track(env, job, JsPending{deferred, {}, {}, job, true, {}, {}});
  return deferred.Promise();
}

void Engine::SubmitGen(Napi::Env env, std::shared_ptr<GenJob> job, Napi::Function onChunk) {
  job->candidates.resize(static_cast<size_t>(model_->nVocab));
  Track(env, job, JsPending{std::nullopt, Napi::Persistent(onChunk), {}, job, true, {}, {}});
}

void Engine::SubmitGen(Napi::Env env, std::shared_ptr<GenJob> job, Napi::Function onChunk, Napi::Function processor,
                       Napi::Float32Array logitsView) {
  job->candidates.resize(static_cast<size_t>(model_->nVocab));
  job->hasProcessor = true;
  Track(env, job,
        JsPending{std::nullopt, Napi::Persistent(onChunk), {}, job, true, Napi::Persistent(processor),
                  Napi::Persistent(logitsView)});
}

void Engine::Abort(const std::shared_ptr<Job>& job) {
  job->aborted = true;
  cv_.notify_one();
}

void Engine::SetPaused(Napi::Env env, const std::shared_ptr<GenJob>& job, bool paused) {
  auto it = pending_.find(job->id);
  if (it == pending_.end() || job->paused == paused) return;
  job->paused = paused;
  // A paused generation waits for its consumer; it must not keep the process alive alone.
  it->second.counted = !paused;
  RefLoop(env, paused ? -1 : +1);
  if (!paused) cv_.notify_one();
}

void Engine::Settle(Napi::Env env, uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  JsPending p = std::move(it->second);
  pending_.erase(it);
  if (p.counted) RefLoop(env, -1);
  Job& job = *p.job;
  if (job.seq) job.seq->busy = false;
  if (!p.deferred) {
    if (job.type == Job::Type::Task) static_cast<TaskJob&>(job).toJs(env, static_cast<TaskJob&>(job));
    return;
  }
  if (!job.failure.ok()) {
    p.deferred->Reject(MakeError(env, job.failure.code, job.failure.message).Value());
    return;
  }
  if (job.type == Job::Type::Eval) {
    const auto& eval = static_cast<EvalJob&>(job);
    Napi::Object r = Napi::Object::New(env);
    r.Set("evaluated", Napi::Number::New(env, static_cast<double>(eval.evaluated)));
    r.Set("reused", Napi::Number::New(env, static_cast<double>(eval.reused)));
    if (eval.encoded > 0) r.Set("encoded", Napi::Number::New(env, static_cast<double>(eval.encoded)));
    p.deferred->Resolve(r);
  } else if (job.type == Job::Type::Task) {
    auto& task = static_cast<TaskJob&>(job);
    p.deferred->Resolve(task.toJs ? task.toJs(env, task) : env.Undefined());
  }
}

void Engine::DrainGen(Napi::Env env, uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  auto gen = std::static_pointer_cast<GenJob>(it->second.job);
  std::vector<llama_token> tokens;
  std::vector<std::string> texts;
  std::vector<TokenLogprobs> logprobs;
  FinishReason reason;
  bool prompted = false;
  {
    std::lock_guard<std::mutex> lk(gen->outMu);
    tokens.swap(gen->outTokens);
    texts.swap(gen->outTexts);
    logprobs.swap(gen->outLogprobs);
    reason = gen->reason;
    gen->notifyPending = false;
    prompted = std::exchange(gen->promptReady, false);
  }
  Napi::FunctionReference onChunk;
  if (reason != FinishReason::None) {
    onChunk = std::move(it->second.onChunk);
    if (it->second.counted) RefLoop(env, -1);
    pending_.erase(it);
    gen->seq->busy = false;
  }
  Napi::Array jsTexts = Napi::Array::New(env, texts.size());
  for (size_t i = 0; i < texts.size(); i++) jsTexts.Set(static_cast<uint32_t>(i), Napi::String::New(env, texts[i]));
  Napi::Value done = env.Undefined();
  if (reason != FinishReason::None) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("reason", FinishReasonName(reason));
    if (!gen->failure.ok()) d.Set("error", MakeError(env, gen->failure.code, gen->failure.message).Value());
    if (gen->maxDraft > 0) {
      d.Set("drafted", Napi::Number::New(env, static_cast<double>(gen->drafted)));
      d.Set("accepted", Napi::Number::New(env, static_cast<double>(gen->accepted)));
    }
    done = d;
  }
  Napi::Value jsLogprobs = env.Undefined();
  if (!logprobs.empty()) {
    // [chosen: Float32Array, top: Array<[Int32Array tokens, Float32Array logprobs]>]
    Napi::Float32Array chosen = Napi::Float32Array::New(env, logprobs.size());
    Napi::Array tops = Napi::Array::New(env, logprobs.size());
    for (size_t i = 0; i < logprobs.size(); i++) {
      chosen[i] = logprobs[i].chosen;
      const auto& top = logprobs[i].top;
      Napi::Int32Array ids = Napi::Int32Array::New(env, top.size());
      Napi::Float32Array lps = Napi::Float32Array::New(env, top.size());
      for (size_t k = 0; k < top.size(); k++) {
        ids[k] = top[k].first;
        lps[k] = top[k].second;
      }
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(0u, ids);
      pair.Set(1u, lps);
      tops.Set(static_cast<uint32_t>(i), pair);
    }
    Napi::Array both = Napi::Array::New(env, 2);
    both.Set(0u, chosen);
    both.Set(1u, tops);
    jsLogprobs = both;
  }
  // With a prompt: {evaluated, reused} in the first call after its last token was decoded.
  Napi::Value jsPrompted = env.Undefined();
  if (prompted) {
    Napi::Object p = Napi::Object::New(env);
    p.Set("evaluated", Napi::Number::New(env, static_cast<double>(gen->promptEvaluated)));
    p.Set("reused", Napi::Number::New(env, static_cast<double>(gen->promptReused)));
    jsPrompted = p;
  }
  Napi::FunctionReference& cb = reason != FinishReason::None ? onChunk : it->second.onChunk;
  cb.Call({ToInt32Array(env, tokens.data(), tokens.size()), jsTexts, done, jsLogprobs, jsPrompted});
}

bool Engine::PlanLogits(SeqState& seq) {
  if (seq.nKv == seq.tokens.size() && !seq.logitsValid) {
    if (seq.nKv == 0) return false;
    seq.nKv -= 1;
    seq.needTrim = true;
  }
  return true;
}

}  // namespace llama_napi
