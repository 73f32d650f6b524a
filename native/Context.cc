#include "Context.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "GraphCheck.h"
#include "common.h"
#include "log.h"

namespace llama_napi {
namespace {

const napi_type_tag kContextTag = {0x6c6c616d614e4150ULL, 0x436f6e7465787402ULL};

ggml_type KvType(Napi::Env env, const std::string& name) {
  static const std::pair<const char*, ggml_type> kTypes[] = {
      {"f32", GGML_TYPE_F32},   {"f16", GGML_TYPE_F16},   {"bf16", GGML_TYPE_BF16}, {"q8_0", GGML_TYPE_Q8_0},
      {"q4_0", GGML_TYPE_Q4_0}, {"q4_1", GGML_TYPE_Q4_1}, {"q5_0", GGML_TYPE_Q5_0}, {"q5_1", GGML_TYPE_Q5_1},
      {"iq4_nl", GGML_TYPE_IQ4_NL},
  };
  for (const auto& [n, t] : kTypes) {
    if (name == n) return t;
  }
  Throw(env, "ERR_INVALID_ARGUMENT",
        "kvCacheType \"" + name + "\" is not supported; use f16, f32, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 or iq4_nl");
}

enum llama_pooling_type PoolingType(Napi::Env env, const std::string& name) {
  if (name == "model") return LLAMA_POOLING_TYPE_UNSPECIFIED;
  if (name == "none") return LLAMA_POOLING_TYPE_NONE;
  if (name == "mean") return LLAMA_POOLING_TYPE_MEAN;
  if (name == "cls") return LLAMA_POOLING_TYPE_CLS;
  if (name == "last") return LLAMA_POOLING_TYPE_LAST;
  if (name == "rank") return LLAMA_POOLING_TYPE_RANK;
  Throw(env, "ERR_INVALID_ARGUMENT", "pooling must be one of model, none, mean, cls, last, rank; got \"" + name + "\"");
}

const char* PoolingName(enum llama_pooling_type t) {
  switch (t) {
    case LLAMA_POOLING_TYPE_NONE: return "none";
    case LLAMA_POOLING_TYPE_MEAN: return "mean";
    case LLAMA_POOLING_TYPE_CLS: return "cls";
    case LLAMA_POOLING_TYPE_LAST: return "last";
    case LLAMA_POOLING_TYPE_RANK: return "rank";
    default: return "unspecified";
  }
}

class CreateContextWorker : public Napi::AsyncWorker {
 public:
  CreateContextWorker(ContextWrap* wrap, Napi::Object receiver, std::shared_ptr<ModelHandle> model,
                      llama_context_params params, EngineOptions options, Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(receiver.Env(), "llama-napi:createContext"),
        receiver_(Napi::Persistent(receiver)),
        wrap_(wrap),
        model_(std::move(model)),
        params_(params),
        options_(options),
        deferred_(deferred) {}

  void Execute() override {
    // What would abort the process at the first decode is refused here (native/GraphCheck.h).
    const std::string arch = UnsupportedArchitecture(model_->model.get(), params_.embeddings);
    if (!arch.empty()) {
      failure_ = {"ERR_UNSUPPORTED", "Cannot create a context for " + model_->path + ": " + arch + "."};
      return;
    }
    LogCapture capture;
    ctx_.reset(llama_init_from_model(model_->model.get(), params_));
    if (!ctx_) {
      failure_ = {"ERR_CONTEXT_CREATE",
                  "Could not create the context (n_ctx=" + std::to_string(params_.n_ctx) +
                      "). Try a smaller contextSize or fewer sequences. llama.cpp said: " + capture.Text()};
      return;
    }
    const std::string node = UncomputableNode(ctx_.get());
    if (!node.empty()) {
      ctx_.reset();
      failure_ = {"ERR_UNSUPPORTED", "The model in " + model_->path + " cannot run: " + node +
                                         ". Decoding would abort the process, so the context is refused. The file was "
                                         "written by a faulty converter or is damaged: convert or quantize it again "
                                         "with llama.cpp's tools."};
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (!failure_.ok()) {
      deferred_.Reject(MakeError(env, failure_.code, failure_.message).Value());
    } else if (wrap_->disposed()) {
      ctx_.reset();
      deferred_.Reject(MakeError(env, "ERR_DISPOSED", "The context was disposed while it was being created").Value());
    } else {
      wrap_->FinishInit(env, std::move(model_), std::move(ctx_), options_, params_);
      deferred_.Resolve(env.Undefined());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::ObjectReference receiver_;  // keeps the Context object alive while creating
  ContextWrap* wrap_;
  std::shared_ptr<ModelHandle> model_;
  llama_context_params params_;
  EngineOptions options_;
  Napi::Promise::Deferred deferred_;
  compat::ContextPtr ctx_;
  Failure failure_;
};

}  // namespace

Napi::Function ContextWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeContext",
                     {
                         InstanceMethod<&ContextWrap::InitContext>("init"),
                         InstanceMethod<&ContextWrap::Info>("info"),
                         InstanceMethod<&ContextWrap::Stats>("stats"),
                         InstanceMethod<&ContextWrap::Embed>("embed"),
                         InstanceMethod<&ContextWrap::SetLora>("setLora"),
                         InstanceMethod<&ContextWrap::Abandon>("abandon"),
                         InstanceMethod<&ContextWrap::Dispose>("dispose"),
                     });
}

ContextWrap::ContextWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ContextWrap>(info) {
  info.This().As<Napi::Object>().TypeTag(&kContextTag);
}

ContextWrap::~ContextWrap() {
  if (engine_) engine_->Dispose();
  ReportExternal(0);
}

void ContextWrap::ReportExternal(int64_t bytes) {
  if (bytes == externalBytes_) return;
  Napi::MemoryManagement::AdjustExternalMemory(Env(), bytes - externalBytes_);
  externalBytes_ = bytes;
}

std::shared_ptr<Engine> ContextWrap::EngineOf(Napi::Env env, Napi::Value value) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kContextTag)) {
    Throw(env, "ERR_INVALID_ARGUMENT", "Expected a Context created by model.createContext()");
  }
  ContextWrap* wrap = Unwrap(value.As<Napi::Object>());
  if (wrap->engine_ && wrap->engine_->broken()) Throw(env, "ERR_RPC", wrap->engine_->brokenMessage());
  if (wrap->disposed_) Throw(env, "ERR_DISPOSED", "This Context has been disposed; create a new one to continue");
  if (!wrap->engine_) Throw(env, "ERR_STATE", "The context has not finished initialising");
  return wrap->engine_;
}

