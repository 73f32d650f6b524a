// The checks of a projector's GGUF header before libmtmd loads it (native/ProjectorCheck.cc).
#pragma once

#include <gguf.h>

#include <string>

#include "common.h"

namespace llama_napi {

// A string key's value, or "" when it is absent or not a string.
std::string StringKey(const gguf_context* g, const char* key);

// What libmtmd would abort on (GGML_ASSERT, GGML_ABORT, a typed getter on a key of another
// type, a tensor of the wrong shape) instead of reporting it, for a projector it loads: a
// failure (ERR_GGUF_INVALID, or ERR_UNSUPPORTED for a valid file this llama.cpp cannot run).
Failure CheckProjectorHeader(const gguf_context* g, const std::string& path);

}  // namespace llama_napi
