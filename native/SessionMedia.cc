// session.promptMedia(text, media, append, addSpecial, parseSpecial): a prompt with images or
// audio (src/media.ts builds the text with libmtmd's marker, one per item). Evaluated as a task
// on the engine thread (Engine::RunMediaPrompt): decoding, preprocessing and encoding the media
// are slow and must stay off the event loop.
#include "EngineMedia.h"
#include "Session.h"

namespace llama_napi {

Napi::Value SessionWrap::PromptMedia(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  CheckIdle(env);
  auto prompt = std::make_shared<MediaPrompt>();
  prompt->text = args.String(0, "text");
  if (!info[1].IsArray()) Throw(env, "ERR_INVALID_ARGUMENT", "media must be an array of Uint8Arrays");
  Napi::Array items = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < items.Length(); i++) {
    Napi::Value item = items.Get(i);
    if (!item.IsTypedArray() || item.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      Throw(env, "ERR_INVALID_ARGUMENT", "media[" + std::to_string(i) + "] must be a Uint8Array");
    }
    Napi::Uint8Array bytes = item.As<Napi::Uint8Array>();
    if (bytes.ByteLength() == 0) Throw(env, "ERR_MEDIA_INVALID", "Media item " + std::to_string(i) + " is empty (0 bytes)");
    // A copy: the engine thread reads it, and the caller may change its buffer meanwhile.
    prompt->media.emplace_back(bytes.Data(), bytes.Data() + bytes.ByteLength());
  }
  prompt->append = args.Bool(2, "append");
  prompt->addSpecial = args.Bool(3, "addSpecial");
  prompt->parseSpecial = args.Bool(4, "parseSpecial");
  if (engine_->model()->vocabOnly) Throw(env, "ERR_STATE", "A vocabOnly model cannot evaluate prompts");
  if (!engine_->model()->projector()) {
    Throw(env, "ERR_STATE", "This model has no projector for images or audio: load one with model.loadProjector(path) or loadModel(path, { projector })");
  }
  if (engine_->embeddings()) Throw(env, "ERR_STATE", "An embedding context does not evaluate prompts with media");
  if (engine_->encoderDecoder()) Throw(env, "ERR_UNSUPPORTED", "Images and audio with an encoder-decoder model are not supported");

  auto job = std::make_shared<TaskJob>();
  job->seq = seq_;
  Engine* engine = engine_.get();
  job->run = [engine, prompt](llama_context*, TaskJob& t) { return engine->RunMediaPrompt(*t.seq, *prompt, t.aborted); };
  job->toJs = [prompt](Napi::Env env, TaskJob&) -> Napi::Value {
    Napi::Object r = Napi::Object::New(env);
    r.Set("evaluated", Napi::Number::New(env, static_cast<double>(prompt->evaluated)));
    r.Set("reused", Napi::Number::New(env, static_cast<double>(prompt->reused)));
    Napi::Array media = Napi::Array::New(env, prompt->itemPositions.size());
    for (size_t i = 0; i < prompt->itemPositions.size(); i++) media.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(prompt->itemPositions[i])));
    r.Set("media", media);
    return r;
  };
  current_ = job;
  return engine_->SubmitTask(env, job);
}

}  // namespace llama_napi
