// Model: a loaded GGUF model (weights + vocabulary). JS class: Model (src/model.ts).
#pragma once

#include <napi.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>

#include "ModelTensors.h"
#include "Projector.h"
#include "llama_compat.h"

namespace llama_napi {

// The loaded model, shared by the Model wrapper and every context made from it, so that the
// weights outlive the last context even when the Model object is disposed first.
struct ModelHandle {
  compat::ModelPtr model;
  const llama_vocab* vocab = nullptr;
  int32_t nVocab = 0;
  bool vocabOnly = false;  // loaded without weights: tokenizer only, no contexts
  std::string path;
  std::unique_ptr<ModelTensors> tensors;  // direct reads of the file's tensors
  // LoRA adapters loaded for this model, by path. llama.cpp frees them with the model.
  std::mutex loraMu;
  std::map<std::string, llama_adapter_lora*> loras;
  // Layers on RPC servers. When one of them fails, freeing the model would wait forever on the
  // lost connection: a broken model is left allocated (a deliberate, bounded leak).
  bool usesRpc = false;
  std::atomic<bool> broken{false};
  // The weights stay in llama.cpp's read-only mapping of the file (use_mmap): not trainable.
  bool mappedWeights = false;
  // The multimodal projector (model.loadProjector()); set on the JS thread, read by engines.
  std::shared_ptr<Projector> projector() const {
    std::lock_guard<std::mutex> lk(projectorMu);
    return projector_;
  }
  void setProjector(std::shared_ptr<Projector> p) {
    std::lock_guard<std::mutex> lk(projectorMu);
    projector_ = std::move(p);
  }

  ModelHandle() = default;
  ModelHandle(const ModelHandle&) = delete;
  ModelHandle& operator=(const ModelHandle&) = delete;
  ~ModelHandle() {
    projector_.reset();  // before the model it was made for
    if (broken.load()) (void)model.release();
  }

 private:
  mutable std::mutex projectorMu;
  std::shared_ptr<Projector> projector_;
};

// The token an encoder-decoder model's decoder starts from: the model's own, else BOS, else the
// padding token (T5 starts from <pad>); LLAMA_TOKEN_NULL without a decoder or encoder.
llama_token DecoderStartToken(const llama_model* model);
// Blocks of the decoder of an encoder-decoder model (the GGUF's <arch>.decoder_block_count, by
// default as many as the encoder's); of any other model, its layers.
int32_t DecoderLayers(const llama_model* model);

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  // The wrapped model of a JS object, checked by type tag; throws ERR_INVALID_ARGUMENT or
  // ERR_DISPOSED.
  static std::shared_ptr<ModelHandle> HandleOf(Napi::Env env, Napi::Value value);

  explicit ModelWrap(const Napi::CallbackInfo& info);
  ~ModelWrap() override { ReportExternal(0); }

  // Called by the load worker on the JS thread.
  void FinishLoad(compat::ModelPtr model, bool vocabOnly, const std::string& path, Napi::Object metadata, bool usesRpc,
                  bool mappedWeights);
  bool disposed() const { return disposed_; }

 private:
  std::shared_ptr<ModelHandle> Handle(Napi::Env env) const;

  Napi::Value Load(const Napi::CallbackInfo& info);
  void AbortLoad(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Tokenize(const Napi::CallbackInfo& info);
  Napi::Value Detokenize(const Napi::CallbackInfo& info);
  Napi::Value TokenToPiece(const Napi::CallbackInfo& info);
  Napi::Value SpecialTokens(const Napi::CallbackInfo& info);
  Napi::Value IsEog(const Napi::CallbackInfo& info);
  Napi::Value IsControl(const Napi::CallbackInfo& info);
  Napi::Value TokenAttributes(const Napi::CallbackInfo& info);
  Napi::Value TokenText(const Napi::CallbackInfo& info);
  Napi::Value MetaString(const Napi::CallbackInfo& info);
  Napi::Value Metadata(const Napi::CallbackInfo& info);
  Napi::Value EmbeddingRows(const Napi::CallbackInfo& info);
  Napi::Value Tensors(const Napi::CallbackInfo& info);
  Napi::Value LoadProjector(const Napi::CallbackInfo& info);  // native/ModelProjector.cc
  Napi::Value ProjectorInfo(const Napi::CallbackInfo& info);
  Napi::Value EncodeMedia(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo& info);

  llama_token CheckedToken(Napi::Env env, const Napi::Value& v) const;
  // Tells V8 how much memory this object holds (the weights), so that a Model dropped without
  // dispose() weighs on the garbage collector as it should. 0 on dispose and finalization.
  void ReportExternal(int64_t bytes);

  std::shared_ptr<ModelHandle> handle_;
  int64_t externalBytes_ = 0;  // reported with AdjustExternalMemory
  Napi::ObjectReference metadata_;
  std::shared_ptr<std::atomic<bool>> abortLoad_ = std::make_shared<std::atomic<bool>>(false);
  bool loading_ = false;
  bool disposed_ = false;
};

}  // namespace llama_napi
