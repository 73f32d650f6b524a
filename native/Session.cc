#include "Session.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "Context.h"
#include "Model.h"
#include "Sampler.h"
#include "SessionState.h"
#include "common.h"

namespace llama_napi {
namespace {

const napi_type_tag kSessionTag = {0x6c6c616d614e4150ULL, 0x53657373696f6e03ULL};

}  // namespace

Napi::Function SessionWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeSession",
                     {
                         InstanceMethod<&SessionWrap::Prompt>("prompt"),
                         InstanceMethod<&SessionWrap::PromptMedia>("promptMedia"),
                         InstanceMethod<&SessionWrap::Logits>("logits"),
                         InstanceMethod<&SessionWrap::Generate>("generate"),
                         InstanceMethod<&SessionWrap::SetPaused>("setPaused"),
                         InstanceMethod<&SessionWrap::Abort>("abort"),
                         InstanceMethod<&SessionWrap::History>("history"),
                         InstanceMethod<&SessionWrap::EncoderTokens>("encoderTokens"),
                         InstanceMethod<&SessionWrap::Truncate>("truncate"),
                         InstanceMethod<&SessionWrap::Fork>("fork"),
                         InstanceMethod<&SessionWrap::SaveState>("saveState"),
                         InstanceMethod<&SessionWrap::LoadState>("loadState"),
                         InstanceMethod<&SessionWrap::Trace>("trace"),
                         InstanceMethod<&SessionWrap::Info>("info"),
                         InstanceMethod<&SessionWrap::Dispose>("dispose"),
                     });
}

SessionWrap::SessionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SessionWrap>(info) {
  Napi::Env env = info.Env();
  engine_ = ContextWrap::EngineOf(env, info[0]);
  if (engine_->embeddings()) {
    Throw(env, "ERR_UNSUPPORTED", "An embedding context has no sessions; call embed() on it");
  }
  seq_ = engine_->AcquireSeq();
  if (!seq_) {
    Throw(env, "ERR_NO_SEQUENCE",
          "Every sequence of this context is in use (" + std::to_string(engine_->sequences()) +
              "). Dispose a session first, or create the context with more `sequences`.");
  }
  const size_t bytes = sizeof(float) * static_cast<size_t>(engine_->model()->nVocab);
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, bytes);
  seq_->logits = static_cast<float*>(buf.Data());
  logitsBuf_ = Napi::Persistent(buf);
  info.This().As<Napi::Object>().TypeTag(&kSessionTag);
}

SessionWrap::~SessionWrap() { Release(); }

SessionWrap* SessionWrap::Of(Napi::Env env, Napi::Value value) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kSessionTag)) {
    Throw(env, "ERR_INVALID_ARGUMENT", "Expected a Session");
  }
  return Unwrap(value.As<Napi::Object>());
}

void SessionWrap::CheckUsable(Napi::Env env) const {
  if (engine_ && engine_->broken()) Throw(env, "ERR_RPC", engine_->brokenMessage());
  if (disposed_ || engine_->disposed()) Throw(env, "ERR_DISPOSED", "This Session has been disposed (or its Context was)");
}

void SessionWrap::CheckIdle(Napi::Env env) const {
  CheckUsable(env);
  if (seq_->busy) {
    Throw(env, "ERR_BUSY",
          "The session is busy with another prompt, generation or state operation; wait for it to finish or abort it");
  }
}

Napi::Value SessionWrap::Prompt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  CheckIdle(env);
  std::vector<int32_t> input = args.Tokens(0, "tokens");
  const bool append = args.Bool(1, "append");
  CheckTokens(env, input, "Token");
  auto job = std::make_shared<EvalJob>();
  job->seq = seq_;
  if (engine_->encoderDecoder()) {
    job->encoded = PrepareEncoderPrompt(env, input, append);
    return SubmitPrompt(env, job);
  }
  PlanPrompt(env, input, append, false);
  return SubmitPrompt(env, job);
}

