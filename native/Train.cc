#include "Train.h"

#include <ggml-opt.h>
#include <llama.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "Model.h"
#include "TrainBusy.h"
#include "common.h"

namespace llama_napi {
namespace {

struct TrainJob {
  std::vector<int32_t> tokens;
  uint32_t contextSize = 0;
  uint32_t batchSize = 0;
  int32_t epochs = 1;
  double learningRate = 0;
  double minLearningRate = 0;
  std::string schedule;  // constant | linear | cosine
  int64_t warmupSteps = 0;
  ggml_opt_optimizer_type optimizer = GGML_OPT_OPTIMIZER_TYPE_ADAMW;
  float weightDecay = 0, beta1 = 0.9f, beta2 = 0.999f, epsilon = 1e-8f;
  int64_t validationWindows = 0;
  int32_t threads = 1;
  bool shuffle = true;
  uint32_t seed = 0;
  std::set<std::string> tensors;  // the names that train
};

struct TrainEvent {
  bool epochEnd = false;
  int32_t epoch = 0;
  int64_t step = 0;  // optimizer steps done (1-based after the first)
  int64_t steps = 0;
  double loss = 0, accuracy = 0, learningRate = 0, tokensPerSecond = 0;
  double validationLoss = NAN, validationAccuracy = NAN;
};

using Worker = Napi::AsyncProgressQueueWorker<TrainEvent>;

// What the optimizer callbacks see (ggml's epoch callback has no user data: thread_local).
struct TrainRun {
  const TrainJob* job = nullptr;
  const Worker::ExecutionProgress* progress = nullptr;
  int32_t epoch = 0;
  int64_t step = 0;
  int64_t steps = 0;
  double lastLearningRate = 0;
  double epochLossSum = 0;
  int64_t epochSteps = 0;
  std::chrono::steady_clock::time_point last;
  // Param filter results.
  std::vector<std::string> trained;
  std::string notF32;
  std::string notWritable;
  bool mappedWeights = false;  // ModelHandle::mappedWeights
};
thread_local TrainRun* tRun = nullptr;

constexpr double kPi = 3.14159265358979323846;

double LearningRateAt(const TrainJob& job, int64_t step, int64_t steps) {
  double lr = job.learningRate;
  if (job.warmupSteps > 0 && step < job.warmupSteps) {
    lr = job.learningRate * static_cast<double>(step + 1) / static_cast<double>(job.warmupSteps);
  } else if (job.schedule != "constant") {
    const int64_t span = std::max<int64_t>(1, steps - job.warmupSteps);
    const double p = std::min(1.0, static_cast<double>(step - job.warmupSteps) / static_cast<double>(span));
    const double f = job.schedule == "cosine" ? 0.5 * (1 + std::cos(kPi * p)) : 1 - p;
    lr = job.minLearningRate + (job.learningRate - job.minLearningRate) * f;
  }
  return std::max(lr, 1e-12);  // ggml asserts alpha > 0
}

ggml_opt_optimizer_params OptimizerParams(void* userdata) {
  auto* run = static_cast<TrainRun*>(userdata);
  const TrainJob& job = *run->job;
  ggml_opt_optimizer_params p = ggml_opt_get_default_optimizer_params(nullptr);
  const float lr = static_cast<float>(LearningRateAt(job, run->step, run->steps));
  run->lastLearningRate = lr;
  p.adamw.alpha = lr;
  p.adamw.beta1 = job.beta1;
  p.adamw.beta2 = job.beta2;
  p.adamw.eps = job.epsilon;
  p.adamw.wd = job.weightDecay;
  p.sgd.alpha = lr;
  p.sgd.wd = job.weightDecay;
  return p;
}

bool ParamFilter(const ggml_tensor* tensor, void* userdata) {
  auto* run = static_cast<TrainRun*>(userdata);
  const std::string name = ggml_get_name(tensor);
  if (run->job->tensors.count(name) == 0) return false;
  // llama.cpp never trains these (llama_set_param skips them after the filter), whatever their type.
  if (name == "token_embd.weight" || name == "rope_freqs.weight") return false;
  if (tensor->type != GGML_TYPE_F32) {
    if (run->notF32.empty()) run->notF32 = name + " (" + ggml_type_name(tensor->type) + ")";
    return false;
  }
  // A CPU tensor of a memory-mapped model points into the read-only mapping of the file.
  if (run->notWritable.empty() && run->mappedWeights && tensor->buffer != nullptr && ggml_backend_buffer_is_host(tensor->buffer)) {
    run->notWritable = name;
  }
  run->trained.push_back(name);
  return true;
}

void StepCallback(bool train, ggml_opt_context_t, ggml_opt_dataset_t, ggml_opt_result_t result, int64_t, int64_t,
                  int64_t) {
  TrainRun* run = tRun;
  if (!train || run == nullptr) return;
  TrainEvent e;
  double unc = 0;
  ggml_opt_result_loss(result, &e.loss, &unc);
  ggml_opt_result_accuracy(result, &e.accuracy, &unc);
  ggml_opt_result_reset(result);
  e.learningRate = run->lastLearningRate;
  run->step++;
  const auto now = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(now - run->last).count();
  run->last = now;
  e.tokensPerSecond = seconds > 0 ? run->job->batchSize / seconds : 0;
  e.epoch = run->epoch;
  e.step = run->step;
  e.steps = run->steps;
  run->epochLossSum += e.loss;
  run->epochSteps++;
  run->progress->Send(&e, 1);
}

struct DatasetDeleter {
  void operator()(ggml_opt_dataset* d) const { ggml_opt_dataset_free(d); }
};
struct ResultDeleter {
  void operator()(ggml_opt_result* r) const { ggml_opt_result_free(r); }
};

class TrainWorker : public Worker {
 public:
  TrainWorker(Napi::Env env, std::shared_ptr<ModelHandle> model, std::unique_ptr<BusyGuard> busy, TrainJob job,
              std::shared_ptr<std::atomic<bool>> abort, Napi::Function onEvent, Napi::Promise::Deferred deferred)
      : Worker(env, "llama-napi:train"),
        model_(std::move(model)),
        busy_(std::move(busy)),
        job_(std::move(job)),
        abort_(std::move(abort)),
        onEvent_(Napi::Persistent(onEvent)),
        deferred_(deferred) {}

