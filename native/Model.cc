#include "Model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "GgufCheck.h"
#include "GraphCheck.h"
#include "Rpc.h"
#include "common.h"
#include "log.h"

namespace llama_napi {
namespace {

const napi_type_tag kModelTag = {0x6c6c616d614e4150ULL, 0x4d6f64656c000001ULL};

// Checks the file before llama.cpp sees it, so that common mistakes get precise errors.
Failure CheckModelFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return {"ERR_FILE_NOT_FOUND", "Model file not found: " + path + ". Check the path (it is resolved from the current directory)."};
    }
    return {"ERR_FILE_UNREADABLE", "Cannot access model file " + path + ": " + std::strerror(errno)};
  }
  if (S_ISDIR(st.st_mode)) {
    return {"ERR_FILE_UNREADABLE", path + " is a directory; pass the path of a .gguf file"};
  }
  if (!S_ISREG(st.st_mode)) {
    // A FIFO or a device: opening or reading it can block forever (a FIFO with no writer).
    return {"ERR_FILE_UNREADABLE", path + " is not a regular file (a pipe, socket or device); pass the path of a .gguf file"};
  }
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return {"ERR_FILE_UNREADABLE", "Cannot open model file " + path + ": " + std::strerror(errno)};
  }
  char magic[4] = {0, 0, 0, 0};
  size_t n = std::fread(magic, 1, 4, f);
  std::fclose(f);
  if (n < 4 || std::memcmp(magic, "GGUF", 4) != 0) {
    return {"ERR_GGUF_INVALID", path + " is not a GGUF file (it does not start with the GGUF magic bytes)" +
                                    std::string(n < 4 ? ": the file is shorter than 4 bytes" : "") +
                                    ". Convert the model to GGUF with llama.cpp's convert_hf_to_gguf.py."};
  }
  return {};
}

// Sorts a llama.cpp load failure into an error code using the log lines it produced.
Failure ClassifyLoadFailure(const std::string& path, const std::string& log) {
  auto has = [&](const char* s) { return log.find(s) != std::string::npos; };
  std::string detail = log.empty() ? "" : " llama.cpp said: " + log;
  if (has("unknown model architecture") || has("unsupported model architecture")) {
    return {"ERR_UNSUPPORTED", "The model in " + path + " uses an architecture this llama.cpp build does not support." + detail};
  }
  if (has("gguf") || has("GGUF") || has("file bounds") || has("truncated") || has("failed to read") ||
      has("tensor") || has("key not found") || has("invalid")) {
    return {"ERR_GGUF_INVALID", "The GGUF file " + path + " is invalid or truncated." + detail};
  }
  return {"ERR_MODEL_LOAD", "Failed to load the model from " + path + "." + detail};
}

struct ProgressState {
  const Napi::AsyncProgressWorker<float>::ExecutionProgress* progress;
  std::atomic<bool>* abort;
  float lastSent;
};

class LoadWorker : public Napi::AsyncProgressWorker<float> {
 public:
  LoadWorker(ModelWrap* wrap, Napi::Object receiver, std::string path, std::optional<bool> useMmap, bool vocabOnly,
             std::vector<std::string> rpcServers, std::vector<float> tensorSplit,
             std::shared_ptr<std::atomic<bool>> abort, std::optional<Napi::Function> onProgress,
             Napi::Promise::Deferred deferred)
      : Napi::AsyncProgressWorker<float>(receiver.Env(), "llama-napi:loadModel"),
        receiver_(Napi::Persistent(receiver)),
        wrap_(wrap),
        path_(std::move(path)),
        useMmap_(useMmap),
        vocabOnly_(vocabOnly),
        rpcServers_(std::move(rpcServers)),
        tensorSplit_(std::move(tensorSplit)),
        abort_(std::move(abort)),
        deferred_(deferred) {
    if (onProgress) onProgress_ = Napi::Persistent(*onProgress);
  }

