/**
 * `llama-napi/testing`: GGUF model files with random weights, for tests and benchmarks that need a
 * real model file without downloading one. The models have the GPT-2 architecture and the real
 * GPT-2 vocabulary (shipped in the package); their output is gibberish, but every part of the
 * pipeline runs. `llama-napi make-gpt2` writes the same files from the command line.
 *
 * ```ts
 * import { GPT2_PRESETS, writeRandomGpt2 } from "llama-napi/testing";
 * await writeRandomGpt2("tiny.gguf", { ...GPT2_PRESETS.tiny, seed: 1 });
 * ```
 *
 * @module llama-napi/testing
 */
export { writeRandomGpt2, GPT2_PRESETS } from "./fixtures/gpt2.js";
export type { Gpt2Options, Gpt2Shape } from "./fixtures/gpt2.js";
