// model.loadProjector(path, threads) and model.projectorInfo() (see Projector.h).
#include <algorithm>

#include "EngineMedia.h"
#include "Model.h"
#include "Projector.h"

namespace llama_napi {

namespace {

class ProjectorWorker : public Napi::AsyncWorker {
 public:
  ProjectorWorker(Napi::Env env, std::shared_ptr<ModelHandle> model, std::string path, int32_t threads)
      : Napi::AsyncWorker(env, "llama-napi:loadProjector"),
        model_(std::move(model)),
        path_(std::move(path)),
        threads_(threads),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      failure_ = LoadProjector(path_, model_->model.get(), threads_, projector_);
    } catch (const std::exception& e) {
      failure_ = {"ERR_GGUF_INVALID", "The projector " + path_ + " could not be loaded: " + e.what()};
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (RejectIfFailed(env, deferred_, failure_)) return;
    model_->setProjector(projector_);
    deferred_.Resolve(ProjectorInfo(env, *projector_));
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::shared_ptr<ModelHandle> model_;
  std::string path_;
  int32_t threads_;
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Projector> projector_;
  Failure failure_;
};

// Encodes one media item: the projector's output embeddings, as the text model reads them.
class EncodeWorker : public Napi::AsyncWorker {
 public:
  EncodeWorker(Napi::Env env, std::shared_ptr<ModelHandle> model, std::shared_ptr<Projector> projector, std::vector<uint8_t> bytes)
      : Napi::AsyncWorker(env, "llama-napi:encodeMedia"),
        model_(std::move(model)),
        projector_(std::move(projector)),
        deferred_(Napi::Promise::Deferred::New(env)) {
    prompt_.text = mtmd_default_marker();
    prompt_.media.push_back(std::move(bytes));
    prompt_.endWithText = false;
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      std::lock_guard<std::mutex> lk(projector_->mu);
      failure_ = TokenizeMedia(*projector_, prompt_, model_->nVocab);
      if (!failure_.ok()) return;
      if (prompt_.chunks.empty()) {
        failure_ = {"ERR_INTERNAL", "The projector made no media chunk"};
        return;
      }
      const MediaChunk& chunk = *prompt_.chunks.begin()->second;
      if (mtmd_encode_chunk(projector_->ctx.get(), chunk.chunk.get()) != 0) {
        failure_ = {"ERR_DECODE", "The projector failed to encode the media item"};
        return;
      }
      width_ = llama_model_n_embd_inp(model_->model.get());
      const float* out = mtmd_get_output_embd(projector_->ctx.get());
      nTokens_ = chunk.nTokens;
      embd_.assign(out, out + nTokens_ * static_cast<size_t>(width_));
    } catch (const std::exception& e) {
      failure_ = {"ERR_DECODE", std::string("The projector failed to encode the media item: ") + e.what()};
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (RejectIfFailed(env, deferred_, failure_)) return;
    Napi::Object r = Napi::Object::New(env);
    r.Set("tokens", Napi::Number::New(env, static_cast<double>(nTokens_)));
    r.Set("width", width_);
    Napi::Float32Array e = Napi::Float32Array::New(env, embd_.size());
    std::copy(embd_.begin(), embd_.end(), e.Data());
    r.Set("embeddings", e);
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::shared_ptr<ModelHandle> model_;
  std::shared_ptr<Projector> projector_;
  Napi::Promise::Deferred deferred_;
  MediaPrompt prompt_;
  std::vector<float> embd_;
  size_t nTokens_ = 0;
  int32_t width_ = 0;
  Failure failure_;
};

}  // namespace

Napi::Value ModelWrap::EncodeMedia(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ModelHandle> h = Handle(env);
  std::shared_ptr<Projector> p = h->projector();
  if (!p) Throw(env, "ERR_STATE", "This model has no projector: load one with model.loadProjector(path)");
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Throw(env, "ERR_INVALID_ARGUMENT", "encodeMedia() takes the media's bytes as a Uint8Array");
  }
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  if (bytes.ByteLength() == 0) Throw(env, "ERR_MEDIA_INVALID", "The media item is empty (0 bytes)");
  auto* worker = new EncodeWorker(env, h, p, std::vector<uint8_t>(bytes.Data(), bytes.Data() + bytes.ByteLength()));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value ModelWrap::LoadProjector(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  std::shared_ptr<ModelHandle> h = Handle(env);
  const std::string path = args.String(0, "path");
  const int32_t threads = static_cast<int32_t>(args.Int(1, "threads", 1, 512));
  if (h->vocabOnly) Throw(env, "ERR_STATE", "A model loaded with vocabOnly has no weights to read a projector's output with");
  if (h->projector()) Throw(env, "ERR_STATE", "This model has a projector already (" + h->projector()->path + ")");
  auto* worker = new ProjectorWorker(env, h, path, threads);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value ModelWrap::ProjectorInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Projector> p = Handle(env)->projector();
  return p ? Napi::Value(llama_napi::ProjectorInfo(env, *p)) : env.Undefined();
}

}  // namespace llama_napi