  void Execute(const ExecutionProgress& progress) override {
    failure_ = CheckModelFile(path_);
    if (!failure_.ok()) return;
    // Read and check the header first: llama.cpp aborts the process on a few malformed values.
    failure_ = ReadGgufHeader(path_, header_);
    if (failure_.ok()) failure_ = CheckLoadable(header_.get(), path_);
    if (failure_.ok() && !vocabOnly_) failure_ = CheckTensorTypes(header_.get(), path_);
    if (!failure_.ok()) return;
    LogCapture capture;
    ProgressState state{&progress, abort_.get(), -1.0f};
    llama_model_params params = compat::ModelParams(useMmap_.value_or(true), useMmap_.has_value(), vocabOnly_, gpuLayers_);
    params.progress_callback = [](float p, void* ud) -> bool {
      auto* s = static_cast<ProgressState*>(ud);
      if (s->abort->load()) return false;
      if (p - s->lastSent >= 0.01f || p >= 1.0f) {
        s->lastSent = p;
        s->progress->Send(&p, 1);
      }
      return true;
    };
    params.progress_callback_user_data = &state;
    // RPC servers: every layer on their devices, split as asked (llama.cpp's --rpc).
    std::vector<ggml_backend_dev_t> devices;
    std::vector<float> split(llama_max_devices(), 0.0f);
    for (const std::string& endpoint : rpcServers_) {
      failure_ = ProbeRpcServer(endpoint, 5000);
      if (failure_.ok()) failure_ = RpcDevices(endpoint, devices);
      if (!failure_.ok()) return;
    }
    if (!devices.empty()) {
      if (devices.size() > split.size()) {
        failure_ = {"ERR_RPC", "Too many RPC devices (" + std::to_string(devices.size()) + "); llama.cpp supports " + std::to_string(split.size())};
        return;
      }
      for (size_t i = 0; i < tensorSplit_.size() && i < split.size(); i++) split[i] = tensorSplit_[i];
      devices.push_back(nullptr);
      params.devices = devices.data();
      params.n_gpu_layers = 999;
      params.split_mode = LLAMA_SPLIT_MODE_LAYER;
      if (!tensorSplit_.empty()) params.tensor_split = split.data();
    }
    model_.reset(llama_model_load_from_file(path_.c_str(), params));
    if (!model_) {
      failure_ = abort_->load() ? Failure{"ERR_ABORTED", "Loading " + path_ + " was aborted"}
                                : ClassifyLoadFailure(path_, capture.Text());
      return;
    }
    // What llama.cpp accepted but would abort on later (native/GraphCheck.h).
    if (const std::string vocab = UnusableVocabulary(model_.get()); !vocab.empty()) {
      const bool none = llama_vocab_type(compat::Vocab(model_.get())) == LLAMA_VOCAB_TYPE_NONE;
      model_.reset();
      failure_ = {none ? "ERR_UNSUPPORTED" : "ERR_GGUF_INVALID", "The model in " + path_ + " cannot be used: " + vocab + "."};
    } else if (const std::string graph = vocabOnly_ ? "" : GraphBuilderProblem(model_.get()); !graph.empty()) {
      model_.reset();
      failure_ = {"ERR_GGUF_INVALID", "The GGUF file " + path_ + " cannot be loaded: llama.cpp's graph for " + graph +
                                          ". The file is damaged or was written by a faulty tool."};
    }
  }

  // Layers to offload to GPU devices (src/model.ts passes 0 when there is none); -1: all.
  void SetGpuLayers(int32_t n) { gpuLayers_ = n; }

  void OnProgress(const float* data, size_t count) override { ReportProgress(Env(), onProgress_, data, count); }

