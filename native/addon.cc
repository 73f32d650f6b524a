// Entry point of the llama-napi addon: registers the wrapped classes and a few module functions.
#include <napi.h>

#include <mutex>

#include "ChatTemplate.h"
#include "Context.h"
#include "Model.h"
#include "Quantize.h"
#include "Session.h"
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
  Napi::Array devices = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t dev = ggml_backend_dev_get(i);
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", ggml_backend_dev_name(dev));
    d.Set("description", ggml_backend_dev_description(dev));
    d.Set("backend", ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev)));
    devices.Set(static_cast<uint32_t>(i), d);
  }
  out.Set("devices", devices);
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static std::once_flag once;
  std::call_once(once, [] {
    InitLogging();
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
  exports.Set("quantize", Napi::Function::New<Quantize>(env, "quantize"));
  exports.Set("ChatTemplate", ChatTemplateWrap::Init(env));
  exports.Set("builtinChatTemplates", Napi::Function::New<BuiltinChatTemplates>(env, "builtinChatTemplates"));
  return exports;
}

}  // namespace
}  // namespace llama_napi

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return llama_napi::Init(env, exports); }

NODE_API_MODULE(llama_napi, InitAddon)
