/**
 * The options of `createModel()` (src/create-model.ts) and the `llama-napi create-model` flags.
 */
import { integer, oneOf, string, type OptionsOf } from "./spec.js";

/** The architectures createModel writes. */
export const CREATE_ARCHITECTURES = ["gpt2", "llama"] as const;

/** The options of `createModel()`: type, range, default, doc comment and command-line flag of each. */
export const CREATE_MODEL_OPTIONS = {
  /**
   * "llama" (default: RoPE, RMSNorm, SwiGLU MLP; the architecture train() trains) or "gpt2"
   * (learned positions, LayerNorm, GELU MLP, biases; for inference: ggml has no LayerNorm or GELU
   * backward pass).
   */
  architecture: oneOf(CREATE_ARCHITECTURES, { default: "llama", flag: { name: "arch", arg: "llama|gpt2", help: "architecture (gpt2 does not train)" } }),
  /** Transformer blocks (default 2). */
  layers: integer({ min: 1, max: 1024, default: 2, flag: { name: "layers", arg: "N", help: "transformer blocks" } }),
  /** Width of the residual stream (default 64; a multiple of heads, with an even head size for llama). */
  embeddingSize: integer({ min: 2, max: 65536, default: 64, flag: { name: "embd", arg: "N", help: "embedding size" } }),
  /** Attention heads (default 4). */
  heads: integer({ min: 1, max: 1024, default: 4, flag: { name: "heads", arg: "N", help: "attention heads" } }),
  /** Hidden size of the MLP (default: 4 × embeddingSize). */
  feedForwardSize: integer({
    min: 1,
    max: 1 << 20,
    default: (_scope, values) => 4 * (values.embeddingSize as number),
    defaultText: "4 × --embd",
    flag: { name: "ffn", arg: "N", help: "MLP hidden size" },
  }),
  /** Tokens the model is made for: rows of GPT-2's position table (default 256). */
  contextSize: integer({ min: 1, max: 1 << 20, default: 256, flag: { name: "ctx-size", aliases: ["-c"], arg: "N", help: "context length" } }),
  /**
   * A GGUF file whose vocabulary (every tokenizer.* key) the model gets. Default: GPT-2's vocabulary
   * for "gpt2", and for "llama" the 512-token SentencePiece vocabulary of models/stories260K.gguf
   * (the package ships both).
   */
  vocabularyFrom: string({ flag: { name: "vocab-from", arg: "FILE.gguf", help: "copy the vocabulary of this GGUF" } }),
  /** Seed of the initial weights (default 0). */
  seed: integer({ min: 0, max: Number.MAX_SAFE_INTEGER, default: 0, flag: { name: "seed", arg: "N", help: "seed of the weights" } }),
} as const;

/**
 * Options of `createModel()`.
 * @interface
 */
export type CreateModelOptions = OptionsOf<typeof CREATE_MODEL_OPTIONS>;
