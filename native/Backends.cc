#include "Backends.h"

#include <ggml-backend.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <vector>

#include "log.h"

#ifdef _WIN32
#include <windows.h>
#else
#include <dlfcn.h>
#endif

namespace llama_napi {
namespace {

std::string g_dir;

#ifdef _WIN32
const char kSeparator = '\\';
#else
const char kSeparator = '/';
#endif

#ifdef _WIN32
// Paths are UTF-8 strings here (as ggml takes them); Windows' own calls take UTF-16.
std::wstring Widen(const std::string& utf8) {
  const int n = MultiByteToWideChar(CP_UTF8, 0, utf8.c_str(), -1, nullptr, 0);
  if (n <= 0) return L"";
  std::wstring out(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, 0, utf8.c_str(), -1, out.data(), n);
  out.resize(static_cast<size_t>(n - 1));
  return out;
}

std::string Narrow(const wchar_t* wide) {
  const int n = WideCharToMultiByte(CP_UTF8, 0, wide, -1, nullptr, 0, nullptr, nullptr);
  if (n <= 0) return "";
  std::string out(static_cast<size_t>(n), '\0');
  WideCharToMultiByte(CP_UTF8, 0, wide, -1, out.data(), n, nullptr, nullptr);
  out.resize(static_cast<size_t>(n - 1));
  return out;
}
#endif

// The file that holds the code or data at `address` (the addon, or a backend module), in UTF-8.
std::string ModuleOf(const void* address) {
#ifdef _WIN32
  HMODULE module = nullptr;
  wchar_t path[32768] = {0};
  if (GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                         static_cast<LPCWSTR>(address), &module) &&
      GetModuleFileNameW(module, path, 32768) > 0) {
    return Narrow(path);
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

// ggml_backend_load_all_from_path's list and order (ggml-backend-reg.cpp), so that this loader
// picks what ggml's would.
const char* const kBackendNames[] = {"blas", "zendnn", "cann", "cuda", "hip", "metal", "rpc", "sycl", "vulkan",
                                     "virtgpu", "opencl", "hexagon", "musa", "openvino", "cpu"};

#ifdef _WIN32
const char* const kLibPrefix = "";
const char* const kLibSuffix = ".dll";
#else
const char* const kLibPrefix = "lib";
const char* const kLibSuffix = ".so";
#endif

std::vector<UnavailableModule> g_unavailable;

// A dlopen'ed library, closed when it goes; the loader's error text when it failed.
class Library {
 public:
  explicit Library(const std::string& path) {
#ifdef _WIN32
    // No error dialog for a missing DLL (as ggml's own loader).
    const UINT mode = SetErrorMode(SEM_FAILCRITICALERRORS);
    SetErrorMode(mode | SEM_FAILCRITICALERRORS);
    handle_ = LoadLibraryW(Widen(path).c_str());
    const DWORD code = GetLastError();
    SetErrorMode(mode);
    if (handle_ == nullptr) {
      wchar_t text[512] = {0};
      FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr, code, 0, text, 512, nullptr);
      error_ = Narrow(text);
      while (!error_.empty() && (error_.back() == '\n' || error_.back() == '\r' || error_.back() == ' ')) error_.pop_back();
      error_ += " (error " + std::to_string(code) + ")";
    }
#else
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) {
      const char* text = dlerror();
      error_ = text != nullptr ? text : "unknown error";
    }
#endif
  }
  ~Library() {
    if (handle_ == nullptr) return;
#ifdef _WIN32
    FreeLibrary(handle_);
#else
    dlclose(handle_);
#endif
  }
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;

  bool ok() const { return handle_ != nullptr; }
  const std::string& error() const { return error_; }
  void* Symbol(const char* name) const {
#ifdef _WIN32
    return reinterpret_cast<void*>(GetProcAddress(handle_, name));
#else
    return dlsym(handle_, name);
#endif
  }