void SessionWrap::CheckTokens(Napi::Env env, const std::vector<int32_t>& input, const std::string& what) const {
  const int32_t nVocab = engine_->model()->nVocab;
  for (size_t i = 0; i < input.size(); i++) {
    if (input[i] < 0 || input[i] >= nVocab) {
      Throw(env, "ERR_TOKEN_INVALID", what + " " + std::to_string(input[i]) + " at index " + std::to_string(i) +
                                          " is out of range: this model's token ids are 0.." + std::to_string(nVocab - 1));
    }
  }
}

void SessionWrap::PlanPrompt(Napi::Env env, const std::vector<int32_t>& input, bool append, bool generating) {
  SeqState& seq = *seq_;
  const size_t newLength = append ? seq.tokens.size() + input.size() : input.size();
  const size_t capacity = engine_->capacity();
  if (newLength > capacity || (generating && newLength == capacity)) {
    Throw(env, "ERR_CONTEXT_FULL",
          "The prompt needs " + std::to_string(newLength) + " tokens but a session of this context holds at most " +
              std::to_string(capacity) + (generating ? ", the generated ones included" : "") +
              ". Shorten the prompt, or create the context with a larger contextSize (up to the model's training context).");
  }
  if (newLength == 0) Throw(env, "ERR_INVALID_ARGUMENT", "The prompt is empty and the session holds no tokens");

  if (append) {
    if (!input.empty()) seq.logitsValid = false;
    seq.tokens.insert(seq.tokens.end(), input.begin(), input.end());
  } else {
    // Prefix reuse: keep the part of the cache that matches the new history.
    size_t common = 0;
    const size_t limit = std::min(seq.nKv, input.size());
    while (common < limit && seq.tokens[common] == input[common]) common++;
    if (common < seq.nKv) {
      seq.nKv = common;
      seq.needTrim = true;
    }
    if (!(input.size() == seq.tokens.size() && common == input.size())) seq.logitsValid = false;
    seq.tokens.assign(input.begin(), input.end());
    // Token ids never equal a media position, so no media chunk is within the common prefix.
    seq.media.clear();
  }
}

Napi::Value SessionWrap::SubmitPrompt(Napi::Env env, const std::shared_ptr<EvalJob>& job) {
  SeqState& seq = *seq_;
  if (seq.nKv < seq.tokens.size()) seq.logitsValid = false;
  Engine::PlanLogits(seq);
  job->reused = seq.nKv;
  if (seq.nKv == seq.tokens.size()) {
    // Everything is cached and the logits are current: nothing to evaluate.
    auto deferred = Napi::Promise::Deferred::New(env);
    Napi::Object r = Napi::Object::New(env);
    r.Set("evaluated", 0);
    r.Set("reused", Napi::Number::New(env, static_cast<double>(seq.nKv)));
    deferred.Resolve(r);
    return deferred.Promise();
  }
  current_ = job;
  return engine_->SubmitEval(env, job);
}

Napi::Value SessionWrap::Logits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  if (!seq_->logitsValid) {
    Throw(env, "ERR_STATE",
          "No current logits: the session changed since its last evaluation (or nothing was evaluated yet). "
          "Call prompt() first.");
  }
  return LogitsView(env);
}

Napi::Float32Array SessionWrap::LogitsView(Napi::Env env) {
  if (logitsView_.IsEmpty()) {
    Napi::ArrayBuffer buf = logitsBuf_.Value();
    logitsView_ = Napi::Persistent(Napi::Float32Array::New(env, static_cast<size_t>(engine_->model()->nVocab), buf, 0));
  }
  return logitsView_.Value();
}

