// Training through llama.cpp's own optimizer (llama_opt_init / llama_opt_epoch, ggml-opt:
// AdamW or SGD on F32 weights) and saving a model (llama_model_save_to_file), off the event
// loop. JS side: src/train.ts.
#pragma once

#include <napi.h>

namespace llama_napi {

// train(model, tokens: Int32Array, options, onEvent) -> { promise, abort }
//
// `tokens` is the whole corpus; it is cut into windows of contextSize (+1 for the labels), the
// last validationWindows of which are held out. onEvent receives { type: "step", ... } after
// every optimizer step and { type: "epoch", ... } after every epoch. `abort()` stops before the
// next window (a window is batchSize-token optimizer steps); the weights are then those after the
// last completed step. The promise resolves to { steps, epochs, aborted, ... } or rejects with
// ERR_UNSUPPORTED (weights not writable), ERR_BUSY (the model is training), ERR_CONTEXT_CREATE.
Napi::Value Train(const Napi::CallbackInfo& info);

// saveModel(model, path) -> Promise<void>: llama_model_save_to_file off the event loop.
// ERR_BUSY while the model trains.
Napi::Value SaveModel(const Napi::CallbackInfo& info);

void RegisterTrain(Napi::Env env, Napi::Object exports);

}  // namespace llama_napi
