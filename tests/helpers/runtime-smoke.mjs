/**
 * The core API under whatever JavaScript runtime runs this file: Node, Bun or Deno
 * (tests/runtimes.test.ts runs it under each and compares the results with Node's).
 *
 *   node tests/helpers/runtime-smoke.mjs MODEL.gguf [--keep | --exit-busy]
 *   bun tests/helpers/runtime-smoke.mjs MODEL.gguf
 *   deno run --allow-read --allow-env --allow-ffi tests/helpers/runtime-smoke.mjs MODEL.gguf
 *
 * Loads the compiled package (dist/), then: systemInfo, loadModel, tokenize/detokenize, a context
 * and a session, prompt, a few greedy tokens, the error codes for a missing file and for an
 * unknown option, ERR_DISPOSED after dispose(). Prints one JSON line on stdout (the last line) and
 * exits 0; a failed step prints {"ok":false,"step":...,"error":...} and exits 1.
 *
 * Two ways to end, for the addon's exit hook (it stops native threads before llama.cpp's static
 * destructors run): --keep skips dispose() and lets the script end with the model, context and
 * session still alive; --exit-busy starts a generation that fills a second context (up to 1024
 * tokens) and calls process.exit(0) after its first token, while the decode thread runs on (use a
 * model slow enough for that). Either must exit 0, without a crash.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const modelPath = process.argv[2];
const exitBusy = process.argv.includes("--exit-busy");
const keep = process.argv.includes("--keep");
/** What --keep leaves alive until the process ends. */
const kept = [];
const PROMPT = "Once upon a time";
const GENERATE = 8;

const result = {
  ok: false,
  runtime: runtimeName(),
  version: runtimeVersion(),
  napi: process.versions.napi ?? null,
  steps: [],
};
let step = "import";

function runtimeName() {
  if (typeof globalThis.Bun !== "undefined") return "bun";
  if (typeof globalThis.Deno !== "undefined") return "deno";
  return "node";
}

function runtimeVersion() {
  if (typeof globalThis.Bun !== "undefined") return globalThis.Bun.version;
  if (typeof globalThis.Deno !== "undefined") return globalThis.Deno.version.deno;
  return process.versions.node;
}

/** The error a promise or function throws, as { code, name, message }; null when none. */
async function caught(fn) {
  try {
    await fn();
    return null;
  } catch (err) {
    return { code: err?.code ?? null, name: err?.name ?? null, message: String(err?.message ?? err).split("\n")[0] };
  }
}

async function main() {
  if (!modelPath || !fs.existsSync(modelPath)) throw new Error(`usage: runtime-smoke.mjs MODEL.gguf (got ${modelPath})`);
  const started = performance.now();
  const api = await import(pathToFileURL(path.join(here, "..", "..", "dist", "index.js")).href);
  const { loadModel, systemInfo, LlamaError } = api;

  step = "systemInfo";
  const info = systemInfo();
  result.binary = path.basename(info.binary);
  result.cpuVariant = info.cpuVariant;
  result.steps.push(step);

  step = "loadModel";
  const model = await loadModel(modelPath);
  result.architecture = model.info.architecture;
  result.vocabSize = model.info.vocabSize;
  result.steps.push(step);

  step = "tokenize";
  const promptTokens = model.tokenize(PROMPT);
  result.promptTokens = Array.from(promptTokens);
  result.detokenized = model.detokenize(promptTokens, { removeSpecial: true });
  result.steps.push(step);

  step = "createContext";
  const context = await model.createContext({ contextSize: 128, threads: 1 });
  const session = context.createSession();
  result.steps.push(step);

  step = "prompt";
  await session.prompt(PROMPT);
  result.sessionLength = session.length;
  result.steps.push(step);

  step = "generate";
  const tokens = [];
  let text = "";
  for await (const t of session.generate({ maxTokens: GENERATE, temperature: 0 })) {
    tokens.push(t.token);
    text += t.text;
  }
  result.tokens = tokens;
  result.text = text;
  result.steps.push(step);

  step = "errors";
  const missing = path.join(here, "no-such-model-file.gguf");
  result.errors = {
    missingFile: await caught(() => loadModel(missing)),
    unknownOption: await caught(() => model.createContext({ contextsize: 32 })),
    isLlamaError: (await loadModel(missing).catch((err) => err)) instanceof LlamaError,
  };
  result.steps.push(step);

  if (keep) {
    kept.push(model, context, session);
    result.ok = true;
    result.ms = Math.round(performance.now() - started);
    return;
  }

  step = "dispose";
  session.dispose();
  context.dispose();
  model.dispose();
  result.disposed = model.disposed && context.disposed && session.disposed;
  result.afterDispose = await caught(() => model.tokenize(PROMPT));
  result.steps.push(step);

  if (exitBusy) {
    step = "exit-busy";
    const busyModel = await loadModel(modelPath);
    const contextSize = Math.min(1024, busyModel.info.trainContextSize);
    const busyContext = await busyModel.createContext({ contextSize, threads: 1 });
    const busySession = busyContext.createSession();
    await busySession.prompt(PROMPT);
    const maxTokens = contextSize - busySession.length - 1;
    const iterator = busySession.generate({ maxTokens, temperature: 0 })[Symbol.asyncIterator]();
    await iterator.next(); // the decode thread is running now
    kept.push(busyModel, busyContext, busySession, iterator);
    result.steps.push(step);
    result.ok = true;
    result.ms = Math.round(performance.now() - started);
    process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
    return;
  }

  result.ok = true;
  result.ms = Math.round(performance.now() - started);
}

try {
  await main();
  if (!exitBusy) console.log(JSON.stringify(result));
} catch (err) {
  result.ok = false;
  result.step = step;
  result.error = { code: err?.code ?? null, message: String(err?.stack ?? err) };
  console.log(JSON.stringify(result));
  process.exitCode = 1;
}
