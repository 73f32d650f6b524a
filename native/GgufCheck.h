// Reading a model's GGUF header before llama.cpp loads it: the values that make llama.cpp abort
// the process (GGML_ASSERT) instead of reporting an error are refused here with a message, and
// the metadata is kept for model.metadata. Uses ggml's own gguf reader (fast, off the JS thread).
#pragma once

#include <gguf.h>
#include <napi.h>

#include <memory>
#include <string>

#include "common.h"

namespace llama_napi {

struct GgufDeleter {
  void operator()(gguf_context* g) const { gguf_free(g); }
};
using GgufPtr = std::unique_ptr<gguf_context, GgufDeleter>;

// Reads the header of `path` into `out`. A failure is ERR_GGUF_INVALID with the reason.
Failure ReadGgufHeader(const std::string& path, GgufPtr& out);

// The first value llama.cpp would abort on (duplicate tokens, layer/expert counts, RoPE scaling
// type), as a failure; ok when the header is safe to hand to llama.cpp.
Failure CheckLoadable(const gguf_context* g, const std::string& path);

// The first tensor whose type ggml's CPU kernels cannot compute with in any role (integer
// types, f64, and the q8_1/q8_K types that only ever hold a matrix product's other operand):
// a failure ERR_UNSUPPORTED naming it, ok otherwise. llama.cpp loads such a model (or LoRA
// adapter), then aborts the process while it builds a context (no backend can run the graph)
// or at the first decode. Not for vocabulary-only loads, which use no tensor.
Failure CheckTensorTypes(const gguf_context* g, const std::string& path);

// The metadata as a JS object: numbers (bigint past 2^53), strings, booleans and arrays; the
// keys that hold the whole vocabulary are left out.
Napi::Object MetadataToJs(Napi::Env env, const gguf_context* g);

}  // namespace llama_napi
