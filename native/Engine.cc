#include "Engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

namespace llama_napi {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::Eog: return "eog";
    case FinishReason::Length: return "length";
    case FinishReason::Stop: return "stop";
    case FinishReason::Aborted: return "aborted";
    case FinishReason::ContextFull: return "contextFull";
    case FinishReason::Error: return "error";
    case FinishReason::None: break;
  }
  return "none";
}

void Engine::CallCompletion(Napi::Env env, Napi::Function, Engine*, Completion* fn) {
  std::unique_ptr<Completion> owned(fn);  // freed even when the completion throws
  if (env != nullptr) {
    Napi::HandleScope scope(env);
    (*owned)(env);
  }
}

Engine::Engine(Napi::Env env, std::shared_ptr<ModelHandle> model, compat::ContextPtr ctx, const EngineOptions& options,
               const llama_context_params& params)
    : model_(std::move(model)), ctx_(std::move(ctx)), batchWindowMs_(options.batchWindowMs), params_(params), env_(env) {
  llama_context* c = ctx_.get();
  nSeq_ = llama_n_seq_max(c);
  nBatch_ = llama_n_batch(c);
  capacity_ = std::min<uint32_t>(llama_n_ctx_seq(c), options.requested);
  learnedPositions_ = compat::HasLearnedPositions(model_->model.get());
  encoderDecoder_ = llama_model_has_encoder(model_->model.get()) && llama_model_has_decoder(model_->model.get());
  if (learnedPositions_) {
    // Learned position embeddings end at the training context: positions past it do not exist.
    capacity_ = std::min<uint32_t>(capacity_, static_cast<uint32_t>(llama_model_n_ctx_train(model_->model.get())));
  }
  seqInUse_.assign(nSeq_, false);
  const bool twoPools = params_.n_threads_batch != params_.n_threads;
  pool_ = std::make_unique<compat::Threadpool>(params_.n_threads, twoPools);
  if (twoPools) poolBatch_ = std::make_unique<compat::Threadpool>(params_.n_threads_batch, false);
  if (pool_->get() != nullptr) {
    llama_attach_threadpool(c, pool_->get(), poolBatch_ ? poolBatch_->get() : pool_->get());
  }
  batch_ = std::make_unique<compat::Batch>(static_cast<int32_t>(nBatch_));
  llama_set_abort_callback(c, &Engine::AbortCallback, this);
}

Engine::~Engine() {
  // Dispose() normally ran already (it must, on the JS thread); this is the last resort.
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    stopFlag_ = true;
    cv_.notify_all();
    thread_.join();
  }
}

std::shared_ptr<Engine> Engine::Start(Napi::Env env, std::shared_ptr<ModelHandle> model, compat::ContextPtr ctx,
                                      const EngineOptions& options, const llama_context_params& params) {
  std::shared_ptr<Engine> e(new Engine(env, std::move(model), std::move(ctx), options, params));
  // The thread-safe function keeps the engine alive until its last queued completion has run.
  auto* keep = new std::shared_ptr<Engine>(e);
  e->tsfn_ = Tsfn::New(
      env, "llama-napi:context", 0, 1, e.get(),
      [](Napi::Env, std::shared_ptr<Engine>* k, Engine* engine) {
        engine->OnTsfnFinalized();
        delete k;
      },
      keep);
  GetAddonData(env).TrackEngine(e);
  e->tsfn_.Unref(env);
  e->thread_ = std::thread([raw = e.get()] { raw->Run(); });
  return e;
}

uint32_t Engine::freeSequences() const {
  return static_cast<uint32_t>(std::count(seqInUse_.begin(), seqInUse_.end(), false));
}

// ---------------------------------------------------------------------------------------------
// JS thread

void Engine::StopThread() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  stopFlag_ = true;
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Engine::OnTsfnFinalized() {
  // Normally Dispose() released the function and the thread is gone already. When the
  // environment is torn down first, Node finalizes and deletes the function while the engine
  // still runs: stop the thread before that, so that it never calls into a deleted function.
  StopThread();
  tsfnAlive_ = false;
}

