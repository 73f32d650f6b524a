// Routing of llama.cpp / ggml log output.
//
// Messages at or above the process-wide level go to stderr (default: errors only; set with
// setLogLevel() or LLAMA_NAPI_LOG_LEVEL=debug|info|warn|error|none). Independently, a worker
// thread can capture the warnings and errors it causes (LogCapture), so that a failed load or
// context creation reports llama.cpp's own explanation in the error message.
#pragma once

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

}  // namespace llama_napi
