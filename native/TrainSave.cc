// saveModel(model, path): llama_model_save_to_file off the event loop (native/Train.h).
#include <llama.h>

#include <exception>
#include <memory>
#include <string>

#include "Model.h"
#include "Train.h"
#include "TrainBusy.h"
#include "common.h"

namespace llama_napi {
namespace {

class SaveWorker : public Napi::AsyncWorker {
 public:
  SaveWorker(Napi::Env env, std::shared_ptr<ModelHandle> model, std::unique_ptr<BusyGuard> busy, std::string path,
             Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(env, "llama-napi:save"),
        model_(std::move(model)),
        busy_(std::move(busy)),
        path_(std::move(path)),
        deferred_(deferred) {}

  void Execute() override {
    try {
      llama_model_save_to_file(model_->model.get(), path_.c_str());
    } catch (const std::exception& e) {
      failure_ = {"ERR_INTERNAL", "Saving the model to " + path_ + " failed: " + e.what()};
    }
  }
  void OnOK() override {
    busy_.reset();
    if (RejectIfFailed(Env(), deferred_, failure_)) return;
    deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    busy_.reset();
    deferred_.Reject(e.Value());
  }

 private:
  std::shared_ptr<ModelHandle> model_;
  std::unique_ptr<BusyGuard> busy_;
  std::string path_;
  Napi::Promise::Deferred deferred_;
  Failure failure_;
};

}  // namespace

Napi::Value SaveModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  std::shared_ptr<ModelHandle> model = TrainableModel(env, info[0]);
  std::string path = args.String(1, "path");
  if (path.empty() || path.find('\0') != std::string::npos) {
    Throw(env, "ERR_INVALID_ARGUMENT", "path must be a non-empty path without NUL characters");
  }
  auto busy = std::make_unique<BusyGuard>(model->model.get());
  if (!busy->Acquire()) return Rejected(env, "ERR_BUSY", "This model is training or being saved: save it when that has settled");
  auto deferred = Napi::Promise::Deferred::New(env);
  (new SaveWorker(env, std::move(model), std::move(busy), std::move(path), deferred))->Queue();
  return deferred.Promise();
}

}  // namespace llama_napi