  void OnOK() override {
    Napi::Env env = Env();
    if (!failure_.ok()) {
      deferred_.Reject(MakeError(env, failure_.code, failure_.message).Value());
    } else if (wrap_->disposed()) {
      model_.reset();
      deferred_.Reject(MakeError(env, "ERR_DISPOSED", "The model was disposed while it was loading").Value());
    } else {
      // llama.cpp maps the file when use_mmap is on (its default) and the platform can.
      const bool mapped = !vocabOnly_ && useMmap_.value_or(true) && llama_supports_mmap();
      wrap_->FinishLoad(std::move(model_), vocabOnly_, path_, MetadataToJs(env, header_.get()), !rpcServers_.empty(), mapped);
      deferred_.Resolve(env.Undefined());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::ObjectReference receiver_;  // keeps the Model object alive while loading
  ModelWrap* wrap_;
  std::string path_;
  std::optional<bool> useMmap_;
  bool vocabOnly_;
  int32_t gpuLayers_ = 0;
  std::vector<std::string> rpcServers_;
  std::vector<float> tensorSplit_;
  std::shared_ptr<std::atomic<bool>> abort_;
  Napi::FunctionReference onProgress_;
  Napi::Promise::Deferred deferred_;
  compat::ModelPtr model_;
  GgufPtr header_;
  Failure failure_;
};

std::string MetaValue(const llama_model* model, const char* key) {
  char buf[256];
  int32_t n = llama_model_meta_val_str(model, key, buf, sizeof(buf));
  if (n < 0) return "";
  if (static_cast<size_t>(n) < sizeof(buf)) return std::string(buf, static_cast<size_t>(n));
  std::string out(static_cast<size_t>(n) + 1, '\0');
  llama_model_meta_val_str(model, key, out.data(), out.size());
  out.resize(static_cast<size_t>(n));
  return out;
}

const char* VocabTypeName(enum llama_vocab_type t) {
  switch (t) {
    case LLAMA_VOCAB_TYPE_SPM: return "spm";
    case LLAMA_VOCAB_TYPE_BPE: return "bpe";
    case LLAMA_VOCAB_TYPE_WPM: return "wpm";
    case LLAMA_VOCAB_TYPE_UGM: return "ugm";
    case LLAMA_VOCAB_TYPE_RWKV: return "rwkv";
    case LLAMA_VOCAB_TYPE_PLAMO2: return "plamo2";
    case LLAMA_VOCAB_TYPE_NONE: return "none";
    default: return "other";
  }
}

}  // namespace

Napi::Function ModelWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {
                         InstanceMethod<&ModelWrap::Load>("load"),
                         InstanceMethod<&ModelWrap::AbortLoad>("abortLoad"),
                         InstanceMethod<&ModelWrap::Info>("info"),
                         InstanceMethod<&ModelWrap::Tokenize>("tokenize"),
                         InstanceMethod<&ModelWrap::Detokenize>("detokenize"),
                         InstanceMethod<&ModelWrap::TokenToPiece>("tokenToPiece"),
                         InstanceMethod<&ModelWrap::SpecialTokens>("specialTokens"),
                         InstanceMethod<&ModelWrap::IsEog>("isEog"),
                         InstanceMethod<&ModelWrap::IsControl>("isControl"),
                         InstanceMethod<&ModelWrap::TokenAttributes>("tokenAttributes"),
                         InstanceMethod<&ModelWrap::TokenText>("tokenText"),
                         InstanceMethod<&ModelWrap::MetaString>("metaString"),
                         InstanceMethod<&ModelWrap::Metadata>("metadata"),
                         InstanceMethod<&ModelWrap::EmbeddingRows>("embeddingRows"),
                         InstanceMethod<&ModelWrap::Tensors>("tensors"),
                         InstanceMethod<&ModelWrap::LoadProjector>("loadProjector"),
                         InstanceMethod<&ModelWrap::ProjectorInfo>("projectorInfo"),
                         InstanceMethod<&ModelWrap::EncodeMedia>("encodeMedia"),
                         InstanceMethod<&ModelWrap::Dispose>("dispose"),
                     });
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
  info.This().As<Napi::Object>().TypeTag(&kModelTag);
}

std::shared_ptr<ModelHandle> ModelWrap::HandleOf(Napi::Env env, Napi::Value value) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kModelTag)) {
    Throw(env, "ERR_INVALID_ARGUMENT", "Expected a Model created by loadModel()");
  }
  return Unwrap(value.As<Napi::Object>())->Handle(env);
}

std::shared_ptr<ModelHandle> ModelWrap::Handle(Napi::Env env) const {
  if (disposed_) Throw(env, "ERR_DISPOSED", "This Model has been disposed; load it again to continue");
  if (!handle_) Throw(env, "ERR_STATE", "The model has not finished loading");
  return handle_;
}

void ModelWrap::FinishLoad(compat::ModelPtr model, bool vocabOnly, const std::string& path, Napi::Object metadata,
                           bool usesRpc, bool mappedWeights) {
  loading_ = false;
  metadata_ = Napi::Persistent(metadata);
  auto handle = std::make_shared<ModelHandle>();
  handle->vocabOnly = vocabOnly;
  handle->path = path;
  handle->tensors = std::make_unique<ModelTensors>(path);
  handle->usesRpc = usesRpc;
  handle->mappedWeights = mappedWeights;
  if (usesRpc) TrackRpcModel(handle);
  handle->vocab = compat::Vocab(model.get());
  handle->nVocab = compat::VocabSize(model.get());
  handle->model = std::move(model);
  handle_ = std::move(handle);
  ReportExternal(static_cast<int64_t>(llama_model_size(handle_->model.get())));
}

void ModelWrap::ReportExternal(int64_t bytes) {
  if (bytes == externalBytes_) return;
  Napi::MemoryManagement::AdjustExternalMemory(Env(), bytes - externalBytes_);
  externalBytes_ = bytes;
}

