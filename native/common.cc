#include "common.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace llama_napi {

AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

void AddonData::TrackEngine(const std::shared_ptr<Engine>& engine) {
  engines.erase(std::remove_if(engines.begin(), engines.end(), [](const auto& w) { return w.expired(); }), engines.end());
  engines.push_back(engine);
}

bool RejectIfFailed(Napi::Env env, Napi::Promise::Deferred& deferred, const Failure& failure) {
  if (failure.ok()) return false;
  deferred.Reject(MakeError(env, failure.code, failure.message).Value());
  return true;
}

void ReportProgress(Napi::Env env, const Napi::FunctionReference& onProgress, const float* data, size_t count) {
  if (count == 0 || onProgress.IsEmpty()) return;
  Napi::HandleScope scope(env);
  try {
    onProgress.Call({Napi::Number::New(env, data[count - 1])});
  } catch (const Napi::Error&) {
  }
}

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  AddonData* data = env.GetInstanceData<AddonData>();
  if (data != nullptr && !data->errorFactory.IsEmpty()) {
    Napi::Value err = data->errorFactory.Call({Napi::String::New(env, code), Napi::String::New(env, message)});
    if (err.IsObject()) return Napi::Error(env, err);
  }
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

void Throw(Napi::Env env, const std::string& code, const std::string& message) {
  throw MakeError(env, code, message);
}

Napi::Value Rejected(Napi::Env env, const std::string& code, const std::string& message) {
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(MakeError(env, code, message).Value());
  return deferred.Promise();
}

namespace {

std::string TypeName(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "a boolean";
    case napi_number: return "a number";
    case napi_string: return "a string";
    case napi_symbol: return "a symbol";
    case napi_object: return v.IsArray() ? "an array" : "an object";
    case napi_function: return "a function";
    case napi_external: return "an external";
    case napi_bigint: return "a bigint";
  }
  return "a value";
}

[[noreturn]] void BadArg(Napi::Env env, const std::string& name, const std::string& expected, const Napi::Value& got) {
  Throw(env, "ERR_INVALID_ARGUMENT", name + " must be " + expected + "; got " + TypeName(got));
}

int64_t CheckedInt(Napi::Env env, const Napi::Value& v, const std::string& name, int64_t min, int64_t max) {
  if (!v.IsNumber()) BadArg(env, name, "an integer", v);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d) {
    Throw(env, "ERR_INVALID_ARGUMENT", name + " must be an integer; got " + std::to_string(d));
  }
  if (d < static_cast<double>(min) || d > static_cast<double>(max)) {
    Throw(env, "ERR_INVALID_ARGUMENT",
          name + " must be between " + std::to_string(min) + " and " + std::to_string(max) + "; got " +
              std::to_string(static_cast<long long>(d)));
  }
  return static_cast<int64_t>(d);
}

}  // namespace

std::string Args::String(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : env_.Undefined();
  if (!v.IsString()) BadArg(env_, name, "a string", v);
  return v.As<Napi::String>().Utf8Value();
}

int64_t Args::Int(size_t i, const char* name, int64_t min, int64_t max) const {
  Napi::Value v = i < info_.Length() ? info_[i] : env_.Undefined();
  return CheckedInt(env_, v, name, min, max);
}

bool Args::Bool(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : env_.Undefined();
  if (!v.IsBoolean()) BadArg(env_, name, "a boolean", v);
  return v.As<Napi::Boolean>().Value();
}

Napi::Object Args::Object(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : env_.Undefined();
  if (!v.IsObject() || v.IsArray()) BadArg(env_, name, "an object", v);
  return v.As<Napi::Object>();
}

Napi::Object Args::OptionalObject(size_t i, const char* name) const {
  if (IsMissing(i)) return Napi::Object::New(env_);
  return Object(i, name);
}

Napi::Function Args::Function(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : env_.Undefined();
  if (!v.IsFunction()) BadArg(env_, name, "a function", v);
  return v.As<Napi::Function>();
}

std::optional<Napi::Function> Args::OptionalFunction(size_t i, const char* name) const {
  if (IsMissing(i) || info_[i].IsNull()) return std::nullopt;
  return Function(i, name);
}

std::vector<int32_t> Args::Tokens(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : env_.Undefined();
  return TokensFrom(env_, v, name);
}

