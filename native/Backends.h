// ggml's compute backends are modules (libggml-cpu-<variant>.so, libggml-cuda.so, ...) beside the
// addon; this loads the best of each kind once per process and reports what was loaded.
#pragma once

#include <napi.h>

#include <string>

namespace llama_napi {

// Loads the backend modules from the addon's folder (or LLAMA_NAPI_BACKEND_DIR). Idempotent.
void LoadBackends();

// The folder the modules were looked for in.
const std::string& BackendDir();

// [{name, description, backend, type, library, features}] for every device, where `library`
// is the module file the device comes from (e.g. libggml-cpu-haswell.so: the CPU variant).
Napi::Array DeviceList(Napi::Env env);

}  // namespace llama_napi
