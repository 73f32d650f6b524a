// Describing a context's memory (which KV caches, how many streams, K/V types and row sizes,
// V transposed or not) and re-framing a sequence's KV cells out of llama.cpp's per-stream frame
// into the saved, layout-free form (saving) and back into the target context's frame (restoring).
// Used by SessionState.cc; only StateLayout.cc includes llama.cpp's internal memory headers.
#pragma once

#include <llama.h>

#include <cstdint>
#include <vector>

#include "SessionState.h"
#include "StateFormat.h"

namespace llama_napi::state {

// --- the context's memory ---

struct LayerDesc {
  int32_t kType = 0, vType = 0;
  uint64_t kRow = 0, vRow = 0;
  uint32_t nEmbdV = 0;
};

struct CacheDesc {
  uint32_t nStream = 1;
  uint32_t extBytes = 0;
  bool hasV = true;
  bool vTrans = false;
  uint32_t size = 0;  // cells per stream
  std::vector<LayerDesc> layers;
};

struct MemoryDesc {
  uint32_t kind = kMemoryNone;
  std::vector<bool> partIsCache;
  std::vector<CacheDesc> caches;  // the KV cache parts, in order
};

// The context's memory: which parts it saves, and the layout of each KV cache part.
MemoryDesc Describe(llama_context* ctx);

// Reads one KV cache's part of llama.cpp's sequence state (llama_kv_cache::state_write: u32
// n_stream, then per stream u32 cell_count and, when not 0, the cells and their K/V rows) and
// writes it in the stream-free form.
Failure ReframeOut(Reader& r, const CacheDesc& c, Writer& w);

// The refusal for a KV cache part that does not fit this context's cache; empty when it fits.
Failure CheckFits(const ParsedState::Part& p, const CacheDesc& c);

// Writes one KV cache part in llama.cpp's frame for the target context: n_stream streams, all
// empty but the target sequence's.
void ReframeIn(const ParsedState& st, const ParsedState::Part& p, const CacheDesc& c, llama_seq_id seq, Writer& w);

// Parses and checks one saved KV cache part (its cells, positions and K/V rows) into `p`.
Failure ParseCachePart(Reader& r, uint32_t nKv, int32_t nVocab, ParsedState::Part& p);

}  // namespace llama_napi::state
