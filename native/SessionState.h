// Copying, saving and restoring one sequence's KV state (engine thread), and parsing saved
// state (JS thread). The saved form is self-describing and checked before llama.cpp sees it:
//
//   "LNAPISQ1" | u32 version | u32 nVocab | u32 nTokens | u32 nKv | u32 hasLogits
//   | i32 tokens[nTokens] | f32 logits[nVocab] (when hasLogits) | u64 size | llama seq state
#pragma once

#include <cstdint>
#include <vector>

#include "Engine.h"

namespace llama_napi {

struct ParsedState {
  std::vector<llama_token> tokens;
  size_t nKv = 0;
  std::vector<float> logits;  // empty when the saved session had no current logits
  std::vector<uint8_t> llamaState;
};

Failure CopySequence(llama_context* ctx, SeqState& src, SeqState& dst, size_t nVocab);
// Moves the KV cells of sequence `from` of one context into sequence `to` of another (or the
// same) context, through host memory. Both contexts must use the same model and KV types.
Failure CopyKv(llama_context* fromCtx, llama_seq_id from, llama_context* toCtx, llama_seq_id to);
Failure SerializeSequence(llama_context* ctx, const SeqState& seq, size_t nVocab, std::vector<uint8_t>& out);
Failure ParseState(const uint8_t* data, size_t size, int32_t nVocab, uint32_t capacity, ParsedState& out);
Failure RestoreSequence(llama_context* ctx, const ParsedState& state, SeqState& seq, size_t nVocab);

}  // namespace llama_napi