void SessionWrap::Generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  CheckIdle(env);
  Options o(env, args.OptionalObject(0, "options"), "options");
  Napi::Function onChunk = args.Function(1, "onChunk");
  const int64_t maxTokens = o.Int("maxTokens", 1, std::numeric_limits<int32_t>::max()).value_or(std::numeric_limits<int32_t>::max());
  std::vector<std::string> stops = o.StringArray("stop", 64).value_or(std::vector<std::string>{});
  for (const auto& s : stops) {
    if (s.empty()) Throw(env, "ERR_INVALID_ARGUMENT", "options.stop must not contain empty strings");
  }
  Napi::Object sampling = o.Required(o.Object("sampling"), "sampling");
  const int64_t logprobs = o.Int("logprobs", 0, 100).value_or(-1);
  int64_t shiftKeep = -1;
  if (std::optional<Napi::Object> shift = o.Object("contextShift")) {
    shiftKeep = Options(env, *shift, "options.contextShift").Int("keep", 0, engine_->capacity() - 2).value_or(0);
  }
  std::optional<Napi::Value> processor = o.Raw("logitsProcessor");
  if (processor && !processor->IsFunction()) o.Fail("logitsProcessor", "a function");
  const std::vector<std::string> preserved = o.StringArray("preservedTokens", 1024).value_or(std::vector<std::string>{});
  int64_t lookupNgram = 0;
  int64_t lookupNgramMin = 1;
  int64_t maxDraft = 0;  // lookup's or the draft model's
  if (std::optional<Napi::Object> lookup = o.Object("lookup")) {
    Options l(env, *lookup, "options.lookup");
    // The defaults live in the option table (src/options/generate.ts), which fills every field.
    lookupNgram = l.Required(l.Int("ngramSize", 1, 16), "ngramSize");
    lookupNgramMin = l.Required(l.Int("ngramMin", 1, lookupNgram), "ngramMin");
    maxDraft = l.Required(l.Int("maxDraft", 1, 64), "maxDraft");
    l.CheckAllRead();
  }
  std::shared_ptr<ModelHandle> draftModel;
  double draftMinP = 0;
  if (std::optional<Napi::Object> spec = o.Object("speculative")) {
    if (lookupNgram > 0) Throw(env, "ERR_INVALID_ARGUMENT", "options.lookup and options.speculative cannot be used together: choose one");
    if (engine_->encoderDecoder()) Throw(env, "ERR_UNSUPPORTED", "options.speculative: speculative decoding with an encoder-decoder model is not supported");
    Options sp(env, *spec, "options.speculative");
    draftModel = ModelWrap::HandleOf(env, sp.Required(sp.Raw("draft"), "draft"));
    if (llama_model_has_encoder(draftModel->model.get())) {
      Throw(env, "ERR_INVALID_ARGUMENT", "options.speculative.draft is an encoder-decoder or encoder model: a draft model must be a decoder-only model");
    }
    if (draftModel->vocabOnly) {
      Throw(env, "ERR_INVALID_ARGUMENT", "options.speculative.draft was loaded with vocabOnly: load the draft model with its weights");
    }
    const std::string mismatch = DraftVocabMismatch(engine_->model()->vocab, draftModel->vocab);
    if (!mismatch.empty()) {
      Throw(env, "ERR_INVALID_ARGUMENT", "options.speculative.draft cannot draft for this model: " + mismatch +
                                             ". A draft model must share the target's vocabulary (e.g. a smaller model of the same family).");
    }
    maxDraft = sp.Required(sp.Int("maxDraft", 1, 64), "maxDraft");
    draftMinP = sp.Required(sp.Number("minProbability", 0, 1), "minProbability");
    sp.CheckAllRead();
  }
  // A prompt evaluated in the same batches as the first token (otherwise prompt() first).
  std::optional<std::vector<int32_t>> prompt;
  if (std::optional<Napi::Value> p = o.Raw("prompt")) {
    if (engine_->encoderDecoder()) {
      Throw(env, "ERR_UNSUPPORTED", "options.prompt: an encoder-decoder model's prompt goes to its encoder; call prompt() first");
    }
    prompt = TokensFrom(env, *p, "options.prompt");
    CheckTokens(env, *prompt, "options.prompt: token");
  }
  o.CheckAllRead();
  const llama_model* model = engine_->model()->model.get();
  auto job = std::make_shared<GenJob>(engine_->model()->vocab, std::move(stops));
  job->sampling = BuildSampler(env, model, sampling, static_cast<int32_t>(engine_->capacity()));
  job->maxTokens = maxTokens;
  job->logprobs = static_cast<int32_t>(logprobs);
  job->shiftKeep = static_cast<int32_t>(shiftKeep);
  job->lookupNgram = static_cast<int32_t>(lookupNgram);
  job->lookupNgramMin = static_cast<int32_t>(lookupNgramMin);
  job->draftModel = std::move(draftModel);
  job->draftMinP = static_cast<float>(draftMinP);
  job->maxDraft = job->draftLimit = static_cast<int32_t>(maxDraft);
  job->seq = seq_;
  // A preserved token is a text that is one special token of this vocabulary (others are ignored,
  // as llama.cpp's server ignores them).
  std::vector<llama_token> preservedIds;
  for (const auto& text : preserved) {
    std::vector<llama_token> ids;
    if (compat::Tokenize(engine_->model()->vocab, text, false, true, ids) == compat::TokenizeStatus::kOk && ids.size() == 1) {
      preservedIds.push_back(ids[0]);
    }
  }
  job->text.SetPreserved(std::move(preservedIds));

  SeqState& seq = *seq_;
  if (prompt) PlanPrompt(env, *prompt, false, true);
  if (seq.tokens.size() >= engine_->capacity()) {
    Throw(env, "ERR_CONTEXT_FULL", "The session is full (" + std::to_string(seq.tokens.size()) +
                                       " tokens); rewind or truncate it before generating more");
  }
  if (!Engine::PlanLogits(seq)) {
    Throw(env, "ERR_STATE", "The session is empty: prompt it with some text before generating");
  }
  if (prompt) {
    job->promptReused = seq.nKv;
    job->prompting = seq.nKv < seq.tokens.size();
    job->promptReady = !job->prompting;  // all of it cached, its logits current
  }
  current_ = job;
  if (processor) {
    engine_->SubmitGen(env, job, onChunk, processor->As<Napi::Function>(), LogitsView(env));
  } else {
    engine_->SubmitGen(env, job, onChunk);
  }
}