void Engine::Dispose() {
  if (disposed_) return;
  disposed_ = true;
  StopThread();
  // No engine thread any more: reject whatever is still waiting, without calling into JS
  // synchronously (this may run from a finalizer).
  for (auto& [id, p] : pending_) {
    if (p.job && p.job->seq) p.job->seq->busy = false;
    if (!p.deferred) continue;
    try {
      p.deferred->Reject(MakeError(env_, "ERR_DISPOSED", "The context was disposed before the operation finished").Value());
    } catch (...) {
      // From a finalizer, JS cannot run: the promise is unreachable anyway.
    }
  }
  pending_.clear();
  gens_.clear();
  evals_.clear();
  incoming_.clear();
  traceCtx_.reset();
  drafts_.clear();
  ctx_.reset();
  if (tsfnAlive_) {
    if (loopRefs_ > 0) tsfn_.Unref(env_);
    tsfn_.Release();
  }
  loopRefs_ = 0;
}

void Engine::Abandon(const std::string& message) {
  if (disposed_) return;
  disposed_ = true;
  broken_ = true;
  brokenMessage_ = message;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  stopFlag_ = true;
  cv_.notify_all();
  if (thread_.joinable()) thread_.detach();
  static std::mutex keepMu;
  static std::vector<std::shared_ptr<Engine>> kept;  // never freed: the thread may still use it
  {
    std::lock_guard<std::mutex> lk(keepMu);
    kept.push_back(shared_from_this());
  }
  for (auto& [id, p] : pending_) {
    if (p.job && p.job->seq) p.job->seq->busy = false;
    if (p.deferred) p.deferred->Reject(MakeError(env_, "ERR_RPC", message).Value());
  }
  pending_.clear();
  if (tsfnAlive_ && loopRefs_ > 0) tsfn_.Unref(env_);
  loopRefs_ = 0;
}

// ---------------------------------------------------------------------------------------------
// Engine thread

void Engine::Post(Completion fn) {
  // Fails only once the function is closing (the environment is shutting down): the result is
  // dropped, and the completion is not the function's to free.
  auto owned = std::make_unique<Completion>(std::move(fn));
  if (tsfn_.NonBlockingCall(owned.get()) == napi_ok) owned.release();
}

bool Engine::AbortCallback(void* data) {
  auto* e = static_cast<Engine*>(data);
  if (e->stopFlag_.load(std::memory_order_relaxed)) return true;
  Job* sole = e->soleJob_.load(std::memory_order_relaxed);
  return sole != nullptr && sole->aborted.load(std::memory_order_relaxed);
}

bool Engine::HasWorkLocked() const {
  if (!incoming_.empty() || !evals_.empty()) return true;
  for (const auto& g : gens_) {
    if (!g->paused || g->aborted) return true;
  }
  return false;
}

