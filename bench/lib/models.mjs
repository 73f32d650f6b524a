/**
 * The benchmark's models, made with llama-napi's own tooling into bench/.work/models: GPT-2 small
 * (124M) with random weights in F16 (writeRandomGpt2), then Q8_0 and Q4_0 with quantize().
 * Each file is made once and reused.
 */
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { ROOT, WORK_DIR } from "./env.mjs";

export const MODELS_DIR = path.join(WORK_DIR, "models");
const SEED = 42;
const BASE = `gpt2-small-random-seed${SEED}`;

async function dist(module) {
  return import(pathToFileURL(path.join(ROOT, "dist", module)).href);
}

function describe(file, type, madeWith) {
  return { file, type, bytes: fs.statSync(file).size, madeWith };
}

/** Makes the models that are missing; returns { f16, q8_0, q4_0, vocab } descriptions. */
export async function ensureModels(log, { threads }) {
  const { GPT2_PRESETS, writeRandomGpt2, DEFAULT_GPT2_VOCAB_PATH } = await dist("fixtures/gpt2.js");
  const { quantize } = await dist("index.js");
  fs.mkdirSync(MODELS_DIR, { recursive: true });

  const f16 = path.join(MODELS_DIR, `${BASE}-f16.gguf`);
  const gpt2 = { ...GPT2_PRESETS.small, seed: SEED, type: "f16" };
  if (!fs.existsSync(f16)) {
    log(`writing ${path.relative(ROOT, f16)} (GPT-2 small, random weights, F16)`);
    const temp = `${f16}.${process.pid}.tmp`;
    await writeRandomGpt2(temp, gpt2);
    fs.renameSync(temp, f16);
  }
  const models = {
    f16: describe(f16, "F16", `writeRandomGpt2(${JSON.stringify(gpt2)})`),
    vocab: describe(DEFAULT_GPT2_VOCAB_PATH, "vocab only", "vendor/llama.cpp (GPT-2 vocabulary)"),
  };
  for (const type of ["Q8_0", "Q4_0"]) {
    const out = path.join(MODELS_DIR, `${BASE}-${type.toLowerCase()}.gguf`);
    if (!fs.existsSync(out)) {
      log(`quantising to ${path.relative(ROOT, out)} with quantize()`);
      await quantize(f16, out, { type, threads });
    }
    models[type.toLowerCase()] = describe(out, type, `quantize(f16, out, { type: "${type}" })`);
  }
  return models;
}