void ContextWrap::FinishInit(Napi::Env env, std::shared_ptr<ModelHandle> model, compat::ContextPtr ctx, const EngineOptions& options,
                             const llama_context_params& params) {
  initializing_ = false;
  const auto bytes = static_cast<int64_t>(compat::ContextMemoryBytes(ctx.get()));
  engine_ = Engine::Start(env, std::move(model), std::move(ctx), options, params);
  ReportExternal(bytes);
}

Napi::Value ContextWrap::InitContext(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  std::shared_ptr<ModelHandle> model = ModelWrap::HandleOf(env, info[0]);
  Options o(env, args.OptionalObject(1, "options"), "options");
  if (disposed_) return Rejected(env, "ERR_DISPOSED", "This Context has been disposed");
  if (model->vocabOnly) {
    return Rejected(env, "ERR_STATE", "This model was loaded with vocabOnly: it has no weights, so it cannot run; load it again without vocabOnly");
  }
  if (initializing_ || engine_) return Rejected(env, "ERR_STATE", "init() may only be called once per Context");

  const llama_model* m = model->model.get();
  const int32_t nTrain = llama_model_n_ctx_train(m);
  const bool learned = compat::HasLearnedPositions(m);
  // src/options/context.ts checks the values and fills in every default.
  const int64_t sequences = o.Required(o.Int("sequences", 1, static_cast<int64_t>(llama_max_parallel_sequences())), "sequences");
  const int64_t contextSize = o.Required(o.Int("contextSize", 1, 1 << 24), "contextSize");
  if (learned && nTrain > 0 && contextSize > nTrain) {
    return Rejected(env, "ERR_INVALID_ARGUMENT",
                    "contextSize " + std::to_string(contextSize) + " is larger than this model's training context (" +
                        std::to_string(nTrain) + "). The model has learned absolute positions, so it cannot go past " +
                        std::to_string(nTrain) + " tokens.");
  }
  const int64_t batchSize = o.Required(o.Int("batchSize", 1, 1 << 16), "batchSize");
  // ggml's thread pool is built for at most GGML_MAX_N_THREADS (512) threads.
  const int64_t threads = o.Required(o.Int("threads", 1, GGML_MAX_N_THREADS), "threads");
  const int64_t threadsBatch = o.Required(o.Int("threadsBatch", 1, GGML_MAX_N_THREADS), "threadsBatch");
  const std::string kvType = o.Required(o.String("kvCacheType"), "kvCacheType");
  const std::string flash = o.Required(o.String("flashAttention"), "flashAttention");
  const bool unified = o.Required(o.Bool("unifiedKvCache"), "unifiedKvCache");
  const int64_t batchWindow = o.Required(o.Int("batchWindow", 0, 1000), "batchWindow");
  const bool embeddings = o.Required(o.Bool("embeddings"), "embeddings");
  const std::string pooling = embeddings ? o.Required(o.String("pooling"), "pooling") : "";
  o.CheckAllRead();
  if (contextSize * sequences > (1LL << 26)) {
    return Rejected(env, "ERR_INVALID_ARGUMENT", "contextSize × sequences is too large");
  }

  llama_context_params p = llama_context_default_params();
  p.n_ctx = static_cast<uint32_t>(contextSize * sequences);
  p.n_batch = static_cast<uint32_t>(batchSize);
  p.n_ubatch = static_cast<uint32_t>(batchSize);
  p.n_seq_max = static_cast<uint32_t>(sequences);
  p.n_threads = static_cast<int32_t>(threads);
  p.n_threads_batch = static_cast<int32_t>(threadsBatch);
  p.type_k = KvType(env, kvType);
  p.type_v = p.type_k;
  p.kv_unified = unified;
  p.no_perf = true;
  p.n_outputs_max_per_seq = 0;  // no per-sequence cap on outputs (embeddings of every token)
  if (llama_model_has_encoder(m) && llama_model_has_decoder(m) && !embeddings) {
    // The encoder reads a session's whole input in one micro-batch (llama_encode's rule), and the
    // decoder's relative position buckets cover one KV stream (llm_graph_input_pos_bucket_kv):
    // with a stream per sequence the graph's shapes would not match, and ggml would abort.
    p.n_batch = p.n_ubatch = std::max<uint32_t>(p.n_batch, static_cast<uint32_t>(contextSize));
    p.kv_unified = true;
  }
  if (embeddings) {
    p.embeddings = true;
    p.n_ubatch = p.n_batch;  // a non-causal model must see a whole text in one micro-batch
    p.pooling_type = PoolingType(env, pooling);
  }
  if (flash == "auto") p.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
  else if (flash == "on") p.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
  else if (flash == "off") p.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  else Throw(env, "ERR_INVALID_ARGUMENT", "flashAttention must be \"auto\", \"on\" or \"off\"");

  initializing_ = true;
  auto deferred = Napi::Promise::Deferred::New(env);
  auto* worker = new CreateContextWorker(this, info.This().As<Napi::Object>(), std::move(model), p,
                                         EngineOptions{static_cast<uint32_t>(contextSize), static_cast<uint32_t>(batchWindow)},
                                         deferred);
  worker->Queue();
  return deferred.Promise();
}