void Engine::Run() {
  while (true) {
    std::vector<std::shared_ptr<TaskJob>> tasks;
    {
      std::unique_lock<std::mutex> lk(mu_);
      const bool idle = !stopping_ && !HasWorkLocked();
      if (idle) {
        // Idle: the thread pools stop polling (they resume at the next decode).
        if (together_ > 0) expected_ = std::exchange(together_, 0);  // a spell of tasks alone keeps it
        lk.unlock();
        PausePools();
        lk.lock();
      }
      cv_.wait(lk, [&] { return stopping_ || HasWorkLocked(); });
      if (idle) GatherPromptsLocked(lk);
      if (stopping_) return;
      for (auto& job : incoming_) {
        switch (job->type) {
          case Job::Type::Eval: evals_.push_back(std::static_pointer_cast<EvalJob>(job)); break;
          case Job::Type::Generate: gens_.push_back(std::static_pointer_cast<GenJob>(job)); break;
          case Job::Type::Task: tasks.push_back(std::static_pointer_cast<TaskJob>(job)); break;
        }
      }
      incoming_.clear();
    }
    // A generation with a draft model fails here when that model's context cannot be made.
    for (auto& g : gens_) {
      if (g->draftModel && g->reason == FinishReason::None && !g->aborted) DraftContextFor(*g);
    }
    // Aborted generations end first, so that a task queued behind them (such as releasing the
    // sequence) sees them finished.
    for (auto& g : gens_) {
      if (g->aborted) FinishGen(*g, FinishReason::Aborted);
    }
    gens_.erase(std::remove_if(gens_.begin(), gens_.end(), [](const auto& g) { return g->reason != FinishReason::None; }),
                gens_.end());
    for (auto& t : tasks) {
      if (t->seq) SyncSeq(*t->seq);
      t->failure = t->run(ctx_.get(), *t);
      FinishJob(t);
    }
    Step();
  }
}

// When several sessions were decoded together before the context went idle (the clients of a
// server, answered in the same step), their next prompts tend to arrive within milliseconds of
// each other. Decoding the first one alone would make the others wait for that decode and leave
// its session a step ahead of theirs for good (so that their prompts later land in the middle of
// its reply). So, when a prompt wakes an idle context, wait for as many as there were sessions:
// start as soon as they are there, when none has come for a fifth of batchWindow, or when
// batchWindow ms have passed. A lone session pays that fifth once; the context then expects one.
void Engine::GatherPromptsLocked(std::unique_lock<std::mutex>& lk) {
  const uint32_t window = batchWindowMs_;
  if (window == 0 || expected_ < 2) return;
  auto decodeJobs = [this] {
    return static_cast<size_t>(std::count_if(incoming_.begin(), incoming_.end(), [](const auto& j) { return j->type != Job::Type::Task; }));
  };
  size_t seen = decodeJobs();
  if (seen == 0) return;  // woken by a task, or a generation resumed
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(window);
  const auto quiet = std::chrono::microseconds(std::max<uint32_t>(1000, window * 200));  // a fifth of the window
  while (!stopping_ && seen < expected_) {
    const auto until = std::min(deadline, Clock::now() + quiet);
    if (!cv_.wait_until(lk, until, [&] { return stopping_ || decodeJobs() != seen; })) return;  // quiet, or the window ended
    seen = decodeJobs();
  }
}

void Engine::PausePools() {
  if (pool_) pool_->Pause();
  if (poolBatch_) poolBatch_->Pause();
}

void Engine::SyncSeq(SeqState& seq) {
  if (!seq.needTrim) return;
  seq.needTrim = false;
  if (!compat::SeqRemove(ctx_.get(), seq.id, static_cast<llama_pos>(seq.nKv), -1)) {
    // Some caches (recurrent models) cannot drop a tail: start the sequence over.
    compat::SeqRemove(ctx_.get(), seq.id, -1, -1);
    seq.nKv = 0;
  }
}

void Engine::FinishJob(const std::shared_ptr<Job>& job) {
  const uint64_t id = job->id;
  Post([this, id](Napi::Env env) { Settle(env, id); });
}

void GenJob::PromptDecoded(size_t n, bool last) {
  promptEvaluated += n;
  if (!last) return;
  std::lock_guard<std::mutex> lk(outMu);
  prompting = false;
  promptReady = true;
}

void Engine::FinishGen(GenJob& gen, FinishReason reason, Failure failure) {
  if (gen.prompting) {
    // Ended within its prompt: the history keeps the part that reached the cache, as after an
    // aborted or failed prompt().
    SeqState& seq = *gen.seq;
    if (seq.tokens.size() > seq.nKv) seq.tokens.resize(seq.nKv);
  }
  bool post = false;
  {
    std::lock_guard<std::mutex> lk(gen.outMu);
    if (gen.reason != FinishReason::None) return;
    gen.reason = reason;
    gen.failure = std::move(failure);
    post = !gen.notifyPending;
    gen.notifyPending = true;
  }
  if (post) {
    const uint64_t id = gen.id;
    Post([this, id](Napi::Env env) { DrainGen(env, id); });
  }
}

