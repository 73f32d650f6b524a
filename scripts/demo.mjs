#!/usr/bin/env node
// npm run demo: tells a story with the real stories260K model from ../shared/models when it is
// there, and otherwise generates from a GPT-2-shaped model with random weights (gibberish, but
// the whole pipeline runs).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { loadModel } from "../dist/index.js";
import { GPT2_PRESETS, writeRandomGpt2 } from "../dist/fixtures/gpt2.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const stories = path.resolve(root, "..", "shared", "models", "stories260K.gguf");

let modelPath = stories;
let prompt = "Once upon a time";
if (!fs.existsSync(stories)) {
  modelPath = path.join(os.tmpdir(), "llama-napi-demo-gpt2-tiny.gguf");
  if (!fs.existsSync(modelPath)) await writeRandomGpt2(modelPath, { ...GPT2_PRESETS.tiny, seed: 1 });
  prompt = "The meaning of life is";
  console.error(`(${stories} not found: using a GPT-2-shaped model with random weights, so expect gibberish)`);
}

const model = await loadModel(modelPath);
try {
  const context = await model.createContext({ contextSize: 256 });
  const session = context.createSession();
  await session.prompt(prompt);
  process.stdout.write(prompt);
  const start = performance.now();
  let n = 0;
  for await (const { text } of session.generate({ maxTokens: 200, temperature: 0.8, seed: 7 })) {
    process.stdout.write(text);
    n++;
  }
  const seconds = (performance.now() - start) / 1000;
  const rate = (n / seconds).toFixed(0);
  process.stdout.write(`\n\n[${model.info.architecture}, ${n} tokens in ${seconds.toFixed(2)} s: ${rate} tokens/s]\n`);
} finally {
  model.dispose(); // also disposes the context and the session
}