void SessionWrap::SetPaused(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool paused = Args(info).Bool(0, "paused");
  if (disposed_ || !current_ || current_->type != Job::Type::Generate) return;
  engine_->SetPaused(env, std::static_pointer_cast<GenJob>(current_), paused);
}

void SessionWrap::Abort(const Napi::CallbackInfo& info) {
  if (current_ && !engine_->disposed()) engine_->Abort(current_);
}

Napi::Value SessionWrap::History(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  return ToInt32Array(env, seq_->tokens.data(), seq_->tokens.size());
}

void SessionWrap::Truncate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  SeqState& seq = *seq_;
  size_t length = static_cast<size_t>(Args(info).Int(0, "length", 0, static_cast<int64_t>(seq.tokens.size())));
  // Not within a media chunk, nor right after one (it gives no logits): before it.
  length = seq.CutMedia(length);
  if (length == seq.tokens.size()) return;
  seq.tokens.resize(length);
  seq.logitsValid = false;
  if (seq.nKv > length) {
    seq.nKv = length;
    seq.needTrim = true;
  }
}

Napi::Value SessionWrap::Fork(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  SessionWrap* dst = Of(env, info[0]);
  dst->CheckIdle(env);
  if (dst->engine_ != engine_) Throw(env, "ERR_INVALID_ARGUMENT", "fork(): the target session belongs to another context");
  if (dst == this) Throw(env, "ERR_INVALID_ARGUMENT", "fork(): a session cannot be forked into itself");
  auto job = std::make_shared<TaskJob>();
  job->seq = seq_;
  // The TS layer hands the new session out only after the fork resolved.
  std::shared_ptr<SeqState> target = dst->seq_;
  const size_t nVocab = static_cast<size_t>(engine_->model()->nVocab);
  job->run = [target, nVocab](llama_context* ctx, TaskJob& t) { return CopySequence(ctx, *t.seq, *target, nVocab); };
  current_ = job;
  return engine_->SubmitTask(env, job);
}