Napi::Value ModelWrap::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  std::string path = args.String(0, "path");
  Options opts(env, args.OptionalObject(1, "options"), "options");
  std::optional<bool> useMmap = opts.Bool("useMmap");
  // src/options/load.ts checks the values and fills in the defaults.
  const bool vocabOnly = opts.Required(opts.Bool("vocabOnly"), "vocabOnly");
  const int64_t gpuLayers = opts.Required(opts.Int("gpuLayers", -1, 100000), "gpuLayers");
  std::vector<std::string> rpcServers = opts.StringArray("rpcServers", 16).value_or(std::vector<std::string>{});
  std::vector<float> tensorSplit;
  if (std::optional<Napi::Value> split = opts.Raw("tensorSplit")) {
    if (!split->IsArray()) opts.Fail("tensorSplit", "an array of non-negative numbers");
    Napi::Array arr = split->As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsNumber() || !(v.As<Napi::Number>().DoubleValue() >= 0)) opts.Fail("tensorSplit", "an array of non-negative numbers");
      tensorSplit.push_back(v.As<Napi::Number>().FloatValue());
    }
  }
  opts.CheckAllRead();
  std::optional<Napi::Function> onProgress = args.OptionalFunction(2, "onProgress");
  if (disposed_) return Rejected(env, "ERR_DISPOSED", "This Model has been disposed");
  if (loading_ || handle_) return Rejected(env, "ERR_STATE", "load() may only be called once per Model");
  if (path.find('\0') != std::string::npos) {
    return Rejected(env, "ERR_INVALID_ARGUMENT", "path must not contain NUL characters");
  }
  loading_ = true;
  auto deferred = Napi::Promise::Deferred::New(env);
  auto* worker = new LoadWorker(this, info.This().As<Napi::Object>(), path, useMmap, vocabOnly, std::move(rpcServers),
                                std::move(tensorSplit), abortLoad_, onProgress, deferred);
  worker->SetGpuLayers(static_cast<int32_t>(gpuLayers));
  worker->Queue();
  return deferred.Promise();
}

void ModelWrap::AbortLoad(const Napi::CallbackInfo& info) { abortLoad_->store(true); }

llama_token DecoderStartToken(const llama_model* model) {
  if (!llama_model_has_encoder(model) || !llama_model_has_decoder(model)) return LLAMA_TOKEN_NULL;
  const llama_token start = llama_model_decoder_start_token(model);
  if (start != LLAMA_TOKEN_NULL) return start;
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const llama_token bos = llama_vocab_bos(vocab);
  return bos != LLAMA_TOKEN_NULL ? bos : llama_vocab_pad(vocab);
}

int32_t DecoderLayers(const llama_model* model) {
  char arch[64] = "", value[32] = "";
  llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch));
  const std::string key = std::string(arch) + ".decoder_block_count";
  if (llama_model_has_encoder(model) && llama_model_meta_val_str(model, key.c_str(), value, sizeof(value)) > 0) {
    return static_cast<int32_t>(std::strtol(value, nullptr, 10));
  }
  return llama_model_n_layer(model);
}

Napi::Value ModelWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Handle(env);
  const llama_model* m = h->model.get();
  Napi::Object out = Napi::Object::New(env);
  char desc[256];
  int32_t n = llama_model_desc(m, desc, sizeof(desc));
  out.Set("architecture", MetaValue(m, "general.architecture"));
  out.Set("name", MetaValue(m, "general.name"));
  out.Set("description", std::string(desc, n > 0 ? static_cast<size_t>(std::min<int32_t>(n, sizeof(desc) - 1)) : 0));
  out.Set("parameters", Napi::Number::New(env, static_cast<double>(llama_model_n_params(m))));
  out.Set("sizeBytes", Napi::Number::New(env, static_cast<double>(llama_model_size(m))));
  out.Set("vocabSize", h->nVocab);
  out.Set("vocabType", VocabTypeName(llama_vocab_type(h->vocab)));
  out.Set("trainContextSize", llama_model_n_ctx_train(m));
  out.Set("embeddingSize", llama_model_n_embd(m));
  out.Set("layers", llama_model_n_layer(m));
  // A vocab-only load reads no hyperparameters (no layers): llama_model_n_head() would
  // GGML_ABORT (llama_hparams::n_head(0) with n_layer_all == 0), so report 0 heads.
  out.Set("heads", h->vocabOnly ? 0 : llama_model_n_head(m));
  out.Set("headsKv", h->vocabOnly ? 0 : llama_model_n_head_kv(m));
  out.Set("fileType", llama_ftype_name(llama_model_ftype(m)));
  out.Set("learnedPositions", compat::HasLearnedPositions(m));
  out.Set("hasEncoder", llama_model_has_encoder(m));
  out.Set("hasDecoder", llama_model_has_decoder(m));
  const llama_token start = DecoderStartToken(m);
  out.Set("decoderStartToken", start == LLAMA_TOKEN_NULL ? env.Null() : Napi::Number::New(env, start));
  out.Set("decoderLayers", h->vocabOnly || !llama_model_has_decoder(m) ? 0 : DecoderLayers(m));
  out.Set("recurrent", llama_model_is_recurrent(m));
  const char* tmpl = llama_model_chat_template(m, nullptr);
  out.Set("chatTemplate", tmpl != nullptr ? Napi::Value(Napi::String::New(env, tmpl)) : env.Null());
  return out;
}

