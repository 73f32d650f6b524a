// ggml's compute backends are modules (libggml-cpu-<variant>.so, libggml-cuda.so, ...) beside the
// addon; this loads the best of each kind once per process and reports what was loaded.
#pragma once

#include <napi.h>

#include <string>

namespace llama_napi {

// A backend module that was not loaded, or gave no device, and why.
struct UnavailableModule {
  std::string module;  // its file name
  std::string reason;
};

// Loads the backend modules from the addon's folder (or LLAMA_NAPI_BACKEND_DIR) and the one
// GGML_BACKEND_PATH names, as ggml_backend_load_all_from_path does (the best-scoring variant of
// each backend), except that a GPU module is loaded only where its driver library is (CUDA:
// libcuda.so.1 / nvcuda.dll; Vulkan: the loader). Idempotent.
void LoadBackends();

// A function the CPU backend exports, by name: through its registry (ggml_backend_reg_get_proc_address),
// else from the symbol table of the module (or addon) that holds it, for those the registry does
// not hand out (ggml_threadpool_pause). nullptr when there is no CPU backend or no such function.
void* CpuBackendSymbol(const char* name);

// [{module, reason}] for each module that was skipped, could not be loaded or gave no device.
Napi::Array UnavailableModules(Napi::Env env);

// The folder the modules were looked for in.
const std::string& BackendDir();

// [{name, description, backend, type, library, features}] for every device, where `library`
// is the module file the device comes from (e.g. libggml-cpu-haswell.so: the CPU variant).
Napi::Array DeviceList(Napi::Env env);

}  // namespace llama_napi
