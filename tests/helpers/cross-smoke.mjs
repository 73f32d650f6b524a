/**
 * What tests/cross-platform.test.ts runs under an emulated Node (qemu-aarch64, wine64) and under
 * the host's Node for the reference: load the package's dist/ (the addon named by
 * LLAMA_NAPI_BINARY), report systemInfo(), and per model tokenize a text, prompt with it (the
 * logits after the prompt) and generate 16 greedy tokens. Prints one JSON line. Plain JavaScript: it runs on any Node ≥ 20.
 *
 *   node cross-smoke.mjs <dist/index.js> <prompt> <model.gguf>...
 *
 * Under wine, Node cannot write to a pipe: the caller sends stdout to a file.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";

const [indexJs, prompt, ...models] = process.argv.slice(2);
const started = performance.now();
const { loadModel, systemInfo } = await import(pathToFileURL(path.resolve(indexJs)).href);
const info = systemInfo();
const out = {
  platform: process.platform,
  arch: process.arch,
  node: process.version,
  cpuVariant: info.cpuVariant,
  prebuilt: info.prebuilt,
  dynamicBackends: info.dynamicBackends,
  binary: path.basename(info.binary),
  devices: info.devices.map((d) => ({ backend: d.backend, type: d.type, library: d.library, features: d.features })),
  models: [],
  loadMs: Math.round(performance.now() - started),
};
for (const file of models) {
  const t0 = performance.now();
  const model = await loadModel(path.resolve(file));
  const tokens = Array.from(model.tokenize(prompt));
  const context = await model.createContext({ contextSize: 128, threads: 2 });
  const session = context.createSession();
  await session.prompt(prompt);
  const logits = Array.from(session.logits());
  const r = await session.generate({ temperature: 0, maxTokens: 16 }).collect();
  out.models.push({
    model: path.basename(file),
    tokens,
    detokenized: model.detokenize(tokens),
    logits,
    generated: Array.from(r.tokens),
    text: r.text,
    ms: Math.round(performance.now() - t0),
  });
  model.dispose();
}
out.totalMs = Math.round(performance.now() - started);
console.log(JSON.stringify(out));
