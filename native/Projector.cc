// Loading a multimodal projector with libmtmd (see Projector.h).
#include "Projector.h"

#include <sys/stat.h>

#include "GgufCheck.h"
#include "ProjectorCheck.h"
#include "log.h"

namespace llama_napi {

Failure LoadProjector(const std::string& path, const llama_model* model, int32_t threads, std::shared_ptr<Projector>& out) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return {"ERR_FILE_NOT_FOUND", "The projector file " + path + " does not exist or is not a file"};
  }
  GgufPtr header;
  if (Failure f = ReadGgufHeader(path, header); !f.ok()) return f;
  if (Failure f = CheckTensorTypes(header.get(), path); !f.ok()) return f;
  if (Failure f = CheckProjectorHeader(header.get(), path); !f.ok()) return f;

  LogCapture capture;
  mtmd_context_params params = mtmd_context_params_default();
  params.print_timings = false;
  params.n_threads = threads;
  auto p = std::make_shared<Projector>();
  try {
    p->ctx.reset(mtmd_init_from_file(path.c_str(), model, params));
  } catch (const std::exception& e) {
    return {"ERR_GGUF_INVALID", "The projector " + path + " could not be loaded: " + e.what()};
  }
  if (!p->ctx) {
    const std::string log = capture.Text();
    if (log.find("mismatch between text model") != std::string::npos) {
      return {"ERR_UNSUPPORTED", "The projector " + path + " does not fit this model (its output width differs from the model's embedding size): " + log};
    }
    return {"ERR_GGUF_INVALID", "The projector " + path + " could not be loaded" + (log.empty() ? "" : ": " + log)};
  }
  if (mtmd_decode_use_mrope(p->ctx.get())) {
    // M-RoPE (Qwen2-VL and later) gives a media chunk fewer positions than tokens, which the
    // session's one-position-per-token history does not hold yet.
    return {"ERR_UNSUPPORTED", "The projector " + path + " uses M-RoPE positions (Qwen2-VL family), which llama-napi does not support yet"};
  }
  p->path = path;
  p->type = StringKey(header.get(), "clip.projector_type");
  p->vision = mtmd_support_vision(p->ctx.get());
  p->audio = mtmd_support_audio(p->ctx.get());
  p->audioSampleRate = p->audio ? mtmd_get_audio_sample_rate(p->ctx.get()) : -1;
  out = std::move(p);
  return {};
}

Napi::Object ProjectorInfo(Napi::Env env, const Projector& p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", p.path);
  o.Set("type", p.type);
  o.Set("image", p.vision);
  o.Set("audio", p.audio);
  if (p.audio) o.Set("audioSampleRate", p.audioSampleRate);
  return o;
}

}  // namespace llama_napi
