// Shared helpers for the addon: typed errors, checked argument access and per-env data.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llama_napi {

class Engine;

// Per-env data (one per Node.js main thread or worker_thread that loads the addon).
struct AddonData {
  // The context engines of this env, so that their threads can be stopped when the process or
  // the worker exits (stopThreads() in addon.cc). JS thread only.
  std::vector<std::weak_ptr<Engine>> engines;
  void TrackEngine(const std::shared_ptr<Engine>& engine);

  Napi::FunctionReference errorFactory;  // (code, message) => LlamaError, set by the TS layer
  Napi::FunctionReference modelCtor;
  Napi::FunctionReference contextCtor;
  Napi::FunctionReference sessionCtor;
};

AddonData& GetAddonData(Napi::Env env);

// Makes an error object with a stable `code` (a LlamaError when the TS layer registered its
// factory, a plain Error with a `code` property otherwise).
Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message);
[[noreturn]] void Throw(Napi::Env env, const std::string& code, const std::string& message);

// A rejected promise, for errors found before any async work starts.
Napi::Value Rejected(Napi::Env env, const std::string& code, const std::string& message);

// An error produced on a worker thread, turned into a JS error on the JS thread.
struct Failure {
  std::string code;
  std::string message;
  bool ok() const { return code.empty(); }
};

// Settles `deferred` from an AsyncWorker's OnOK: rejects it with `failure` and returns true when
// there is one (the caller then resolves it otherwise).
bool RejectIfFailed(Napi::Env env, Napi::Promise::Deferred& deferred, const Failure& failure);

// Calls an onProgress(fraction) callback (if any) with the latest of the fractions an
// AsyncProgressWorker delivered. A throwing callback must not break the work: its error is dropped.
void ReportProgress(Napi::Env env, const Napi::FunctionReference& onProgress, const float* data, size_t count);

// Checked access to positional arguments. Every accessor validates the JS type and range and
// throws ERR_INVALID_ARGUMENT with the argument's name otherwise.
class Args {
 public:
  explicit Args(const Napi::CallbackInfo& info) : info_(info), env_(info.Env()) {}

  size_t Length() const { return info_.Length(); }
  bool IsMissing(size_t i) const { return i >= info_.Length() || info_[i].IsUndefined(); }

  std::string String(size_t i, const char* name) const;
  int64_t Int(size_t i, const char* name, int64_t min, int64_t max) const;
  bool Bool(size_t i, const char* name) const;
  Napi::Object Object(size_t i, const char* name) const;
  Napi::Object OptionalObject(size_t i, const char* name) const;  // {} when missing
  Napi::Function Function(size_t i, const char* name) const;
  std::optional<Napi::Function> OptionalFunction(size_t i, const char* name) const;
  std::vector<int32_t> Tokens(size_t i, const char* name) const;  // Int32Array or number[]

 private:
  const Napi::CallbackInfo& info_;
  Napi::Env env_;
};

// Checked access to the fields of an options object; a missing or undefined field gives nullopt.
// The option tables in src/options/ check values and fill in defaults before they get here; the
// native side checks types again (and what only it can check, like token ids), and with
// Required()/CheckAllRead() insists that it and the table agree on the names.
class Options {
 public:
  Options(Napi::Env env, Napi::Object obj, std::string what) : env_(env), obj_(obj), what_(std::move(what)) {}

  // A value the TS layer always sets (its table has a default): missing is an internal error.
  template <class T>
  T Required(std::optional<T> value, const char* key) const {
    if (!value) MissingDefault(key);
    return *value;
  }
  // Throws ERR_INTERNAL naming any field of the object that no accessor read: an option in a
  // table in src/options/ that the native layer does not use.
  void CheckAllRead() const;

  std::optional<int64_t> Int(const char* key, int64_t min, int64_t max) const;
  std::optional<double> Number(const char* key, double min, double max) const;
  std::optional<bool> Bool(const char* key) const;
  std::optional<std::string> String(const char* key) const;
  std::optional<std::vector<std::string>> StringArray(const char* key, size_t maxItems) const;
  std::optional<Napi::Object> Object(const char* key) const;
  std::optional<Napi::Value> Raw(const char* key) const;

  [[noreturn]] void Fail(const char* key, const std::string& expected) const;

 private:
  Napi::Value Get(const char* key) const;
  [[noreturn]] void MissingDefault(const char* key) const;

  Napi::Env env_;
  Napi::Object obj_;
  std::string what_;
  mutable std::vector<std::string> read_;
};

// Tokens from a JS value (Int32Array or array of integers); throws ERR_INVALID_ARGUMENT.
std::vector<int32_t> TokensFrom(Napi::Env env, Napi::Value v, const char* name);

Napi::Int32Array ToInt32Array(Napi::Env env, const int32_t* data, size_t n);

}  // namespace llama_napi
