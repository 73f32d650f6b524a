// Builds a llama.cpp sampler chain from a JS sampling configuration (validated here).
#pragma once

#include <napi.h>

#include "llama_compat.h"

namespace llama_napi {

// Throws ERR_INVALID_ARGUMENT for bad options and ERR_GRAMMAR_INVALID for a grammar that does
// not parse. The chain always ends with a sampler that selects a token.
compat::SamplerPtr BuildSampler(Napi::Env env, const llama_model* model, Napi::Object config);

}  // namespace llama_napi