void Engine::Step() {
  compat::Batch& batch = *batch_;
  batch.Clear();
  std::vector<Part> parts;
  // An encoder-decoder model decodes one sequence per batch (see encoderDecoder_), taking turns:
  // generations and prompts alternate, and the generations rotate.
  const bool one = encoderDecoder_;
  if (one) {
    evalsFirst_ = !evalsFirst_;
    if (gens_.size() > 1) std::rotate(gens_.begin(), gens_.begin() + 1, gens_.end());
  }
  // A part of n of seq's `pending` tokens (from nKv on), with logits for the last pending one.
  auto addTokens = [&batch](const std::shared_ptr<Job>& job, const SeqState& seq, size_t pending, size_t n) {
    Part part{job, n, -1};
    for (size_t k = 0; k < n; k++) {
      const size_t pos = seq.nKv + k;
      const int32_t idx = batch.Add(seq.tokens[pos], static_cast<llama_pos>(pos), seq.id, k + 1 == pending);
      if (k + 1 == pending) part.outIndex = idx;
    }
    return part;
  };
  // Generations taking their next token go first; those still in their prompt fill the room left.
  auto addGens = [&](bool prompting) {
    for (auto& g : gens_) {
      if (one && !parts.empty()) break;
      if (g->paused || g->reason != FinishReason::None || g->prompting != prompting) continue;
      SeqState& seq = *g->seq;
      SyncSeq(seq);
      if (seq.nKv == seq.tokens.size()) {
        // First step: sample from the logits the last prompt evaluation left.
        Sample(*g, seq.logits);
        if (g->reason != FinishReason::None) continue;
      }
      const size_t pending = seq.tokens.size() - seq.nKv;
      const size_t room = static_cast<size_t>(batch.Capacity() - batch.Size());
      if (room == 0) break;
      const size_t n = std::min(pending, room);
      Part part = addTokens(g, seq, pending, n);
      AddDraft(*g, part.outIndex, room - n);
      parts.push_back(std::move(part));
    }
  };
  auto addEvals = [&] {
    for (auto it = evals_.begin(); it != evals_.end();) {
      if (one && !parts.empty()) break;
      auto& e = *it;
      SeqState& seq = *e->seq;
      if (e->aborted) {
        SyncSeq(seq);
        seq.tokens.resize(seq.nKv);
        e->failure = {"ERR_ABORTED", "The prompt evaluation was aborted; the session keeps the " +
                                         std::to_string(seq.nKv) + " tokens evaluated before that"};
        FinishJob(e);
        it = evals_.erase(it);
        continue;
      }
      const size_t room = static_cast<size_t>(batch.Capacity() - batch.Size());
      if (room == 0) break;
      SyncSeq(seq);
      const size_t pending = seq.tokens.size() - seq.nKv;
      if (pending == 0) {
        // Nothing left to evaluate (the JS side plans at least one token; this is a safeguard).
        if (!seq.logitsValid) e->failure = {"ERR_INTERNAL", "Nothing to evaluate and no logits to keep"};
        FinishJob(e);
        it = evals_.erase(it);
        continue;
      }
      parts.push_back(addTokens(e, seq, pending, std::min(pending, room)));
      ++it;
    }
  };
  if (one && evalsFirst_) {
    addEvals();
    addGens(false);
  } else {
    addGens(false);
    addGens(true);
    addEvals();
  }
  if (parts.empty()) {
    gens_.erase(std::remove_if(gens_.begin(), gens_.end(), [](const auto& g) { return g->reason != FinishReason::None; }),
                gens_.end());
    return;
  }

  if (parts.size() > 1) {
    // Ascending sequence ids: one model pass where arrival order could take several. A part's
    // tokens (and a generation's draft after its last token) stay together and in order.
    std::vector<int32_t> moved;
    if (batch.SortBySequence(moved)) {
      for (Part& part : parts) {
        if (part.outIndex >= 0) part.outIndex = moved[static_cast<size_t>(part.outIndex)];
      }
    }
  }
  // A prompt alone in its batch can be stopped within the decode.
  const Job& first = *parts[0].job;
  const bool prompt = first.type == Job::Type::Eval || (first.type == Job::Type::Generate && static_cast<const GenJob&>(first).prompting);
  soleJob_ = parts.size() == 1 && prompt ? parts[0].job.get() : nullptr;
  // The decoder of an encoder-decoder model reads its sequence's encoder output.
  const Failure encoded = one ? EnsureEncoded(*parts[0].job->seq) : Failure{};
  const int32_t ret = encoded.ok() ? llama_decode(ctx_.get(), batch.Get()) : -1;
  soleJob_ = nullptr;
  stats_.decodeCalls++;
  stats_.tokensDecoded += static_cast<uint64_t>(batch.Size());
  if (parts.size() > stats_.maxSequencesPerBatch) stats_.maxSequencesPerBatch = parts.size();
  together_ = std::max(together_, parts.size());

  for (Part& part : parts) {
    Job& job = *part.job;
    SeqState& seq = *job.seq;
    if (ret == 0) {
      seq.nKv += part.n;
      seq.nDecoded += part.n;
      if (job.type == Job::Type::Eval) static_cast<EvalJob&>(job).evaluated += part.n;
      if (job.type == Job::Type::Generate && static_cast<GenJob&>(job).prompting) {
        static_cast<GenJob&>(job).PromptDecoded(part.n, part.outIndex >= 0);
      }
      if (part.outIndex < 0) continue;
      const float* logits = llama_get_logits_ith(ctx_.get(), part.outIndex);
      if (job.type == Job::Type::Eval) {
        std::memcpy(seq.logits, logits, sizeof(float) * static_cast<size_t>(model_->nVocab));
        seq.logitsValid = true;
        evals_.erase(std::find(evals_.begin(), evals_.end(), part.job));
        FinishJob(part.job);
      } else {
        SampleAlongDraft(static_cast<GenJob&>(job), part.outIndex);
      }
      continue;
    }
    if (job.type == Job::Type::Generate) static_cast<GenJob&>(job).draft.clear();
    // The decode failed or was aborted: keep what reached the cache, drop the rest.
    const llama_pos posMax = compat::SeqPosMax(ctx_.get(), seq.id);
    seq.nKv = std::min(seq.tokens.size(), static_cast<size_t>(posMax + 1));
    seq.needTrim = true;
    Failure f = !encoded.ok() ? encoded
                : ret == 1   ? Failure{"ERR_CONTEXT_FULL", "The context's KV cache has no room for this batch; use fewer sessions at once or a larger contextSize"}
                : ret == 2 ? Failure{"ERR_ABORTED", "The evaluation was aborted"}
                           : Failure{"ERR_DECODE", "llama_decode failed with code " + std::to_string(ret)};
    if (job.type == Job::Type::Eval) {
      seq.tokens.resize(seq.nKv);
      job.failure = f;
      evals_.erase(std::find(evals_.begin(), evals_.end(), part.job));
      FinishJob(part.job);
    } else {
      // Aborted within its prompt (stopped in the decode): ends as "aborted", as between steps.
      if (ret == 2) FinishGen(static_cast<GenJob&>(job), FinishReason::Aborted);
      else FinishGen(static_cast<GenJob&>(job), FinishReason::Error, f);
    }
  }
  gens_.erase(std::remove_if(gens_.begin(), gens_.end(), [](const auto& g) { return g->reason != FinishReason::None; }),
              gens_.end());
}

}  // namespace llama_napi