// metadata() -> every GGUF key except the vocabulary arrays, typed (read before loading).
Napi::Value ModelWrap::Metadata(const Napi::CallbackInfo& info) {
  Handle(info.Env());
  return metadata_.Value();
}

Napi::Value ModelWrap::MetaString(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Handle(env);
  std::string key = Args(info).String(0, "key");
  char probe[1];
  if (llama_model_meta_val_str(h->model.get(), key.c_str(), probe, sizeof(probe)) < 0) return env.Null();
  return Napi::String::New(env, MetaValue(h->model.get(), key.c_str()));
}

// embeddingRows(tensorName, firstRow, count) -> Float32Array (count × row length), dequantised.
Napi::Value ModelWrap::EmbeddingRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  auto h = Handle(env);
  const std::string name = args.String(0, "tensor");
  if (name != "token_embd.weight" && name != "position_embd.weight") {
    Throw(env, "ERR_INVALID_ARGUMENT", "embeddingRows reads token_embd.weight or position_embd.weight, not " + name);
  }
  const int64_t first = args.Int(1, "row", 0, INT32_MAX);
  const int64_t count = args.Int(2, "count", 1, 4096);
  TensorInfo t;
  std::string error;
  if (!h->tensors->Find(name, t, error)) {
    Throw(env, "ERR_UNSUPPORTED", name == "position_embd.weight"
                                      ? "This model has no learned position embeddings (it encodes positions another way, e.g. RoPE)"
                                      : error);
  }
  const int64_t nRows = t.ne.size() > 1 ? t.ne[1] : 1;
  if (first + count > nRows) {
    Throw(env, name == "token_embd.weight" ? "ERR_TOKEN_INVALID" : "ERR_INVALID_ARGUMENT",
          "Row " + std::to_string(first + count - 1) + " is out of range: " + name + " has rows 0.." + std::to_string(nRows - 1));
  }
  std::vector<float> rows;
  if (!h->tensors->ReadRows(name, first, count, rows, error)) Throw(env, "ERR_FILE_UNREADABLE", error);
  Napi::Float32Array out = Napi::Float32Array::New(env, rows.size());
  std::memcpy(out.Data(), rows.data(), rows.size() * sizeof(float));
  return out;
}

// tensors() -> [{name, type, shape}] from the file's tensor table.
Napi::Value ModelWrap::Tensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Handle(env);
  std::string error;
  std::vector<TensorInfo> list = h->tensors->List(error);
  if (!error.empty()) Throw(env, "ERR_FILE_UNREADABLE", error);
  Napi::Array out = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); i++) {
    Napi::Object t = Napi::Object::New(env);
    t.Set("name", list[i].name);
    t.Set("type", ggml_type_name(list[i].type));
    Napi::Array shape = Napi::Array::New(env, list[i].ne.size());
    for (size_t k = 0; k < list[i].ne.size(); k++) shape.Set(static_cast<uint32_t>(k), Napi::Number::New(env, static_cast<double>(list[i].ne[k])));
    t.Set("shape", shape);
    out.Set(static_cast<uint32_t>(i), t);
  }
  return out;
}

void ModelWrap::Dispose(const Napi::CallbackInfo& info) {
  if (disposed_) return;
  disposed_ = true;
  abortLoad_->store(true);
  metadata_.Reset();
  // Contexts made from this model hold their own reference; the weights are freed with the last
  // (the TS layer disposes them first).
  handle_.reset();
  ReportExternal(0);
}

}  // namespace llama_napi
