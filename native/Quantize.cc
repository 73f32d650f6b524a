#include "Quantize.h"

#include "GgufCheck.h"

#include <llama.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include "common.h"
#include "log.h"

namespace llama_napi {
namespace {

// The quantisation types offered, by the names llama.cpp's llama-quantize tool uses.
struct QuantTypeEntry {
  const char* name;
  llama_ftype ftype;
};

const QuantTypeEntry kQuantTypes[] = {
    {"Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},     {"Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},
    {"Q4_1", LLAMA_FTYPE_MOSTLY_Q4_1},     {"Q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},
    {"Q5_1", LLAMA_FTYPE_MOSTLY_Q5_1},     {"Q2_K", LLAMA_FTYPE_MOSTLY_Q2_K},
    {"Q3_K_S", LLAMA_FTYPE_MOSTLY_Q3_K_S}, {"Q3_K_M", LLAMA_FTYPE_MOSTLY_Q3_K_M},
    {"Q3_K_L", LLAMA_FTYPE_MOSTLY_Q3_K_L}, {"Q4_K_S", LLAMA_FTYPE_MOSTLY_Q4_K_S},
    {"Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M}, {"Q5_K_S", LLAMA_FTYPE_MOSTLY_Q5_K_S},
    {"Q5_K_M", LLAMA_FTYPE_MOSTLY_Q5_K_M}, {"Q6_K", LLAMA_FTYPE_MOSTLY_Q6_K},
    {"IQ4_NL", LLAMA_FTYPE_MOSTLY_IQ4_NL}, {"IQ4_XS", LLAMA_FTYPE_MOSTLY_IQ4_XS},
    {"F16", LLAMA_FTYPE_MOSTLY_F16},       {"BF16", LLAMA_FTYPE_MOSTLY_BF16},
    {"F32", LLAMA_FTYPE_ALL_F32},
};

// Types whose tensors llama.cpp refuses to quantise without an importance matrix
// (tensor_requires_imatrix in src/llama-quant.cpp; IQ3_XS puts attn_q/attn_k and the middle
// ffn_gate/ffn_up layers in IQ3_XXS). This addon takes no imatrix, so they are refused up front.
const char* const kImatrixTypes[] = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S",
                                     "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S"};

std::string SupportedTypeList() {
  std::string out;
  for (const auto& t : kQuantTypes) out += (out.empty() ? "" : ", ") + std::string(t.name);
  return out;
}

// The llama_ftype of a type name; throws ERR_UNSUPPORTED / ERR_INVALID_ARGUMENT otherwise.
llama_ftype FtypeOf(Napi::Env env, const std::string& name) {
  for (const auto& t : kQuantTypes) {
    if (name == t.name) return t.ftype;
  }
  for (const char* t : kImatrixTypes) {
    if (name == t) {
      Throw(env, "ERR_UNSUPPORTED",
            "Quantisation type " + name + " needs an importance matrix (imatrix), which llama-napi does not take; " +
                "use a K-quant such as Q4_K_M or Q3_K_M instead, or llama.cpp's llama-quantize --imatrix");
    }
  }
  Throw(env, "ERR_INVALID_ARGUMENT", "Unknown quantisation type \"" + name + "\"; use one of " + SupportedTypeList());
}

// Thrown from the log observer to stop llama_model_quantize; it catches std::exception.
struct QuantizeAborted : std::exception {
  const char* what() const noexcept override { return "aborted by the caller"; }
};

// Parses llama-quant.cpp's per-tensor line "[  12/ 148] blk.0.attn_qkv.weight - ...".
bool ParseTensorLine(const char* text, int& index, int& count) {
  if (text[0] != '[') return false;
  return std::sscanf(text, "[%d/%d]", &index, &count) == 2 && index >= 1 && count >= index;
}

// llama.cpp's reason for a failure: the text after "failed to quantize: ", or the whole log.
std::string FailureReason(const std::string& log) {
  const std::string marker = "failed to quantize: ";
  size_t at = log.rfind(marker);
  std::string reason = at == std::string::npos ? log : log.substr(at + marker.size());
  return reason.empty() ? "no reason was logged (set LLAMA_NAPI_LOG_LEVEL=info to see llama.cpp's log)" : reason;
}

struct QuantizeJob {
  std::string input;
  std::string output;
  llama_ftype ftype;
  std::string typeName;
  int32_t threads;
  bool allowRequantize;
};

class QuantizeWorker : public Napi::AsyncProgressWorker<float> {
 public:
  QuantizeWorker(Napi::Env env, QuantizeJob job, std::shared_ptr<std::atomic<bool>> abort,
                 std::optional<Napi::Function> onProgress, Napi::Promise::Deferred deferred)
      : Napi::AsyncProgressWorker<float>(env, "llama-napi:quantize"),
        job_(std::move(job)),
        abort_(std::move(abort)),
        deferred_(deferred) {
    if (onProgress) onProgress_ = Napi::Persistent(*onProgress);
  }

  void Execute(const ExecutionProgress& progress) override {
    if (abort_->load()) {
      failure_ = {"ERR_ABORTED", "Quantising " + job_.input + " was aborted"};
      return;
    }
    // llama.cpp aborts the process on a few malformed header values: refuse them first.
    {
      GgufPtr header;
      failure_ = ReadGgufHeader(job_.input, header);
      if (failure_.ok()) failure_ = CheckLoadable(header.get(), job_.input);
      if (!failure_.ok()) return;
    }
    LogCapture capture;
    // llama_model_quantize has no callback; it logs one line per tensor before quantising it.
    // That line gives the progress, and is where an abort stops it: the exception unwinds from
    // llama_log_internal (C++, no worker threads running at that point) to llama_model_quantize's
    // catch (std::exception), whose RAII members close the output and free the model. The only
    // cost: llama_log_internal's heap buffer for a line over 128 bytes is not freed then.
    LogObserver observer([&](int level, const char* text) {
      int index = 0;
      int count = 0;
      if (level != GGML_LOG_LEVEL_INFO || !ParseTensorLine(text, index, count)) return;
      tensors_ = count;
      if (abort_->load()) throw QuantizeAborted();
      float p = static_cast<float>(index - 1) / static_cast<float>(count);
      progress.Send(&p, 1);
    });
    llama_model_quantize_params params = llama_model_quantize_default_params();
    params.nthread = job_.threads;
    params.ftype = job_.ftype;
    params.allow_requantize = job_.allowRequantize;
    const uint32_t rc = llama_model_quantize(job_.input.c_str(), job_.output.c_str(), &params);
    if (abort_->load()) {
      failure_ = {"ERR_ABORTED", "Quantising " + job_.input + " was aborted"};
    } else if (rc != 0) {
      failure_ = Classify(capture.Text(1000));
    }
    if (!failure_.ok()) {
      std::remove(job_.output.c_str());  // llama.cpp leaves what it wrote so far
    } else {
      float done = 1.0f;
      progress.Send(&done, 1);
    }
  }

  void OnProgress(const float* data, size_t count) override { ReportProgress(Env(), onProgress_, data, count); }

  void OnOK() override {
    Napi::Env env = Env();
    if (RejectIfFailed(env, deferred_, failure_)) return;
    Napi::Object result = Napi::Object::New(env);
    result.Set("tensors", Napi::Number::New(env, tensors_));
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Failure Classify(const std::string& log) const {
    std::string reason = FailureReason(log);
    if (log.find("requires an imatrix") != std::string::npos || log.find("Missing importance matrix") != std::string::npos) {
      return {"ERR_UNSUPPORTED", "Quantising to " + job_.typeName +
                                     " needs an importance matrix (imatrix) for this model; pick another type. "
                                     "llama.cpp said: " + reason};
    }
    if (log.find("requantizing from type") != std::string::npos) {
      return {"ERR_QUANTIZE", job_.input + " is already quantised: " + reason +
                                  ". Quantise from an F32/F16/BF16 file, or pass allowRequantize: true (quality suffers)."};
    }
    return {"ERR_QUANTIZE", "Quantising " + job_.input + " to " + job_.typeName + " failed: " + reason};
  }

  QuantizeJob job_;
  std::shared_ptr<std::atomic<bool>> abort_;
  Napi::FunctionReference onProgress_;
  Napi::Promise::Deferred deferred_;
  Failure failure_;
  int tensors_ = 0;
};

QuantizeJob ParseJob(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  QuantizeJob job;
  job.input = args.String(0, "input");
  job.output = args.String(1, "output");
  for (const std::string* p : {&job.input, &job.output}) {
    if (p->empty() || p->find('\0') != std::string::npos) {
      Throw(env, "ERR_INVALID_ARGUMENT", "input and output must be non-empty paths without NUL characters");
    }
  }
  Options opts(env, args.Object(2, "options"), "options");
  std::optional<std::string> type = opts.String("type");
  if (!type) opts.Fail("type", "a quantisation type name such as \"Q4_K_M\"");
  job.typeName = *type;
  job.ftype = FtypeOf(env, job.typeName);
  job.threads = static_cast<int32_t>(opts.Int("threads", 0, 1024).value_or(0));  // 0: all cores
  job.allowRequantize = opts.Bool("allowRequantize").value_or(false);
  return job;
}

}  // namespace

Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  QuantizeJob job = ParseJob(info);
  std::optional<Napi::Function> onProgress = Args(info).OptionalFunction(3, "onProgress");
  auto abort = std::make_shared<std::atomic<bool>>(false);
  auto deferred = Napi::Promise::Deferred::New(env);
  auto* worker = new QuantizeWorker(env, std::move(job), abort, onProgress, deferred);
  worker->Queue();
  Napi::Object out = Napi::Object::New(env);
  out.Set("promise", deferred.Promise());
  out.Set("abort", Napi::Function::New(
                       env, [abort](const Napi::CallbackInfo&) { abort->store(true); }, "abort"));
  return out;
}

}  // namespace llama_napi
