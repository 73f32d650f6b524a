// Session: one sequence of a context's KV cache, with its token history. JS class: Session
// (src/session.ts).
#pragma once

#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "Engine.h"

namespace llama_napi {

class SessionWrap : public Napi::ObjectWrap<SessionWrap> {
 public:
  static Napi::Function Init(Napi::Env env);

  // new NativeSession(context): takes a free sequence of the context (ERR_NO_SEQUENCE if none).
  explicit SessionWrap(const Napi::CallbackInfo& info);
  ~SessionWrap() override;

 private:
  static SessionWrap* Of(Napi::Env env, Napi::Value value);
  void CheckUsable(Napi::Env env) const;  // not disposed, context alive
  void CheckIdle(Napi::Env env) const;    // usable and no job in flight

  Napi::Value Prompt(const Napi::CallbackInfo& info);
  // ERR_TOKEN_INVALID for an id outside the vocabulary ("<what> <id> at index <i> ...").
  void CheckTokens(Napi::Env env, const std::vector<int32_t>& input, const std::string& what) const;
  // Makes `input` the history (or appends it), keeping the cached prefix it shares; the rest is
  // left pending (from seq_->nKv on) for the engine (Engine::PlanLogits next). `generating`: room must be left for one
  // generated token. Throws (and changes nothing) when it does not fit.
  void PlanPrompt(Napi::Env env, const std::vector<int32_t>& input, bool append, bool generating);
  // Evaluates what the prompt left pending in the history (or resolves at once when nothing is).
  Napi::Value SubmitPrompt(Napi::Env env, const std::shared_ptr<EvalJob>& job);
  // An encoder-decoder model's prompt (native/SessionEncoder.cc): `append` false sets the encoder's
  // input and starts the decoder over; true adds decoder tokens. Returns the encoder input's
  // length when it changed (it is encoded at the next decode), else 0.
  size_t PrepareEncoderPrompt(Napi::Env env, const std::vector<int32_t>& input, bool append);
  Napi::Value EncoderTokens(const Napi::CallbackInfo& info);  // native/SessionEncoder.cc
  Napi::Value PromptMedia(const Napi::CallbackInfo& info);  // native/SessionMedia.cc
  Napi::Value Logits(const Napi::CallbackInfo& info);
  Napi::Float32Array LogitsView(Napi::Env env);  // the one Float32Array over the logits buffer
  void Generate(const Napi::CallbackInfo& info);
  void SetPaused(const Napi::CallbackInfo& info);
  void Abort(const Napi::CallbackInfo& info);
  Napi::Value History(const Napi::CallbackInfo& info);
  void Truncate(const Napi::CallbackInfo& info);
  Napi::Value Fork(const Napi::CallbackInfo& info);
  Napi::Value SaveState(const Napi::CallbackInfo& info);
  Napi::Value LoadState(const Napi::CallbackInfo& info);
  Napi::Value Trace(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo& info);
  void Release();

  std::shared_ptr<Engine> engine_;
  std::shared_ptr<SeqState> seq_;
  std::shared_ptr<Job> current_;                   // the job in flight, if any
  Napi::Reference<Napi::ArrayBuffer> logitsBuf_;   // backing store of seq_->logits
  Napi::Reference<Napi::Float32Array> logitsView_;
  bool disposed_ = false;
};

}  // namespace llama_napi