  void Execute(const ExecutionProgress& progress) override {
    try {
      Run(progress);
    } catch (const std::exception& e) {
      failure_ = {"ERR_INTERNAL", std::string("Training failed: ") + e.what()};
    }
    tRun = nullptr;
  }

  void OnProgress(const TrainEvent* events, size_t count) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    for (size_t i = 0; i < count; i++) {
      const TrainEvent& e = events[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("type", e.epochEnd ? "epoch" : "step");
      o.Set("epoch", e.epoch);
      o.Set("step", Napi::Number::New(env, static_cast<double>(e.step)));
      o.Set("steps", Napi::Number::New(env, static_cast<double>(e.steps)));
      o.Set("loss", e.loss);
      o.Set("accuracy", e.accuracy);
      o.Set("learningRate", e.learningRate);
      o.Set("tokensPerSecond", e.tokensPerSecond);
      if (e.epochEnd && !std::isnan(e.validationLoss)) {
        o.Set("validationLoss", e.validationLoss);
        o.Set("validationAccuracy", e.validationAccuracy);
      }
      // A throwing listener must not break training: the TS layer catches and rethrows later.
      onEvent_.Value().Call({o});
      if (env.IsExceptionPending()) env.GetAndClearPendingException();
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    busy_.reset();  // before the promise settles: `await train(...); await model.save(...)` works
    if (RejectIfFailed(env, deferred_, failure_)) return;
    Napi::Object r = Napi::Object::New(env);
    r.Set("steps", Napi::Number::New(env, static_cast<double>(steps_)));
    r.Set("epochs", epochs_);
    r.Set("aborted", aborted_);
    r.Set("trainWindows", Napi::Number::New(env, static_cast<double>(trainWindows_)));
    r.Set("validationWindows", Napi::Number::New(env, static_cast<double>(job_.validationWindows)));
    Napi::Array names = Napi::Array::New(env, trained_.size());
    for (size_t i = 0; i < trained_.size(); i++) names.Set(static_cast<uint32_t>(i), trained_[i]);
    r.Set("trainedTensors", names);
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error& e) override {
    busy_.reset();
    deferred_.Reject(e.Value());
  }

 private:
  void Run(const ExecutionProgress& progress) {
    llama_model* model = model_->model.get();
    if (llama_model_has_encoder(model)) {
      // llama_opt_epoch decodes without running the encoder first, which the decoder needs.
      failure_ = {"ERR_UNSUPPORTED", "Training an encoder-decoder or encoder-only model (T5 family) is not supported: train a decoder-only model"};
      return;
    }
    const uint32_t ctxSize = job_.contextSize;
    const int64_t windows = (static_cast<int64_t>(job_.tokens.size()) - 1) / ctxSize;
    trainWindows_ = windows - job_.validationWindows;
    if (trainWindows_ < 1) {
      failure_ = {"ERR_INVALID_ARGUMENT", "Not enough tokens for one training window"};
      return;
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = ctxSize;
    cp.n_batch = job_.batchSize;
    cp.n_ubatch = job_.batchSize;
    cp.n_seq_max = 1;
    cp.n_threads = job_.threads;
    cp.n_threads_batch = job_.threads;
    cp.type_k = GGML_TYPE_F32;  // OUT_PROD has no F16 backward
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    compat::ContextPtr ctx(llama_init_from_model(model, cp));
    if (!ctx) {
      failure_ = {"ERR_CONTEXT_CREATE", "Could not create the training context"};
      return;
    }
    if (llama_n_ctx(ctx.get()) != ctxSize) {
      failure_ = {"ERR_INVALID_ARGUMENT", "llama.cpp made a context of " + std::to_string(llama_n_ctx(ctx.get())) +
                                               " tokens for contextSize " + std::to_string(ctxSize)};
      return;
    }

    // llama_opt_epoch computes its graphs without setting the CPU backend's thread count, which
    // stays at ggml's default (4) until a decode sets it: decode one token first, so training runs
    // on job_.threads.
    {
      llama_token first = job_.tokens[0];
      if (llama_decode(ctx.get(), llama_batch_get_one(&first, 1)) != 0) {
        failure_ = {"ERR_DECODE", "The training context could not evaluate a token"};
        return;
      }
      llama_memory_clear(llama_get_memory(ctx.get()), true);
    }

    TrainRun run;
    run.job = &job_;
    run.progress = &progress;
    run.mappedWeights = model_->mappedWeights;
    run.steps = static_cast<int64_t>(job_.epochs) * trainWindows_ * (ctxSize / job_.batchSize);
    llama_opt_params op{};
    op.n_ctx_train = 0;
    op.param_filter = ParamFilter;
    op.param_filter_ud = &run;
    op.get_opt_pars = OptimizerParams;
    op.get_opt_pars_ud = &run;
    op.optimizer_type = job_.optimizer;
    llama_opt_init(ctx.get(), model, op);
    trained_ = run.trained;
    if (!run.notWritable.empty()) {
      failure_ = {"ERR_UNSUPPORTED", "The weights are read-only (" + run.notWritable +
                                         " is memory-mapped from the file): load the model with { useMmap: false } to train it"};
      return;
    }
    if (!run.notF32.empty()) {
      failure_ = {"ERR_UNSUPPORTED", "Training needs F32 weights; " + run.notF32 + " is not"};
      return;
    }
    if (trained_.empty()) {
      failure_ = {"ERR_INVALID_ARGUMENT", "None of the selected tensors can be trained by llama.cpp"};
      return;
    }

    std::unique_ptr<ggml_opt_dataset, DatasetDeleter> ds(
        ggml_opt_dataset_init(GGML_TYPE_I32, GGML_TYPE_I32, ctxSize, ctxSize, 1, 1));
    std::unique_ptr<ggml_opt_result, ResultDeleter> resultTrain(ggml_opt_result_init());
    std::unique_ptr<ggml_opt_result, ResultDeleter> resultEval(ggml_opt_result_init());
    auto* data = static_cast<int32_t*>(ggml_opt_dataset_data(ds.get())->data);
    auto* labels = static_cast<int32_t*>(ggml_opt_dataset_labels(ds.get())->data);
    auto load = [&](int64_t w) {
      std::memcpy(data, job_.tokens.data() + w * ctxSize, ctxSize * sizeof(int32_t));
      std::memcpy(labels, job_.tokens.data() + w * ctxSize + 1, ctxSize * sizeof(int32_t));
    };

    std::vector<int64_t> order(static_cast<size_t>(trainWindows_));
    for (int64_t i = 0; i < trainWindows_; i++) order[static_cast<size_t>(i)] = i;
    std::mt19937 rng(job_.seed);
    // The held-out loss before training, reported as epoch -1.
    auto validate = [&](TrainEvent& e) {
      for (int64_t w = trainWindows_; w < windows; w++) {
        load(w);
        llama_opt_epoch(ctx.get(), ds.get(), nullptr, resultEval.get(), 0, nullptr, nullptr);
      }
      double unc = 0;
      ggml_opt_result_loss(resultEval.get(), &e.validationLoss, &unc);
      ggml_opt_result_accuracy(resultEval.get(), &e.validationAccuracy, &unc);
      ggml_opt_result_reset(resultEval.get());
    };
    if (job_.validationWindows > 0 && !abort_->load()) {
      TrainEvent e;
      e.epochEnd = true;
      e.epoch = -1;
      e.steps = run.steps;
      e.loss = NAN;
      validate(e);
      progress.Send(&e, 1);
    }
    tRun = &run;
    for (int32_t epoch = 0; epoch < job_.epochs && !aborted_; epoch++) {
      run.epoch = epoch;
      run.epochLossSum = 0;
      run.epochSteps = 0;
      if (job_.shuffle) std::shuffle(order.begin(), order.end(), rng);
      for (int64_t w : order) {
        if (abort_->load()) {
          aborted_ = true;
          break;
        }
        load(w);
        run.last = std::chrono::steady_clock::now();
        llama_opt_epoch(ctx.get(), ds.get(), resultTrain.get(), nullptr, 1, StepCallback, nullptr);
      }
      if (aborted_) break;
      TrainEvent e;
      e.epochEnd = true;
      e.epoch = epoch;
      e.step = run.step;
      e.steps = run.steps;
      e.loss = run.epochSteps > 0 ? run.epochLossSum / run.epochSteps : NAN;
      e.learningRate = run.lastLearningRate;
      if (job_.validationWindows > 0) validate(e);
      progress.Send(&e, 1);
      epochs_ = epoch + 1;
    }
    steps_ = run.step;
    tRun = nullptr;
  }

  std::shared_ptr<ModelHandle> model_;
  std::unique_ptr<BusyGuard> busy_;
  TrainJob job_;
  std::shared_ptr<std::atomic<bool>> abort_;
  Napi::FunctionReference onEvent_;
  Napi::Promise::Deferred deferred_;
  Failure failure_;
  std::vector<std::string> trained_;
  int64_t steps_ = 0;
  int64_t trainWindows_ = 0;
  int32_t epochs_ = 0;
  bool aborted_ = false;
};

TrainJob ParseJob(Napi::Env env, const Args& args) {
  TrainJob job;
  job.tokens = args.Tokens(1, "tokens");
  Options o(env, args.Object(2, "options"), "train options");
  job.contextSize = static_cast<uint32_t>(o.Required(o.Int("contextSize", 1, 1 << 20), "contextSize"));
  job.batchSize = static_cast<uint32_t>(o.Required(o.Int("batchSize", 1, 1 << 20), "batchSize"));
  job.epochs = static_cast<int32_t>(o.Required(o.Int("epochs", 1, 1 << 20), "epochs"));
  job.learningRate = o.Required(o.Number("learningRate", 0, 1e6), "learningRate");
  job.minLearningRate = o.Required(o.Number("minLearningRate", 0, 1e6), "minLearningRate");
  job.schedule = o.Required(o.String("schedule"), "schedule");
  if (job.schedule != "constant" && job.schedule != "linear" && job.schedule != "cosine") o.Fail("schedule", "constant, linear or cosine");
  job.warmupSteps = o.Required(o.Int("warmupSteps", 0, int64_t(1) << 40), "warmupSteps");
  const std::string optimizer = o.Required(o.String("optimizer"), "optimizer");
  if (optimizer == "adamw") {
    job.optimizer = GGML_OPT_OPTIMIZER_TYPE_ADAMW;
  } else if (optimizer == "sgd") {
    job.optimizer = GGML_OPT_OPTIMIZER_TYPE_SGD;
  } else {
    o.Fail("optimizer", "\"adamw\" or \"sgd\"");
  }
  job.weightDecay = static_cast<float>(o.Required(o.Number("weightDecay", 0, 1), "weightDecay"));
  job.beta1 = static_cast<float>(o.Required(o.Number("beta1", 0, 1), "beta1"));
  job.beta2 = static_cast<float>(o.Required(o.Number("beta2", 0, 1), "beta2"));
  job.epsilon = static_cast<float>(o.Required(o.Number("epsilon", 0, 1), "epsilon"));
  job.validationWindows = o.Required(o.Int("validationWindows", 0, int64_t(1) << 40), "validationWindows");
  job.threads = static_cast<int32_t>(o.Required(o.Int("threads", 1, 1024), "threads"));
  job.shuffle = o.Required(o.Bool("shuffle"), "shuffle");
  job.seed = static_cast<uint32_t>(o.Required(o.Int("seed", 0, 0xffffffffLL), "seed"));
  for (const std::string& name : o.Required(o.StringArray("tensors", 1 << 20), "tensors")) job.tensors.insert(name);
  o.CheckAllRead();
  if (job.contextSize % job.batchSize != 0) o.Fail("batchSize", "a divisor of contextSize");
  if (job.learningRate <= 0) o.Fail("learningRate", "a number > 0");
  return job;
}

}  // namespace

std::shared_ptr<ModelHandle> TrainableModel(Napi::Env env, Napi::Value value) {
  std::shared_ptr<ModelHandle> handle = ModelWrap::HandleOf(env, value);
  if (handle->vocabOnly) Throw(env, "ERR_UNSUPPORTED", "A vocabulary-only model has no weights to train or save");
  if (handle->usesRpc) Throw(env, "ERR_UNSUPPORTED", "A model on RPC servers cannot be trained or saved");
  return handle;
}

Napi::Value Train(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  std::shared_ptr<ModelHandle> model = TrainableModel(env, info[0]);
  TrainJob job = ParseJob(env, args);
  Napi::Function onEvent = args.Function(3, "onEvent");
  // Marked busy here, on the JS thread, until the promise settles: a save() or another train()
  // made meanwhile is refused at once.
  auto busy = std::make_unique<BusyGuard>(model->model.get());
  if (!busy->Acquire()) Throw(env, "ERR_BUSY", "This model is already training or being saved");
  auto abort = std::make_shared<std::atomic<bool>>(false);
  auto deferred = Napi::Promise::Deferred::New(env);
  auto* worker = new TrainWorker(env, std::move(model), std::move(busy), std::move(job), abort, onEvent, deferred);
  worker->Queue();
  Napi::Object out = Napi::Object::New(env);
  out.Set("promise", deferred.Promise());
  out.Set("abort", Napi::Function::New(env, [abort](const Napi::CallbackInfo&) { abort->store(true); }, "abort"));
  return out;
}

void RegisterTrain(Napi::Env env, Napi::Object exports) {
  exports.Set("train", Napi::Function::New<Train>(env, "train"));
  exports.Set("saveModel", Napi::Function::New<SaveModel>(env, "saveModel"));
}

}  // namespace llama_napi
