// Which models are training or being saved (native/Train.cc, native/TrainSave.cc): one such job
// per model at a time, marked on the JS thread when the job is made and cleared before its
// promise settles.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <set>

#include "Model.h"

struct llama_model;

namespace llama_napi {

class BusyGuard {
 public:
  explicit BusyGuard(const llama_model* m) : model_(m) {}
  BusyGuard(const BusyGuard&) = delete;
  BusyGuard& operator=(const BusyGuard&) = delete;
  bool Acquire() {
    std::lock_guard<std::mutex> lock(Mu());
    acquired_ = Busy().insert(model_).second;
    return acquired_;
  }
  ~BusyGuard() {
    if (!acquired_) return;
    std::lock_guard<std::mutex> lock(Mu());
    Busy().erase(model_);
  }

 private:
  static std::mutex& Mu() {
    static std::mutex mu;
    return mu;
  }
  static std::set<const llama_model*>& Busy() {
    static std::set<const llama_model*> busy;
    return busy;
  }
  const llama_model* model_;
  bool acquired_ = false;
};

// The wrapped model of a JS value, refusing vocabulary-only and RPC models (ERR_UNSUPPORTED).
std::shared_ptr<ModelHandle> TrainableModel(Napi::Env env, Napi::Value value);

}  // namespace llama_napi
