// quantize(): llama_model_quantize off the event loop, with progress and abort.
// JS side: src/quantize.ts.
#pragma once

#include <napi.h>

namespace llama_napi {

// quantize(input, output, { type, threads?, allowRequantize? }, onProgress?) -> { promise, abort }
//
// `promise` resolves to { tensors } once `output` is written, or rejects with ERR_QUANTIZE
// (llama.cpp's reason in the message), ERR_UNSUPPORTED (the type needs an importance matrix) or
// ERR_ABORTED. `abort()` stops the quantisation before the next tensor starts (llama.cpp has no
// cancel hook: the per-tensor log line is used, see log.h LogObserver). `output` is written in
// place and deleted on failure, so the caller writes to a temporary name and renames it, which
// keeps an existing file intact until the new one is complete (src/quantize.ts does).
Napi::Value Quantize(const Napi::CallbackInfo& info);

}  // namespace llama_napi
