// Engine: owns one llama_context and the native thread that runs every decode for it.
//
// All work on a context (prompt evaluation, generation steps, KV-cache and state operations)
// runs on the engine's thread, so llama.cpp is never entered from two threads at once and the
// JS thread never blocks on a decode. Each loop iteration builds one llama_decode batch from
// every session that has work: the next token of each generating session plus prompt tokens
// (continuous batching). Sampling, end-of-generation and stop-string checks run on the engine
// thread too; results reach JS in batches through one thread-safe function.
//
// Threading rules: Job and SeqState fields are touched by the engine thread only while the job
// runs; the JS thread touches a SeqState only while its session has no job in flight (busy is
// false). Everything below "JS thread only" is never touched by the engine thread.
#pragma once

#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "EngineMedia.h"
#include "Model.h"
#include "Projector.h"
#include "Sampler.h"
#include "TextStream.h"
#include "Trace.h"
#include "common.h"
#include "llama_compat.h"

namespace llama_napi {

// One session's sequence in the KV cache.
struct SeqState {
  llama_seq_id id = 0;
  std::vector<llama_token> tokens;  // the session's history
  size_t nKv = 0;                   // tokens[0, nKv) are in the KV cache
  bool needTrim = false;            // the cache holds positions >= nKv that must be removed first
  bool logitsValid = false;         // `logits` are the next-token logits after tokens[nKv - 1]
  float* logits = nullptr;          // n_vocab floats in a JS ArrayBuffer the session keeps alive
  uint64_t nDecoded = 0;            // tokens decoded for this sequence so far
  bool busy = false;                // JS thread only: a job for this sequence is in flight
  // The media chunks of the history, by the position they start at; their positions hold
  // kMediaToken in `tokens` (native/EngineMedia.cc).
  std::map<size_t, std::shared_ptr<MediaChunk>> media;
  // Encoder-decoder models (T5): the encoder's input, whose output the decoder (`tokens`) reads
  // through cross-attention. `encoderVersion` names the input (unique per engine, 0: none); the
  // engine encodes it again whenever the context holds another's (native/EngineEncoder.cc).
  std::vector<llama_token> encoderInput;
  uint64_t encoderVersion = 0;

  // The media chunk that covers position `pos`, if any.
  const MediaChunk* MediaAt(size_t pos, size_t* start = nullptr) const;
  // `length` moved back to the start of a media chunk it would cut, or leave at the end of the
  // history (media chunks give no logits); the media from there on dropped. Returns the length.
  size_t CutMedia(size_t length);
};

enum class FinishReason { None, Eog, Length, Stop, Aborted, ContextFull, Error };
const char* FinishReasonName(FinishReason r);

struct Job {
  enum class Type { Eval, Generate, Task };
  explicit Job(Type t) : type(t) {}
  virtual ~Job() = default;

  const Type type;
  uint64_t id = 0;
  std::shared_ptr<SeqState> seq;
  std::atomic<bool> aborted{false};
  Failure failure;
};

struct EvalJob : Job {
  EvalJob() : Job(Type::Eval) {}
  size_t reused = 0;     // tokens of the new history already in the cache
  size_t evaluated = 0;  // tokens decoded by this job
  size_t encoded = 0;    // an encoder-decoder model: the length of a new encoder input, else 0
};

// Log-probabilities of one generated token: the chosen one and the most likely alternatives.
struct TokenLogprobs {
  float chosen = 0;
  std::vector<std::pair<llama_token, float>> top;
};

struct GenJob : Job {
  GenJob(const llama_vocab* vocab, std::vector<std::string> stops) : Job(Type::Generate), text(vocab, std::move(stops)) {}

