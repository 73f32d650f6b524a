#include "log.h"

#include <llama.h>

#include "mtmd-helper.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace llama_napi {
namespace {

std::atomic<int> g_level{GGML_LOG_LEVEL_ERROR};
thread_local LogCapture* t_capture = nullptr;
thread_local LogObserver* t_observer = nullptr;
thread_local int t_lastLevel = GGML_LOG_LEVEL_INFO;

void OnLog(ggml_log_level level, const char* text, void* /*user*/) {
  int effective = level == GGML_LOG_LEVEL_CONT ? t_lastLevel : static_cast<int>(level);
  t_lastLevel = effective;
  if (t_capture != nullptr && effective >= GGML_LOG_LEVEL_WARN) t_capture->Append(text);
  if (effective >= g_level.load(std::memory_order_relaxed) && effective <= GGML_LOG_LEVEL_ERROR) {
    std::fputs(text, stderr);
  }
  if (t_observer != nullptr) t_observer->Notify(effective, text);  // may throw: see log.h
}

int LevelFromEnv() {
  const char* v = std::getenv("LLAMA_NAPI_LOG_LEVEL");
  if (v == nullptr) return GGML_LOG_LEVEL_ERROR;
  if (std::strcmp(v, "debug") == 0) return GGML_LOG_LEVEL_DEBUG;
  if (std::strcmp(v, "info") == 0) return GGML_LOG_LEVEL_INFO;
  if (std::strcmp(v, "warn") == 0) return GGML_LOG_LEVEL_WARN;
  if (std::strcmp(v, "none") == 0) return GGML_LOG_LEVEL_CONT;
  return GGML_LOG_LEVEL_ERROR;
}

}  // namespace

void InitLogging() {
  g_level.store(LevelFromEnv());
  llama_log_set(OnLog, nullptr);
  mtmd_helper_log_set(OnLog, nullptr);  // libmtmd (projectors) logs on its own
}

void SetLogLevel(int level) { g_level.store(level); }
int GetLogLevel() { return g_level.load(); }

LogCapture::LogCapture() : previous_(t_capture) { t_capture = this; }
LogCapture::~LogCapture() { t_capture = previous_; }

LogObserver::LogObserver(Callback callback) : callback_(std::move(callback)), previous_(t_observer) { t_observer = this; }
LogObserver::~LogObserver() { t_observer = previous_; }

void LogCapture::Append(const char* text) {
  if (text_.size() < 64 * 1024) text_ += text;
}

std::string LogCapture::Text(size_t maxChars) const {
  std::string s = text_;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  if (s.size() > maxChars) s = "..." + s.substr(s.size() - maxChars);
  return s;
}

}  // namespace llama_napi
