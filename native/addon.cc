// Entry point of the llama-napi addon: registers the wrapped classes and a few module functions.
#include <napi.h>

#include <mutex>

#include "Backends.h"
#include "ChatTemplate.h"
#include "ChatTools.h"
#include "Context.h"
#include "Model.h"
#include "Quantize.h"
#include "Rpc.h"
#include "Session.h"
#include "Train.h"
#include "common.h"
#include "log.h"

namespace llama_napi {
namespace {

void SetErrorFactory(const Napi::CallbackInfo& info) {
  GetAddonData(info.Env()).errorFactory = Napi::Persistent(Args(info).Function(0, "factory"));
}

void SetLogLevelJs(const Napi::CallbackInfo& info) {
  SetLogLevel(static_cast<int>(Args(info).Int(0, "level", 1, 5)));
}

Napi::Value SystemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("llamaSystemInfo", llama_print_system_info());
  out.Set("supportsMmap", llama_supports_mmap());
  out.Set("supportsGpuOffload", llama_supports_gpu_offload());
  out.Set("supportsRpc", llama_supports_rpc());
  out.Set("maxSequences", Napi::Number::New(env, static_cast<double>(llama_max_parallel_sequences())));
  Napi::Array devices = DeviceList(env);
  out.Set("backendDir", BackendDir());
  out.Set("devices", devices);
  out.Set("unavailableModules", UnavailableModules(env));
  return out;
}

// V8's count of external memory, which Model and Context objects add their native memory to
// (Napi::MemoryManagement::AdjustExternalMemory). process.memoryUsage().external leaves it out
// on Node 20 (it counts ArrayBuffers only): tests/memory.test.ts reads it here.
Napi::Value ExternalMemory(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Napi::MemoryManagement::AdjustExternalMemory(info.Env(), 0)));
}

// Stops the decode thread of every context of this env (the contexts stay as they are). The TS
// layer calls it from process.on("exit"): process.exit() runs the static destructors of
// llama.cpp and ggml at once, and a thread still decoding would use what they free.
void StopThreads(const Napi::CallbackInfo& info) {
  for (const auto& weak : GetAddonData(info.Env()).engines) {
    if (std::shared_ptr<Engine> engine = weak.lock()) engine->StopThread();
  }
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static std::once_flag once;
  std::call_once(once, [] {
    InitLogging();
    InstallAbortHook();
    LoadBackends();
    llama_backend_init();
  });
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  Napi::Function model = ModelWrap::Init(env);
  Napi::Function context = ContextWrap::Init(env);
  Napi::Function session = SessionWrap::Init(env);
  data->modelCtor = Napi::Persistent(model);
  data->contextCtor = Napi::Persistent(context);
  data->sessionCtor = Napi::Persistent(session);
  exports.Set("Model", model);
  exports.Set("Context", context);
  exports.Set("Session", session);
  exports.Set("setErrorFactory", Napi::Function::New<SetErrorFactory>(env, "setErrorFactory"));
  exports.Set("setLogLevel", Napi::Function::New<SetLogLevelJs>(env, "setLogLevel"));
  exports.Set("systemInfo", Napi::Function::New<SystemInfo>(env, "systemInfo"));
  exports.Set("externalMemory", Napi::Function::New<ExternalMemory>(env, "externalMemory"));
  exports.Set("stopThreads", Napi::Function::New<StopThreads>(env, "stopThreads"));
  RegisterRpc(env, exports);
  RegisterTrain(env, exports);
  exports.Set("quantize", Napi::Function::New<Quantize>(env, "quantize"));
  exports.Set("ChatTemplate", ChatTemplateWrap::Init(env));
  exports.Set("builtinChatTemplates", Napi::Function::New<BuiltinChatTemplates>(env, "builtinChatTemplates"));
  exports.Set("ChatParser", ChatParserWrap::Init(env));
  return exports;
}

}  // namespace
}  // namespace llama_napi

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return llama_napi::Init(env, exports); }

NODE_API_MODULE(llama_napi, InitAddon)