  Sampling sampling;
  int64_t maxTokens = 0;
  int64_t produced = 0;
  int32_t logprobs = -1;       // top alternatives to report; -1: no log-probabilities
  int32_t shiftKeep = -1;      // context shift keeping this many tokens; -1: off
  bool hasProcessor = false;   // a JS logits processor runs before each sampling step
  // Drafts decoded in the same batch as the next token and kept as far as the tokens sampled
  // from them agree (native/EngineLookup.cc): from n-gram lookup, where the history's last n-gram
  // occurred before, or from a draft model (native/EngineDraft.cc).
  int32_t lookupNgram = 0;         // longest n-gram matched; 0: no lookup
  int32_t lookupNgramMin = 1;      // shortest n-gram matched
  std::shared_ptr<ModelHandle> draftModel;  // speculative decoding with this model; null: none
  float draftMinP = 0;             // a draft model's token is drafted only this likely or more
  int32_t maxDraft = 0;            // longest draft; 0: no drafts
  int32_t draftLimit = 0;          // the next draft's longest: halves after a miss, doubles after a full hit
  int32_t draftPause = 0;          // steps left without drafts (after misses at length 1)
  int32_t draftBackoff = 1;        // the next pause: doubles after each miss at length 1, up to 64
  std::vector<llama_token> draft;  // the draft in the batch being decoded
  int64_t drafted = 0;             // draft tokens decoded
  int64_t accepted = 0;            // draft tokens kept
  TextStream text;
  std::vector<llama_token_data> candidates;
  std::atomic<bool> paused{false};
  // A prompt evaluated before the first token (generate({ prompt })), in the batches that also
  // carry the other sessions' tokens; the first token is sampled from the decode that ends it.
  bool prompting = false;      // engine thread (JS before submit): the prompt's last token is not decoded yet
  size_t promptReused = 0;     // its tokens kept from the cache (set before submit)
  size_t promptEvaluated = 0;  // its tokens decoded (engine thread; read by JS under outMu once ready)
  bool promptReady = false;    // guarded by outMu: the prompt is done and not yet reported to JS
  // Engine thread: `n` more prompt tokens decoded; `last`: the prompt's last one among them.
  void PromptDecoded(size_t n, bool last);

  // Handshake with the JS logits processor (guarded by the engine's mu_).
  bool processorDone = false;
  std::string processorError;

  // Output not yet delivered to JS (guarded by outMu).
  std::mutex outMu;
  std::vector<llama_token> outTokens;
  std::vector<std::string> outTexts;
  std::vector<TokenLogprobs> outLogprobs;
  FinishReason reason = FinishReason::None;
  bool notifyPending = false;
};

// A short operation on the context (fork, state save/load, releasing a sequence).
struct TaskJob : Job {
  TaskJob() : Job(Type::Task) {}
  std::function<Failure(llama_context*, TaskJob&)> run;  // engine thread
  std::function<Napi::Value(Napi::Env, TaskJob&)> toJs;  // JS thread, on success
  std::vector<uint8_t> bytes;
};

// Why a draft model cannot draft for a target model (a vocabulary that differs, as llama.cpp's
// common_speculative_are_compatible judges it); "" when it can (native/EngineDraft.cc).
std::string DraftVocabMismatch(const llama_vocab* target, const llama_vocab* draft);

// Embeddings of several texts: one vector each (pooled), or one per token (pooling "none").
struct EmbedResult {
  enum llama_pooling_type pooling = LLAMA_POOLING_TYPE_NONE;
  int32_t dim = 0;
  std::vector<std::vector<float>> vectors;
};

// What a context's options ask of the engine beyond llama_context_params.
struct EngineOptions {
  uint32_t requested = 0;      // contextSize: caps each session's capacity (tokens)
  uint32_t batchWindowMs = 0;  // batchWindow: see Engine::GatherPromptsLocked (0: off)
};

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  // Takes ownership of ctx and starts the engine thread. JS thread.
  static std::shared_ptr<Engine> Start(Napi::Env env, std::shared_ptr<ModelHandle> model, compat::ContextPtr ctx,
                                       const EngineOptions& options, const llama_context_params& params);
  ~Engine();

  // --- JS thread only ---
  void Dispose();
  // Stops and joins the engine thread (nothing else): for process exit, where static destructors
  // must not run under a decode (JS 'exit' event, see addon.cc stopThreads), and for the
  // thread-safe function's finalizer. Idempotent.
  void StopThread();
  // After an RPC server failure: fails every pending operation with ERR_RPC and gives up on the
  // decode thread, which may be stuck forever on the lost connection (it is detached, and the
  // engine and its context are kept allocated for it: a deliberate, bounded leak).
  void Abandon(const std::string& message);
  bool disposed() const { return disposed_; }
  bool broken() const { return broken_; }
  const std::string& brokenMessage() const { return brokenMessage_; }
  std::shared_ptr<SeqState> AcquireSeq();  // nullptr when every sequence is in use
  void ReleaseSeq(std::shared_ptr<SeqState> seq, Napi::Reference<Napi::ArrayBuffer> keepAlive);
  // Starts a prompt evaluation of seq->tokens[seq->nKv..]; resolves with {evaluated}.
  Napi::Value SubmitEval(Napi::Env env, std::shared_ptr<EvalJob> job);
  // Starts a generation; onChunk(tokens: Int32Array, texts: string[], done?: {...}) is called
  // on the JS thread with everything produced since the last call.
  void SubmitGen(Napi::Env env, std::shared_ptr<GenJob> job, Napi::Function onChunk);
  // Same, with a logits processor called before every sampling step with `logitsView`.
  void SubmitGen(Napi::Env env, std::shared_ptr<GenJob> job, Napi::Function onChunk, Napi::Function processor,
                 Napi::Float32Array logitsView);
  Napi::Value SubmitTask(Napi::Env env, std::shared_ptr<TaskJob> job);
  void Abort(const std::shared_ptr<Job>& job);
  void SetPaused(Napi::Env env, const std::shared_ptr<GenJob>& job, bool paused);

