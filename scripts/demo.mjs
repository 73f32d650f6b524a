#!/usr/bin/env node
// npm run demo: tells a story with stories260K, the small real model bundled in models/ (MIT, see
// models/README.md). LLAMA_NAPI_DEMO_MODEL may name another GGUF file. When the model file is
// absent, it generates from a GPT-2-shaped model with random weights instead (gibberish, but the
// whole pipeline runs). Whatever the model, the context never asks for more tokens than the model
// was trained for. Runs from dist/ (`npm run build:ts`).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { loadModel } from "../dist/index.js";
import { GPT2_PRESETS, writeRandomGpt2 } from "../dist/testing.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const bundled = path.join(root, "models", "stories260K.gguf");
const wanted = process.env.LLAMA_NAPI_DEMO_MODEL ? path.resolve(process.env.LLAMA_NAPI_DEMO_MODEL) : bundled;

/** Tokens of context the demo would like; clamped below to what the model allows. */
const WANTED_CONTEXT = 256;
/** Tokens to generate; fewer when the context is smaller. */
const WANTED_TOKENS = 200;

let modelPath = wanted;
let prompt = "Once upon a time";
if (!fs.existsSync(wanted)) {
  const preset = GPT2_PRESETS.tiny;
  modelPath = path.join(os.tmpdir(), `llama-napi-demo-gpt2-tiny-${preset.nEmbd}x${preset.nLayer}-ctx${preset.nCtx}.gguf`);
  if (!fs.existsSync(modelPath)) {
    // Written under a unique name and renamed, so that two demos at once never read half a file.
    const partial = `${modelPath}.${process.pid}.tmp`;
    await writeRandomGpt2(partial, { ...preset, seed: 1 });
    fs.renameSync(partial, modelPath);
  }
  prompt = "The meaning of life is";
  console.error(`(${wanted} not found: using a GPT-2-shaped model with random weights, so expect gibberish)`);
}

const model = await loadModel(modelPath);
try {
  const trained = model.info.trainContextSize;
  // 0 means the file does not say; then the demo's own size is the best guess.
  const contextSize = trained > 0 ? Math.min(WANTED_CONTEXT, trained) : WANTED_CONTEXT;
  const context = await model.createContext({ contextSize });
  const session = context.createSession();
  const { length } = await session.prompt(prompt);
  const maxTokens = Math.max(0, Math.min(WANTED_TOKENS, contextSize - length));
  process.stdout.write(prompt);
  const start = performance.now();
  let n = 0;
  for await (const { text } of session.generate({ maxTokens, temperature: 0.8, seed: 7 })) {
    process.stdout.write(text);
    n++;
  }
  const seconds = (performance.now() - start) / 1000;
  const rate = (n / seconds).toFixed(0);
  process.stdout.write(`\n\n[${model.info.architecture}, ${n} tokens in ${seconds.toFixed(2)} s: ${rate} tokens/s, context ${contextSize}]\n`);
} finally {
  model.dispose(); // also disposes the context and the session
}
