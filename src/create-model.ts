/**
 * createModel(): a new, untrained model as an F32 GGUF file, initialised as nanoGPT initialises
 * GPT-2; a "llama" one (the default) is ready for train().
 *
 * ```ts
 * await createModel("tiny.gguf", { architecture: "llama", layers: 4, embeddingSize: 128, heads: 4, vocabularyFrom: "stories260K.gguf" });
 * const model = await loadModel("tiny.gguf", { useMmap: false });
 * await train(model, text, { epochs: 10, learningRate: 1e-3 });
 * ```
 */
import path from "node:path";
import { fileURLToPath } from "node:url";

import { LlamaError } from "./errors.js";
import { writeRandomGpt2 } from "./fixtures/gpt2.js";
import { writeRandomLlama } from "./fixtures/llama.js";
import { CREATE_MODEL_OPTIONS, type CreateModelOptions } from "./options/create-model.js";
import { readOptions } from "./options/spec.js";

/** models/stories260K.gguf, in the repository and in the package (dist/create-model.js → ../models). */
const STORIES_260K = fileURLToPath(new URL("../models/stories260K.gguf", import.meta.url));

export { CREATE_MODEL_OPTIONS, CREATE_ARCHITECTURES, type CreateModelOptions } from "./options/create-model.js";

/**
 * Writes an initialised F32 model to `file`: weights normal(0, 0.02), the residual projections
 * (attn_output, ffn_down) normal(0, 0.02/√(2·layers)), biases 0, norm weights 1 (nanoGPT's
 * initialisation), and the vocabulary of `vocabularyFrom`. The output projection is a tensor of
 * its own (output.weight), not tied to the token embedding as in GPT-2: llama.cpp's optimizer does
 * not train token_embd.weight, so a tied projection would never learn.
 */
export async function createModel(file: string, options: CreateModelOptions = {}): Promise<void> {
  if (typeof file !== "string" || file === "") throw new LlamaError("ERR_INVALID_ARGUMENT", "createModel: path must be a non-empty string");
  const o = readOptions(CREATE_MODEL_OPTIONS, options, "createModel options", { defaults: true });
  const [layers, nEmbd, heads, nFf, nCtx, seed] = [o.layers!, o.embeddingSize!, o.heads!, o.feedForwardSize!, o.contextSize!, o.seed!];
  if (nEmbd % heads !== 0) throw new LlamaError("ERR_INVALID_ARGUMENT", `createModel options.heads must divide embeddingSize (${nEmbd}); got ${heads}`);
  // Without vocabularyFrom: GPT-2's vocabulary (the writer's default) or, for llama, the 512-token
  // SentencePiece vocabulary of stories260K; the package ships both.
  const vocab = o.vocabularyFrom !== undefined ? path.resolve(o.vocabularyFrom) : o.architecture === "llama" ? STORIES_260K : undefined;
  const name = `${o.architecture}-${layers}x${nEmbd}-untrained`;
  if (o.architecture === "gpt2") {
    await writeRandomGpt2(file, { nEmbd, nHead: heads, nLayer: layers, nCtx, nFf, seed, tiedOutput: false, initialisation: "nanogpt", name, ...(vocab ? { vocabPath: vocab } : {}) });
  } else {
    if ((nEmbd / heads) % 2 !== 0) throw new LlamaError("ERR_INVALID_ARGUMENT", `createModel: a llama head size (embeddingSize/heads = ${nEmbd / heads}) must be even`);
    await writeRandomLlama(file, { nEmbd, nHead: heads, nLayer: layers, nCtx, nFf, seed, tiedOutput: false, initialisation: "nanogpt", name, ...(vocab ? { vocab } : {}) });
  }
}