  // Engine thread (inside a task): appends `input` to seq and evaluates it, then evaluates the
  // whole history again in a capture context (flash attention off, graph callback on).
  Failure RunTrace(SeqState& seq, const std::vector<llama_token>& input, const TraceRequest& req, TraceResult& out);
  Failure TraceMedia(llama_context* tctx, const MediaChunk& media, size_t start);
  // Engine thread (inside a task): applies LoRA adapters (loaded once per model and path).
  Failure RunSetLora(const std::vector<std::pair<std::string, float>>& adapters);
  // Engine thread (inside a task): embeddings of `texts` (an embeddings context).
  Failure RunEmbed(const std::vector<std::vector<llama_token>>& texts, bool normalize, EmbedResult& out);
  // Engine thread (inside a task): evaluates seq's pending tokens at once, keeping its logits.
  Failure EvalNow(SeqState& seq);
  // Engine thread: decodes seq's tokens [nKv, end) in batches (logits for the history's last
  // token when `end` reaches it); on failure nKv stays after the last batch that worked.
  Failure DecodeRun(SeqState& seq, size_t end);
  // Engine thread: makes the context hold the encoder output of seq's encoderInput, which the
  // decoder's cross-attention reads (encoder-decoder models; native/EngineEncoder.cc).
  Failure EnsureEncoded(const SeqState& seq);
  // Engine thread: runs the encoder over `input` as sequence `id` of `ctx`.
  static Failure Encode(llama_context* ctx, const std::vector<llama_token>& input, llama_seq_id id);
  // JS thread: a new, unique encoderVersion.
  uint64_t NextEncoderVersion() { return ++encoderVersions_; }
  bool encoderDecoder() const { return encoderDecoder_; }
  // Engine thread (inside a task): a prompt with images or audio (native/EngineMedia.cc).
  Failure RunMediaPrompt(SeqState& seq, MediaPrompt& prompt, const std::atomic<bool>& aborted);

  // Makes seq ready to produce next-token logits: a session whose logits are stale gets its
  // last token evaluated again. Returns false when the session is empty.
  static bool PlanLogits(SeqState& seq);

  llama_context* ctx() const { return ctx_.get(); }
  const std::shared_ptr<ModelHandle>& model() const { return model_; }
  uint32_t capacity() const { return capacity_; }
  uint32_t sequences() const { return nSeq_; }
  uint32_t freeSequences() const;
  uint32_t batchSize() const { return nBatch_; }
  bool learnedPositions() const { return learnedPositions_; }
  bool embeddings() const { return params_.embeddings; }

  // Decode statistics, for tests and benchmarks (any thread).
  struct Stats {
    std::atomic<uint64_t> decodeCalls{0};
    std::atomic<uint64_t> tokensDecoded{0};
    std::atomic<uint64_t> maxSequencesPerBatch{0};
    std::atomic<uint64_t> contextShifts{0};
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Part {
    std::shared_ptr<Job> job;
    size_t n = 0;
    int32_t outIndex = -1;
  };
  struct JsPending {
    std::optional<Napi::Promise::Deferred> deferred;  // none for internal tasks
    Napi::FunctionReference onChunk;
    Napi::Reference<Napi::ArrayBuffer> keepAlive;
    std::shared_ptr<Job> job;
    bool counted = true;  // holds a ref on the event loop
    Napi::FunctionReference processor;                 // generation: the JS logits processor
    Napi::Reference<Napi::Float32Array> logitsView;    // generation: what the processor sees
  };
  using Completion = std::function<void(Napi::Env)>;
  static void CallCompletion(Napi::Env env, Napi::Function, Engine*, Completion* fn);
  using Tsfn = Napi::TypedThreadSafeFunction<Engine, Completion, &Engine::CallCompletion>;

  Engine(Napi::Env env, std::shared_ptr<ModelHandle> model, compat::ContextPtr ctx, const EngineOptions& options,
         const llama_context_params& params);

