// Context: a llama_context with its KV cache and decode thread. JS class: Context (src/context.ts).
#pragma once

#include <napi.h>

#include <memory>

#include "Engine.h"

namespace llama_napi {

class ContextWrap : public Napi::ObjectWrap<ContextWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  // The engine of a JS context object, checked by type tag; throws when disposed.
  static std::shared_ptr<Engine> EngineOf(Napi::Env env, Napi::Value value);

  explicit ContextWrap(const Napi::CallbackInfo& info);
  ~ContextWrap() override;

  void FinishInit(Napi::Env env, std::shared_ptr<ModelHandle> model, compat::ContextPtr ctx, const EngineOptions& options,
                  const llama_context_params& params);
  bool disposed() const { return disposed_; }

 private:
  Napi::Value InitContext(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Embed(const Napi::CallbackInfo& info);
  Napi::Value SetLora(const Napi::CallbackInfo& info);
  void Abandon(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo& info);
  // Tells V8 how much memory the context holds (KV cache and compute buffers); 0 once freed.
  void ReportExternal(int64_t bytes);

  std::shared_ptr<Engine> engine_;
  int64_t externalBytes_ = 0;  // reported with AdjustExternalMemory
  bool initializing_ = false;
  bool disposed_ = false;
};

}  // namespace llama_napi