Napi::Value SessionWrap::SaveState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  if (engine_->encoderDecoder()) Throw(env, "ERR_UNSUPPORTED", "saveState() of an encoder-decoder model's session is not supported yet: keep its input and prompt a session with it again");
  if (!seq_->media.empty()) Throw(env, "ERR_UNSUPPORTED", "saveState() of a session with images or audio is not supported yet: rewind before the first media item, or prompt it again after loading");
  auto job = std::make_shared<TaskJob>();
  job->seq = seq_;
  const size_t nVocab = static_cast<size_t>(engine_->model()->nVocab);
  job->run = [nVocab](llama_context* ctx, TaskJob& t) { return SerializeSequence(ctx, *t.seq, nVocab, t.bytes); };
  job->toJs = [](Napi::Env env, TaskJob& t) -> Napi::Value {
    return Napi::Buffer<uint8_t>::Copy(env, t.bytes.data(), t.bytes.size());
  };
  current_ = job;
  return engine_->SubmitTask(env, job);
}

Napi::Value SessionWrap::LoadState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  if (engine_->encoderDecoder()) Throw(env, "ERR_UNSUPPORTED", "loadState() into an encoder-decoder model's session is not supported yet");
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Throw(env, "ERR_INVALID_ARGUMENT", "loadState() takes a Buffer or Uint8Array made by saveState()");
  }
  Napi::Uint8Array data = info[0].As<Napi::Uint8Array>();
  // A copy (the caller may change its buffer meanwhile); parsed and checked off the event loop.
  auto state = std::make_shared<ParsedState>();
  state->data.assign(data.Data(), data.Data() + data.ByteLength());
  auto job = std::make_shared<TaskJob>();
  job->seq = seq_;
  const size_t nVocab = static_cast<size_t>(engine_->model()->nVocab);
  const llama_model* model = engine_->model()->model.get();  // the engine keeps the model alive
  const uint32_t capacity = engine_->capacity();
  job->run = [state, nVocab, model, capacity](llama_context* ctx, TaskJob& t) {
    Failure f = ParseState(model, capacity, *state);
    return f.ok() ? RestoreSequence(ctx, *state, *t.seq, nVocab) : f;
  };
  current_ = job;
  return engine_->SubmitTask(env, job);
}

Napi::Value SessionWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckUsable(env);
  Napi::Object out = Napi::Object::New(env);
  out.Set("sequence", seq_->id);
  out.Set("busy", seq_->busy);
  out.Set("capacity", engine_->capacity());
  if (!seq_->busy) {
    out.Set("length", Napi::Number::New(env, static_cast<double>(seq_->tokens.size())));
    out.Set("cached", Napi::Number::New(env, static_cast<double>(seq_->nKv)));
    out.Set("decoded", Napi::Number::New(env, static_cast<double>(seq_->nDecoded)));
    out.Set("hasLogits", seq_->logitsValid);
  }
  return out;
}

void SessionWrap::Dispose(const Napi::CallbackInfo& info) { Release(); }

void SessionWrap::Release() {
  if (disposed_) return;
  disposed_ = true;
  if (!engine_ || !seq_) return;  // the constructor failed
  if (current_ && !engine_->disposed()) engine_->Abort(current_);
  logitsView_.Reset();
  // The engine may still write into the logits buffer until the release runs: it keeps the
  // buffer alive until then.
  engine_->ReleaseSeq(seq_, std::move(logitsBuf_));
  current_.reset();
}

}  // namespace llama_napi