  // --- engine thread ---
  void Run();
  bool HasWorkLocked() const;
  void Step();
  void SyncSeq(SeqState& seq);
  void PausePools();  // the thread pools stop polling (idle, or before libmtmd's encoder runs)
  void GatherPromptsLocked(std::unique_lock<std::mutex>& lk);  // after an idle wait (mu_ held)
  void Sample(GenJob& gen, const float* logits);
  // Lookup decoding: adds gen's draft after its pending token (batch index `last`), and after the
  // decode samples along it, keeping the draft tokens that the samples confirm.
  void AddDraft(GenJob& gen, int32_t last, size_t room);
  void SampleAlongDraft(GenJob& gen, int32_t last);
  // Speculative decoding: up to `limit` tokens that gen's draft model predicts greedily after the
  // history, into gen.draft (native/EngineDraft.cc).
  void DraftFromModel(GenJob& gen, size_t limit);
  llama_token SelectToken(GenJob& gen, const float* logits);
  bool RunProcessor(GenJob& gen, const float* logits);  // false: the generation ended
  bool ShiftContext(GenJob& gen);                       // false: no room and no shift
  void Emit(GenJob& gen, llama_token token, std::string text, TokenLogprobs* logprobs, FinishReason reason);
  void FinishGen(GenJob& gen, FinishReason reason, Failure failure = {});
  void FinishJob(const std::shared_ptr<Job>& job);
  void Post(Completion fn);
  void OnTsfnFinalized();  // JS thread: the thread-safe function is being deleted
  static bool AbortCallback(void* data);

  // --- JS thread ---
  void Track(Napi::Env env, std::shared_ptr<Job> job, JsPending pending);
  void Settle(Napi::Env env, uint64_t id);
  void DrainGen(Napi::Env env, uint64_t id);
  void CallProcessor(Napi::Env env, uint64_t id);
  void RefLoop(Napi::Env env, int delta);

  std::shared_ptr<ModelHandle> model_;
  // Thread pools outlive the contexts they are attached to (declared first, destroyed last).
  std::unique_ptr<compat::Threadpool> pool_;
  std::unique_ptr<compat::Threadpool> poolBatch_;
  compat::ContextPtr ctx_;
  uint32_t capacity_ = 0;
  uint32_t nSeq_ = 1;
  uint32_t nBatch_ = 512;
  bool learnedPositions_ = false;
  // An encoder-decoder model: the context holds one encoder output at a time, so each batch
  // decodes one sequence, and a sequence is encoded again when another's output is there.
  bool encoderDecoder_ = false;
  uint64_t encoderVersions_ = 0;  // JS thread
  llama_seq_id encodedSeq_ = -1;  // engine thread: whose encoder output the context holds
  uint64_t encodedVersion_ = 0;
  bool evalsFirst_ = false;       // engine thread: alternates generations and prompts (one per batch)
  const uint32_t batchWindowMs_;  // EngineOptions::batchWindowMs
  size_t together_ = 0;  // engine thread: the most sessions in one batch since the context last went idle
  size_t expected_ = 0;  // engine thread: together_ when it went idle (prompts GatherPromptsLocked waits for)
  llama_context_params params_;  // as the context was created
  Stats stats_;
  Tsfn tsfn_;
  // False once Node has finalized the thread-safe function (after our Release, or when the
  // environment is torn down first: process exit, worker.terminate()); it must not be used then.
  std::atomic<bool> tsfnAlive_{true};
  std::thread thread_;

  // Shared between threads (guarded by mu_).
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> incoming_;
  bool stopping_ = false;
  std::atomic<bool> stopFlag_{false};

  // Engine thread only.
  std::vector<std::shared_ptr<GenJob>> gens_;
  std::deque<std::shared_ptr<EvalJob>> evals_;
  std::unique_ptr<compat::Batch> batch_;
  std::atomic<Job*> soleJob_{nullptr};
  // A draft model's context (speculative decoding), made at its first use with the context's
  // settings; its cache holds, for each sequence id, `cached[id]` (native/EngineDraft.cc).
  struct DraftContext {
    std::shared_ptr<ModelHandle> model;
    compat::ContextPtr ctx;
    uint32_t capacity = 0;  // positions per sequence
    std::vector<std::vector<llama_token>> cached;
  };
  DraftContext* DraftContextFor(GenJob& gen);  // nullptr (and gen failed) when it cannot be made
  std::vector<std::unique_ptr<DraftContext>> drafts_;
  std::unique_ptr<compat::Batch> draftBatch_;  // the draft contexts' batch (made with the first)
  compat::ContextPtr traceCtx_;  // created by the first trace
  uint32_t traceBatch_ = 0;      // its batch size (a media chunk needs its whole length)
  // The LoRA adapters in use (RunSetLora), to go back to when new ones cannot run.
  std::vector<llama_adapter_lora*> loraHandles_;
  std::vector<float> loraScales_;
  TraceCapture traceCapture_;

  // JS thread only.
  Napi::Env env_;
  bool disposed_ = false;
  bool broken_ = false;
  std::string brokenMessage_;
  uint64_t nextId_ = 1;
  int loopRefs_ = 0;
  std::vector<bool> seqInUse_;
  std::unordered_map<uint64_t, JsPending> pending_;
};

}  // namespace llama_napi