Napi::Value ContextWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Engine> e = EngineOf(env, info.This());
  llama_context* c = e->ctx();
  Napi::Object out = Napi::Object::New(env);
  out.Set("contextSize", llama_n_ctx(c));
  out.Set("sessionCapacity", e->capacity());
  out.Set("batchSize", e->batchSize());
  out.Set("sequences", e->sequences());
  out.Set("freeSequences", e->freeSequences());
  out.Set("threads", llama_n_threads(c));
  out.Set("threadsBatch", llama_n_threads_batch(c));
  out.Set("canShift", compat::CanShift(c));
  return out;
}

Napi::Value ContextWrap::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Engine::Stats& st = EngineOf(env, info.This())->stats();
  Napi::Object out = Napi::Object::New(env);
  out.Set("decodeCalls", Napi::Number::New(env, static_cast<double>(st.decodeCalls.load())));
  out.Set("tokensDecoded", Napi::Number::New(env, static_cast<double>(st.tokensDecoded.load())));
  out.Set("maxSequencesPerBatch", Napi::Number::New(env, static_cast<double>(st.maxSequencesPerBatch.load())));
  out.Set("contextShifts", Napi::Number::New(env, static_cast<double>(st.contextShifts.load())));
  return out;
}

// embed(texts: Array<Int32Array | number[]>, normalize: boolean) -> Promise<{pooling, dim, vectors}>
Napi::Value ContextWrap::Embed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  std::shared_ptr<Engine> e = EngineOf(env, info.This());
  if (!e->embeddings()) {
    Throw(env, "ERR_UNSUPPORTED", "This context was not created for embeddings; use model.createEmbeddingContext()");
  }
  if (!info[0].IsArray()) Throw(env, "ERR_INVALID_ARGUMENT", "texts must be an array of token arrays");
  Napi::Array list = info[0].As<Napi::Array>();
  const bool normalize = args.Bool(1, "normalize");
  const int32_t nVocab = e->model()->nVocab;
  auto texts = std::make_shared<std::vector<std::vector<llama_token>>>();
  for (uint32_t i = 0; i < list.Length(); i++) {
    std::vector<int32_t> tokens = TokensFrom(env, list.Get(i), "texts[i]");
    if (tokens.empty()) Throw(env, "ERR_INVALID_ARGUMENT", "texts[" + std::to_string(i) + "] has no tokens");
    for (int32_t t : tokens) {
      if (t < 0 || t >= nVocab) Throw(env, "ERR_TOKEN_INVALID", "texts[" + std::to_string(i) + "] has token " + std::to_string(t) + ", out of range");
    }
    texts->emplace_back(tokens.begin(), tokens.end());
  }
  auto result = std::make_shared<EmbedResult>();
  auto job = std::make_shared<TaskJob>();
  Engine* engine = e.get();
  job->run = [engine, texts, normalize, result](llama_context*, TaskJob&) { return engine->RunEmbed(*texts, normalize, *result); };
  job->toJs = [result](Napi::Env env, TaskJob&) -> Napi::Value {
    Napi::Object out = Napi::Object::New(env);
    out.Set("pooling", PoolingName(result->pooling));
    out.Set("dim", result->dim);
    Napi::Array vectors = Napi::Array::New(env, result->vectors.size());
    for (size_t i = 0; i < result->vectors.size(); i++) {
      const auto& v = result->vectors[i];
      Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
      if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
      vectors.Set(static_cast<uint32_t>(i), a);
    }
    out.Set("vectors", vectors);
    return out;
  };
  return e->SubmitTask(env, job);
}