std::vector<int32_t> TokensFrom(Napi::Env env, Napi::Value v, const char* name) {
  if (v.IsTypedArray()) {
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() != napi_int32_array) BadArg(env, name, "an Int32Array or an array of integers", v);
    Napi::Int32Array arr = v.As<Napi::Int32Array>();
    return std::vector<int32_t>(arr.Data(), arr.Data() + arr.ElementLength());
  }
  if (!v.IsArray()) BadArg(env, name, "an Int32Array or an array of integers", v);
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<int32_t> out(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    out[k] = static_cast<int32_t>(CheckedInt(env, arr.Get(k), std::string(name) + "[" + std::to_string(k) + "]",
                                             std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()));
  }
  return out;
}

Napi::Int32Array ToInt32Array(Napi::Env env, const int32_t* data, size_t n) {
  Napi::Int32Array arr = Napi::Int32Array::New(env, n);
  if (n > 0) std::memcpy(arr.Data(), data, n * sizeof(int32_t));
  return arr;
}

Napi::Value Options::Get(const char* key) const {
  read_.emplace_back(key);
  return obj_.Get(key);
}

void Options::MissingDefault(const char* key) const {
  Throw(env_, "ERR_INTERNAL", what_ + "." + key + " is missing: the option tables in src/options/ set every default");
}

void Options::CheckAllRead() const {
  Napi::Array names = obj_.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    Napi::Value name = names.Get(i);
    if (!name.IsString()) continue;
    std::string key = name.As<Napi::String>().Utf8Value();
    if (std::find(read_.begin(), read_.end(), key) != read_.end()) continue;
    if (obj_.Get(key).IsUndefined()) continue;
    Throw(env_, "ERR_INTERNAL", what_ + "." + key + " is an option the native layer does not read");
  }
}

void Options::Fail(const char* key, const std::string& expected) const {
  Napi::Value v = Get(key);
  BadArg(env_, what_ + "." + key, expected, v);
}

std::optional<Napi::Value> Options::Raw(const char* key) const {
  Napi::Value v = Get(key);
  if (v.IsUndefined()) return std::nullopt;
  return v;
}

std::optional<int64_t> Options::Int(const char* key, int64_t min, int64_t max) const {
  Napi::Value v = Get(key);
  if (v.IsUndefined()) return std::nullopt;
  return CheckedInt(env_, v, what_ + "." + key, min, max);
}

std::optional<double> Options::Number(const char* key, double min, double max) const {
  Napi::Value v = Get(key);
  if (v.IsUndefined()) return std::nullopt;
  if (!v.IsNumber()) Fail(key, "a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (std::isnan(d) || d < min || d > max) {
    Throw(env_, "ERR_INVALID_ARGUMENT",
          what_ + "." + key + " must be a number between " + std::to_string(min) + " and " + std::to_string(max) +
              "; got " + std::to_string(d));
  }
  return d;
}

std::optional<bool> Options::Bool(const char* key) const {
  Napi::Value v = Get(key);
  if (v.IsUndefined()) return std::nullopt;
  if (!v.IsBoolean()) Fail(key, "a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::optional<std::string> Options::String(const char* key) const {
  Napi::Value v = Get(key);
  if (v.IsUndefined()) return std::nullopt;
  if (!v.IsString()) Fail(key, "a string");
  return v.As<Napi::String>().Utf8Value();
}

std::optional<std::vector<std::string>> Options::StringArray(const char* key, size_t maxItems) const {
  Napi::Value v = Get(key);
  if (v.IsUndefined()) return std::nullopt;
  if (!v.IsArray()) Fail(key, "an array of strings");
  Napi::Array arr = v.As<Napi::Array>();
  if (arr.Length() > maxItems) {
    Throw(env_, "ERR_INVALID_ARGUMENT",
          what_ + "." + key + " may hold at most " + std::to_string(maxItems) + " items");
  }
  std::vector<std::string> out;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value item = arr.Get(i);
    if (!item.IsString()) Fail(key, "an array of strings");
    out.push_back(item.As<Napi::String>().Utf8Value());
  }
  return out;
}

std::optional<Napi::Object> Options::Object(const char* key) const {
  Napi::Value v = Get(key);
  if (v.IsUndefined()) return std::nullopt;
  if (!v.IsObject()) Fail(key, "an object");
  return v.As<Napi::Object>();
}

}  // namespace llama_napi
