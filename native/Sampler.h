// Builds a llama.cpp sampler chain from a JS sampling configuration (validated here).
#pragma once

#include <napi.h>

#include "llama_compat.h"

namespace llama_napi {

// A generation's samplers. The grammar is kept apart from the chain: like llama.cpp's common
// sampler, a token is first drawn without it and only checked against it, and the grammar is
// applied to the whole vocabulary only when that token is rejected (much faster).
struct Sampling {
  compat::SamplerPtr chain;    // always ends with a sampler that selects a token
  compat::SamplerPtr grammar;  // null without a grammar / JSON schema
  bool greedyOnly = false;     // the chain is a lone greedy sampler: take the arg-max directly
};

// Throws ERR_INVALID_ARGUMENT for bad options and ERR_GRAMMAR_INVALID for a grammar that does
// not parse. `contextSize` stands for the "-1: whole context" penalty windows.
Sampling BuildSampler(Napi::Env env, const llama_model* model, Napi::Object config, int32_t contextSize);

}  // namespace llama_napi
