#include "Backends.h"

#include <ggml-backend.h>

#include <cstdlib>
#include <mutex>

#ifdef _WIN32
#include <windows.h>
#else
#include <dlfcn.h>
#endif

namespace llama_napi {
namespace {

std::string g_dir;

// The file that holds the code or data at `address` (the addon, or a backend module).
std::string ModuleOf(const void* address) {
#ifdef _WIN32
  HMODULE module = nullptr;
  char path[MAX_PATH] = {0};
  if (GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                         static_cast<LPCSTR>(address), &module) &&
      GetModuleFileNameA(module, path, MAX_PATH) > 0) {
    return path;
  }
  return "";
#else
  Dl_info info;
  return dladdr(address, &info) != 0 && info.dli_fname != nullptr ? info.dli_fname : "";
#endif
}

std::string DirName(const std::string& path) {
  const size_t slash = path.find_last_of("/\\");
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of("/\\");
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

const char* DeviceType(enum ggml_backend_dev_type type) {
  switch (type) {
    case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
    case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
    case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
    case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
    default: return "other";
  }
}

}  // namespace

void LoadBackends() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* overrideDir = std::getenv("LLAMA_NAPI_BACKEND_DIR");
    g_dir = overrideDir != nullptr && *overrideDir != '\0' ? overrideDir : DirName(ModuleOf(reinterpret_cast<const void*>(&LoadBackends)));
    ggml_backend_load_all_from_path(g_dir.c_str());
  });
}

const std::string& BackendDir() { return g_dir; }

Napi::Array DeviceList(Napi::Env env) {
  Napi::Array devices = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t dev = ggml_backend_dev_get(i);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", ggml_backend_dev_name(dev));
    d.Set("description", ggml_backend_dev_description(dev));
    d.Set("backend", ggml_backend_reg_name(reg));
    d.Set("type", DeviceType(ggml_backend_dev_type(dev)));
    d.Set("library", BaseName(ModuleOf(reg)));
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(dev, &free, &total);
    d.Set("memoryTotal", Napi::Number::New(env, static_cast<double>(total)));
    d.Set("memoryFree", Napi::Number::New(env, static_cast<double>(free)));
    Napi::Array features = Napi::Array::New(env);
    using GetFeatures = ggml_backend_feature* (*)(ggml_backend_reg_t);
    if (auto* get = reinterpret_cast<GetFeatures>(ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"))) {
      uint32_t k = 0;
      for (ggml_backend_feature* f = get(reg); f != nullptr && f->name != nullptr; f++) {
        features.Set(k++, std::string(f->name) + (std::string(f->value) == "1" ? "" : "=" + std::string(f->value)));
      }
    }
    d.Set("features", features);
    devices.Set(static_cast<uint32_t>(i), d);
  }
  return devices;
}

}  // namespace llama_napi