// setLora(adapters: Array<{path, scale}>) -> Promise<void>; [] removes every adapter.
Napi::Value ContextWrap::SetLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Engine> e = EngineOf(env, info.This());
  if (!info[0].IsArray()) Throw(env, "ERR_INVALID_ARGUMENT", "setLora takes an array of {path, scale}");
  Napi::Array list = info[0].As<Napi::Array>();
  auto adapters = std::make_shared<std::vector<std::pair<std::string, float>>>();
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value item = list.Get(i);
    if (!item.IsObject()) Throw(env, "ERR_INVALID_ARGUMENT", "setLora: adapters[" + std::to_string(i) + "] must be {path, scale}");
    Options o(env, item.As<Napi::Object>(), "adapters[" + std::to_string(i) + "]");
    std::optional<std::string> path = o.String("path");
    if (!path || path->empty() || path->find('\0') != std::string::npos) o.Fail("path", "a file path");
    const double scale = o.Number("scale", -1e6, 1e6).value_or(1.0);
    adapters->emplace_back(*path, static_cast<float>(scale));
  }
  auto job = std::make_shared<TaskJob>();
  Engine* engine = e.get();
  job->run = [engine, adapters](llama_context*, TaskJob&) { return engine->RunSetLora(*adapters); };
  return e->SubmitTask(env, job);
}

// abandon(message): the context's RPC server failed; see Engine::Abandon.
void ContextWrap::Abandon(const Napi::CallbackInfo& info) {
  const std::string message = Args(info).String(0, "message");
  if (engine_) engine_->Abandon(message);
  disposed_ = true;
}

void ContextWrap::Dispose(const Napi::CallbackInfo& info) {
  if (disposed_) return;
  disposed_ = true;
  if (engine_) engine_->Dispose();
  ReportExternal(0);
}

}  // namespace llama_napi
