// Copying, saving, parsing and restoring one sequence's KV state (engine thread). The saved form is self-describing, checked before llama.cpp sees it, and
// independent of the saving context's layout (its sequence count, unified KV cache or not, flash
// attention or not): llama.cpp writes a sequence's KV cells inside a per-stream frame (one
// stream per sequence, or one for all in a unified cache) that only a context with the same
// number of streams reads back. saveState takes the cells out of that frame and loadState puts
// them into the target context's frame, in the target sequence's stream. Format (version 2,
// little-endian):
//
//   "LNAPISQ1" | u32 version | u32 0 | u64 payloadBytes | u64 checksum(payload) | payload
//   payload:
//     model:   u32 archLen | arch | u32 nVocab | u32 nLayer | u32 nEmbd | u32 nHead | u32 nHeadKv
//              | u32 nSwa | i32 ropeType | u64 nParams | u64 vocabHash
//     session: u32 nTokens | u32 nKv | u32 hasLogits | i32 tokens[nTokens] | f32 logits[nVocab]?
//     memory:  u32 kind: 0 (no cells) | 1 (parts) | 2 (llama.cpp's own bytes)
//       1: u32 nParts, each u32 partKind: 1 (KV cache) | 2 (raw llama.cpp bytes: u64 size | bytes)
//          KV cache: u32 cells | u32 extBytes | u32 nLayer | u32 hasV
//                    | cells × (i32 pos | ext) | nLayer × (i32 kType | u64 kRowBytes | cells rows)
//                    | hasV: nLayer × (i32 vType | u64 vRowBytes | cells rows, never transposed)
//       2: u32 savedSequences | u64 size | bytes (a memory type we cannot re-frame: it loads
//          only where llama.cpp itself accepts it)
//
// Version 1 (the raw llama.cpp blob) is refused with its version named.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "Engine.h"

namespace llama_napi {

// A saved state (`data`, copied on the JS thread) once parsed; the offsets point into `data`.
struct ParsedState {
  struct Layer {
    int32_t kType = 0, vType = 0;
    uint64_t kRow = 0, vRow = 0;
    size_t kAt = 0, vAt = 0;  // the layer's rows: cells × kRow (vRow) bytes
  };
  struct Part {
    bool cache = true;         // a KV cache, or raw llama.cpp bytes
    uint32_t cells = 0;
    uint32_t extBytes = 0;     // per-cell extension (M-RoPE 2D position, token id)
    bool hasV = true;
    size_t cellsAt = 0;        // cells × (i32 pos | ext)
    std::vector<Layer> layers;
    size_t rawAt = 0, rawSize = 0;
  };
  std::vector<uint8_t> data;
  std::vector<llama_token> tokens;
  size_t nKv = 0;
  std::vector<float> logits;  // empty when the saved session had no current logits
  uint32_t memoryKind = 0;    // 0: no cells; 1: parts; 2: opaque
  std::vector<Part> parts;
  uint32_t savedSequences = 0;  // opaque only
  size_t opaqueAt = 0, opaqueSize = 0;
};

Failure CopySequence(llama_context* ctx, SeqState& src, SeqState& dst, size_t nVocab);
// Moves the KV cells of sequence `from` of one context into sequence `to` of another (or the
// same) context, through host memory. Both contexts must use the same model and KV layout.
Failure CopyKv(llama_context* fromCtx, llama_seq_id from, llama_context* toCtx, llama_seq_id to);
Failure SerializeSequence(llama_context* ctx, const SeqState& seq, size_t nVocab, std::vector<uint8_t>& out);
// Parses and checks the saved state in `out.data` against `model` (engine thread: the checksum
// and the checks read every byte, which the event loop need not wait for).
Failure ParseState(const llama_model* model, uint32_t capacity, ParsedState& out);
// Restores a parsed state into seq. A refusal (another KV cache type, another layout) leaves the
// sequence as it was; only a failure inside llama.cpp leaves it empty.
Failure RestoreSequence(llama_context* ctx, const ParsedState& state, SeqState& seq, size_t nVocab);

// The format version saveState writes (for tests and messages).
constexpr uint32_t kStateFormatVersion = 2;

}  // namespace llama_napi
