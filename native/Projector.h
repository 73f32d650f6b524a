// Projector: a multimodal projector (mmproj GGUF) loaded with llama.cpp's libmtmd for a model,
// which turns images and audio into embeddings the text model reads. JS: model.loadProjector()
// (src/model.ts), session.prompt([...parts]) with { image } / { audio } parts (src/media.ts).
//
// A model holds at most one projector (ModelHandle::projector). libmtmd's context is not
// thread-safe, and several contexts of one model may evaluate media at once: every use of it
// holds Projector::mu.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <string>

#include "common.h"
#include "mtmd-helper.h"
#include "mtmd.h"

namespace llama_napi {

struct MtmdDeleter {
  void operator()(mtmd_context* c) const { mtmd_free(c); }
};
struct MtmdChunkDeleter {
  void operator()(mtmd_input_chunk* c) const { mtmd_input_chunk_free(c); }
};
struct MtmdChunksDeleter {
  void operator()(mtmd_input_chunks* c) const { mtmd_input_chunks_free(c); }
};
struct MtmdBitmapDeleter {
  void operator()(mtmd_bitmap* b) const { mtmd_bitmap_free(b); }
};
using MtmdPtr = std::unique_ptr<mtmd_context, MtmdDeleter>;              // owns an mtmd_context
using MtmdChunkPtr = std::unique_ptr<mtmd_input_chunk, MtmdChunkDeleter>;  // owns one chunk (a copy)
using MtmdChunksPtr = std::unique_ptr<mtmd_input_chunks, MtmdChunksDeleter>;
using MtmdBitmapPtr = std::unique_ptr<mtmd_bitmap, MtmdBitmapDeleter>;

struct Projector {
  MtmdPtr ctx;
  std::mutex mu;
  std::string path;
  std::string type;  // clip.projector_type
  bool vision = false;
  bool audio = false;
  int32_t audioSampleRate = -1;
};

// One media chunk of a session's history: the positions [start, start + nTokens) hold
// kMediaToken in SeqState::tokens, and `chunk` is what evaluates them. Shared by forks.
struct MediaChunk {
  MtmdChunkPtr chunk;
  std::string id;  // SHA-256 of the media's bytes (libmtmd's bitmap id): same bytes, same chunk
  size_t nTokens = 0;
  bool audio = false;
};

// The token id a media position holds in a session's history (llama.cpp's LLAMA_TOKEN_NULL).
constexpr int32_t kMediaToken = -1;

// Loads `path` as the projector of `model` (engine-free: a worker thread). Errors:
// ERR_FILE_NOT_FOUND, ERR_GGUF_INVALID (not a projector), ERR_UNSUPPORTED (a projector that does
// not fit the model, or one this binding cannot evaluate yet).
Failure LoadProjector(const std::string& path, const llama_model* model, int32_t threads, std::shared_ptr<Projector>& out);

// The JS description of a projector: { path, type, image, audio, audioSampleRate }.
Napi::Object ProjectorInfo(Napi::Env env, const Projector& p);

}  // namespace llama_napi
