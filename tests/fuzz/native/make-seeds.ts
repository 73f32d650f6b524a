/**
 * Seeds for the native fuzzers: small but complete GGUF models (a few kilobytes) of the three
 * tokenizer families the fixtures use, so that mutations reach every stage of the loader.
 * `node --import ./tests/helpers/register-ts-cached.mjs tests/fuzz/native/make-seeds.ts OUT_DIR`
 */
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { DEFAULT_BERT_VOCAB_PATH, writeRandomBert } from "../../../src/fixtures/bert.js";
import { writeRandomGpt2 } from "../../../src/fixtures/gpt2.js";
import { LLAMA_VOCAB_PATHS, writeRandomLlama } from "../../../src/fixtures/llama.js";
import { ggufValue, readGguf, writeGguf, type GgufMetadata, type GgufValue } from "../../../src/gguf/index.js";
import { writeTinyT5 } from "../../helpers/uncomputable.js";
import { writeSmallGpt2Vocab } from "../small-gpt2.js";

/** A vocabulary file holding the first `n` tokens of `source` (its special ids must be below n). */
export async function cutVocab(source: string, out: string, n: number): Promise<void> {
  const file = await readGguf(source);
  const metadata: GgufMetadata = {};
  for (const [key, value] of Object.entries(file.metadata)) {
    if (!key.startsWith("tokenizer.") && key !== "general.architecture") continue;
    if (key === "tokenizer.ggml.merges") continue;
    if (key.endsWith("_token_id") && value.type !== "array" && Number(value.value) >= n) continue;
    if (value.type === "array" && (key === "tokenizer.ggml.tokens" || key === "tokenizer.ggml.scores" || key === "tokenizer.ggml.token_type")) {
      metadata[key] = { ...value, value: (value.value as unknown[]).slice(0, n) } as GgufValue;
    } else {
      metadata[key] = value;
    }
  }
  await writeGguf(out, { metadata, tensors: [] });
}

/** Writes the seed models into `dir` (also the bases of the TypeScript fuzzer, tests/fuzz/run-fuzz.ts). */
export async function writeSeeds(dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const work = fs.mkdtempSync(path.join(dir, ".vocab-"));
  try {
    const bpe = path.join(work, "bpe.gguf");
    const spm = path.join(work, "spm.gguf");
    const wpm = path.join(work, "wpm.gguf");
    await writeSmallGpt2Vocab(bpe, 260);
    await cutVocab(LLAMA_VOCAB_PATHS.spm, spm, 300);
    await cutVocab(DEFAULT_BERT_VOCAB_PATH, wpm, 300);
    await writeRandomGpt2(path.join(dir, "gpt2-f32.gguf"), { nEmbd: 8, nHead: 2, nLayer: 1, nCtx: 16, seed: 1, type: "f32", vocabPath: bpe });
    await writeRandomGpt2(path.join(dir, "gpt2-f16.gguf"), { nEmbd: 8, nHead: 2, nLayer: 2, nCtx: 16, seed: 2, type: "f16", vocabPath: bpe });
    await writeRandomLlama(path.join(dir, "llama-f32.gguf"), { nEmbd: 8, nHead: 2, nHeadKv: 1, nLayer: 1, nCtx: 16, nFf: 16, seed: 3, vocab: spm });
    await writeRandomLlama(path.join(dir, "llama-tied-f16.gguf"), { nEmbd: 16, nHead: 4, nHeadKv: 2, nLayer: 1, nCtx: 16, nFf: 16, seed: 4, type: "f16", tiedOutput: true, vocab: spm });
    await writeRandomBert(path.join(dir, "bert-f32.gguf"), { nEmbd: 8, nHead: 2, nLayer: 1, nCtx: 16, nFf: 16, seed: 5, vocabPath: wpm });
    // Encoder-decoder and encoder-only T5 (a UGM vocabulary): refused, and embeddings.
    await writeTinyT5(path.join(dir, "t5-f32.gguf"), { seed: 6 });
    await writeTinyT5(path.join(dir, "t5encoder-f32.gguf"), { seed: 7, encoderOnly: true });
    // The header alone (no tensors) and a minimal valid file.
    await writeGguf(path.join(dir, "header-only.gguf"), { metadata: { "general.architecture": ggufValue.string("gpt2") }, tensors: [] });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const dir = process.argv[2];
  if (!dir) throw new Error("usage: make-seeds.ts OUT_DIR");
  await writeSeeds(dir);
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".gguf"))) {
    console.log(`${f}\t${fs.statSync(path.join(dir, f)).size} bytes`);
  }
}
