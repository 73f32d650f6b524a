// Routing of llama.cpp / ggml log output.
//
// Messages at or above the process-wide level go to stderr (default: errors only; set with
// setLogLevel() or LLAMA_NAPI_LOG_LEVEL=debug|info|warn|error|none). Independently, a worker
// thread can capture the warnings and errors it causes (LogCapture), so that a failed load or
// context creation reports llama.cpp's own explanation in the error message.
#pragma once

#include <functional>
#include <string>

namespace llama_napi {

void InitLogging();
void SetLogLevel(int level);  // ggml_log_level: 1 debug .. 4 error, 5+ = none
int GetLogLevel();

// Collects warning/error log lines emitted on the current thread while it is alive.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // The captured lines, joined; the last `maxChars` characters at most.
  std::string Text(size_t maxChars = 600) const;
  void Append(const char* text);

 private:
  std::string text_;
  LogCapture* previous_;
};

// Sees every line (every level, continuations included) that llama.cpp or ggml logs on the
// current thread while it is alive, after it has been printed and captured. Observers nest:
// the innermost one sees the lines. The callback may throw a std::exception only when the
// llama.cpp call that logs catches it (llama_model_quantize does: Quantize.cc uses this to
// stop a quantisation between two tensors); the exception then unwinds llama.cpp's logging.
class LogObserver {
 public:
  using Callback = std::function<void(int level, const char* text)>;
  explicit LogObserver(Callback callback);
  ~LogObserver();
  LogObserver(const LogObserver&) = delete;
  LogObserver& operator=(const LogObserver&) = delete;

  void Notify(int level, const char* text) { callback_(level, text); }

 private:
  Callback callback_;
  LogObserver* previous_;
};

}  // namespace llama_napi
