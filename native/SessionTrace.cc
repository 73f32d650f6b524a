// session.trace(): the request, checked on the JS thread, and the capture's result as a JS
// object (native/EngineTrace.cc runs it, native/Trace.cc captures).
#include <algorithm>
#include <cstring>

#include "Model.h"
#include "Session.h"

namespace llama_napi {

namespace {

Napi::Value TraceToJs(Napi::Env env, const TraceResult& r) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("tokens", ToInt32Array(env, r.tokens.data(), r.tokens.size()));
  out.Set("firstNew", Napi::Number::New(env, static_cast<double>(r.firstNew)));
  out.Set("heads", r.nHead);
  out.Set("headsKv", r.nHeadKv);
  out.Set("embeddingSize", r.nEmbd);
  Napi::Array media = Napi::Array::New(env, r.media.size());
  for (size_t i = 0; i < r.media.size(); i++) {
    Napi::Object span = Napi::Object::New(env);
    span.Set("start", Napi::Number::New(env, static_cast<double>(r.media[i].start)));
    span.Set("length", Napi::Number::New(env, static_cast<double>(r.media[i].length)));
    span.Set("kind", r.media[i].audio ? "audio" : "image");
    media.Set(static_cast<uint32_t>(i), span);
  }
  out.Set("media", media);
  Napi::Array layers = Napi::Array::New(env, r.layers.size());
  for (size_t i = 0; i < r.layers.size(); i++) layers.Set(static_cast<uint32_t>(i), r.layers[i]);
  out.Set("layers", layers);
  auto floats = [&](const std::vector<float>& v) {
    Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
    if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
    return a;
  };
  auto perLayer = [&](const std::vector<std::vector<float>>& v) {
    Napi::Array a = Napi::Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), floats(v[i]));
    return a;
  };
  if (!r.attention.empty()) out.Set("attention", perLayer(r.attention));
  if (!r.hidden.empty()) out.Set("hidden", perLayer(r.hidden));
  if (!r.lens.empty()) {
    Napi::Array lens = Napi::Array::New(env, r.lens.size());
    for (size_t l = 0; l < r.lens.size(); l++) {
      Napi::Int32Array ids = Napi::Int32Array::New(env, r.lens[l].size());
      Napi::Float32Array probs = Napi::Float32Array::New(env, r.lens[l].size());
      for (size_t k = 0; k < r.lens[l].size(); k++) {
        ids[k] = r.lens[l][k].first;
        probs[k] = r.lens[l][k].second;
      }
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(0u, ids);
      pair.Set(1u, probs);
      lens.Set(static_cast<uint32_t>(l), pair);
    }
    out.Set("lens", lens);
  }
  if (!r.encoderTokens.empty()) {
    Napi::Object encoder = Napi::Object::New(env);
    encoder.Set("tokens", ToInt32Array(env, r.encoderTokens.data(), r.encoderTokens.size()));
    Napi::Array encoderLayers = Napi::Array::New(env, r.encoderLayers.size());
    for (size_t i = 0; i < r.encoderLayers.size(); i++) encoderLayers.Set(static_cast<uint32_t>(i), r.encoderLayers[i]);
    encoder.Set("layers", encoderLayers);
    if (!r.encoderAttention.empty()) encoder.Set("attention", perLayer(r.encoderAttention));
    out.Set("encoder", encoder);
    if (!r.crossAttention.empty()) out.Set("crossAttention", perLayer(r.crossAttention));
  }
  out.Set("logits", floats(r.logits));
  return out;
}

}  // namespace

// trace(tokens, {attention, hiddenStates, logitLens (top-k, 0 = off), layers}) -> Promise<object>
Napi::Value SessionWrap::Trace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  CheckIdle(env);
  std::vector<int32_t> input = args.Tokens(0, "tokens");
  Options o(env, args.OptionalObject(1, "options"), "options");
  const llama_model* model = engine_->model()->model.get();
  if (engine_->model()->vocabOnly) Throw(env, "ERR_STATE", "A vocabOnly model cannot be traced");
  TraceRequest req;
  req.attention = o.Bool("attention").value_or(true);
  req.hidden = o.Bool("hiddenStates").value_or(true);
  req.lensTopK = static_cast<int32_t>(o.Int("logitLens", 0, 100).value_or(0));
  // An encoder-decoder model's layers: the encoder's and the decoder's (native/EngineTrace.cc).
  const int32_t nLayer = std::max(llama_model_n_layer(model), DecoderLayers(model));
  if (std::optional<Napi::Value> layers = o.Raw("layers")) {
    for (int32_t l : TokensFrom(env, *layers, "options.layers")) {
      if (l < 0 || l >= nLayer) {
        Throw(env, "ERR_INVALID_ARGUMENT", "options.layers has layer " + std::to_string(l) + "; this model has layers 0.." + std::to_string(nLayer - 1));
      }
      req.layers.push_back(l);
    }
  }
  const int32_t nVocab = engine_->model()->nVocab;
  for (size_t i = 0; i < input.size(); i++) {
    if (input[i] < 0 || input[i] >= nVocab) {
      Throw(env, "ERR_TOKEN_INVALID", "Token " + std::to_string(input[i]) + " at index " + std::to_string(i) + " is out of range");
    }
  }
  auto result = std::make_shared<TraceResult>();
  auto job = std::make_shared<TaskJob>();
  job->seq = seq_;
  Engine* engine = engine_.get();
  std::vector<llama_token> tokens(input.begin(), input.end());
  job->run = [engine, tokens, req, result](llama_context*, TaskJob& t) { return engine->RunTrace(*t.seq, tokens, req, *result); };
  job->toJs = [result](Napi::Env env, TaskJob&) { return TraceToJs(env, *result); };
  current_ = job;
  return engine_->SubmitTask(env, job);
}

}  // namespace llama_napi