 private:
#ifdef _WIN32
  HMODULE handle_ = nullptr;
#else
  void* handle_ = nullptr;
#endif
  std::string error_;
};

// The driver library a GPU backend needs at run time but may not link to (ggml-cuda built
// without VMM reaches libcuda only through libcudart, which fails late and vaguely without it);
// nullptr for a backend without such a check.
const char* DriverLibrary(const std::string& backend) {
#ifdef _WIN32
  if (backend == "cuda") return "nvcuda.dll";
  if (backend == "vulkan") return "vulkan-1.dll";
#else
  if (backend == "cuda") return "libcuda.so.1";
  if (backend == "vulkan") return "libvulkan.so.1";
#endif
  return nullptr;
}

std::string DriverName(const std::string& backend) {
  if (backend == "cuda") return "the NVIDIA driver";
  if (backend == "vulkan") return "a Vulkan loader";
  return "its driver";
}

// The backend a module file is for ("cuda" for libggml-cuda.so), or "" for none of ggml's.
std::string BackendOfFile(const std::string& file) {
  const std::string prefix = std::string(kLibPrefix) + "ggml-";
  if (file.rfind(prefix, 0) != 0 || file.size() <= std::strlen(kLibSuffix) ||
      file.compare(file.size() - std::strlen(kLibSuffix), std::string::npos, kLibSuffix) != 0) {
    return "";
  }
  std::string rest = file.substr(prefix.size(), file.size() - prefix.size() - std::strlen(kLibSuffix));
  for (const char* name : kBackendNames) {
    if (rest == name || rest.rfind(std::string(name) + "-", 0) == 0) return name;
  }
  return "";
}

// Loads one module into ggml's registry, unless the driver it needs is missing, it cannot be
// loaded, or it gives no device (a GPU module): those are listed in g_unavailable with why.
void LoadModule(const std::string& path, const std::string& backend) {
  const bool isGpu = backend != "cpu" && backend != "rpc" && backend != "blas";
  if (const char* driver = isGpu ? DriverLibrary(backend) : nullptr) {
    Library probe(driver);
    if (!probe.ok()) {
      g_unavailable.push_back({BaseName(path), "not loaded: " + DriverName(backend) + " (" + driver + ") is not installed: " + probe.error()});
      return;
    }
  }
  Library library(path);  // its loader error, which ggml's own attempt would only log
  if (!library.ok()) {
    g_unavailable.push_back({BaseName(path), "cannot be loaded: " + library.error()});
    return;
  }
  LogCapture capture;
  ggml_backend_reg_t reg = ggml_backend_load(path.c_str());
  if (reg == nullptr) {
    g_unavailable.push_back({BaseName(path), "ggml could not register it: " + capture.Text(300)});
  } else if (isGpu && ggml_backend_reg_dev_count(reg) == 0) {
    std::string why = capture.Text(300);
    g_unavailable.push_back({BaseName(path), "loaded, but found no device (no GPU, or the driver cannot see it)" + (why.empty() ? "" : ": " + why)});
  }
}

// Of the variants of one backend in `dir` (libggml-cpu-haswell.so, ...), the one whose
// ggml_backend_score is highest; the plain module (libggml-cpu.so) where none scores. As ggml's
// ggml_backend_load_best.
std::string BestModule(const std::string& dir, const std::string& name, const std::vector<std::string>& files) {
  const std::string variantPrefix = std::string(kLibPrefix) + "ggml-" + name + "-";
  const std::string plain = std::string(kLibPrefix) + "ggml-" + name + kLibSuffix;
  int bestScore = 0;
  std::string best;
  bool hasPlain = false;
  for (const std::string& file : files) {
    if (file == plain) hasPlain = true;
    if (file.rfind(variantPrefix, 0) != 0 || BackendOfFile(file) != name) continue;
    Library candidate(dir + kSeparator + file);
    if (!candidate.ok()) continue;
    using Score = int (*)();
    auto score = reinterpret_cast<Score>(candidate.Symbol("ggml_backend_score"));
    int s = score != nullptr ? score() : 0;
    if (s > bestScore) {
      bestScore = s;
      best = file;
    }
  }
  if (bestScore == 0) return hasPlain ? plain : "";
  return best;
}

// ggml_backend_load_all_from_path(dir), with the GPU modules loaded only where their driver is.
void LoadBackendModules(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(std::filesystem::u8path(dir), std::filesystem::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code typeError;
    if (it->is_regular_file(typeError)) files.push_back(it->path().filename().u8string());
  }
  std::sort(files.begin(), files.end());
  for (const char* name : kBackendNames) {
    std::string best = BestModule(dir, name, files);
    if (!best.empty()) LoadModule(dir + kSeparator + best, name);
  }
  // An out-of-tree module (a GPU package's: src/native.ts), as ggml reads GGML_BACKEND_PATH.
  const char* extra = std::getenv("GGML_BACKEND_PATH");
  if (extra != nullptr && *extra != '\0') LoadModule(extra, BackendOfFile(BaseName(extra)));
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
    LoadBackendModules(g_dir);
  });
}

const std::string& BackendDir() { return g_dir; }

void* CpuBackendSymbol(const char* name) {
  ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  if (cpu == nullptr) return nullptr;
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu);
  if (void* f = ggml_backend_reg_get_proc_address(reg, name)) return f;
#ifdef _WIN32
  HMODULE module = nullptr;
  if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT, reinterpret_cast<LPCWSTR>(reg), &module)) {
    return nullptr;
  }
  return reinterpret_cast<void*>(GetProcAddress(module, name));
#else
  Dl_info info;
  if (dladdr(reg, &info) == 0 || info.dli_fname == nullptr) return nullptr;
  void* handle = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);  // already loaded: no new load
  if (handle == nullptr) return nullptr;
  void* f = dlsym(handle, name);
  dlclose(handle);  // the module stays loaded (ggml holds it)
  return f;
#endif
}

Napi::Array UnavailableModules(Napi::Env env) {
  Napi::Array out = Napi::Array::New(env);
  for (size_t i = 0; i < g_unavailable.size(); i++) {
    Napi::Object m = Napi::Object::New(env);
    m.Set("module", g_unavailable[i].module);
    m.Set("reason", g_unavailable[i].reason);
    out.Set(static_cast<uint32_t>(i), m);
  }
  return out;
}

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
