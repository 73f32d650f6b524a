/**
 * The node-llama-cpp side of the "speed" suite, run in a fresh process per measurement (it loads
 * its own llama.cpp): node bench/lib/nlc-worker.mjs '<json task>'. Prints one JSON line.
 * Uses node-llama-cpp as a new user would: getLlama → loadModel → createContext →
 * LlamaCompletion.generateCompletion with temperature 0; its prebuilt CPU binary, never a build.
 */
import path from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const task = JSON.parse(process.argv[2]);
const LAG_RESOLUTION_MS = 1;
// Resolved from bench/package.json, where npm run bench installs it.
const require = createRequire(path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "package.json"));
const { getLlama, LlamaCompletion, LlamaLogLevel } = await import(require.resolve("node-llama-cpp"));

// CPU only, prebuilt binary only: no GPU probing, no build, no download at run time.
const llama = await getLlama({
  gpu: false,
  build: "never",
  skipDownload: true,
  usePrebuiltBinaries: true,
  progressLogs: false,
  logLevel: LlamaLogLevel.error,
  // Exactly the threads asked for (its default caps contexts at max(math cores, 4)).
  maxThreads: task.context.threads,
});

let start = performance.now();
const model = await llama.loadModel({ modelPath: task.model, useMmap: true, gpuLayers: 0 });
const loadMs = performance.now() - start;

const kv = task.context.kvCacheType.toUpperCase();
start = performance.now();
const context = await model.createContext({
  sequences: 1,
  contextSize: task.context.contextSize,
  batchSize: task.context.batchSize,
  threads: task.context.threads,
  flashAttention: task.context.flashAttention === "auto" ? "auto" : task.context.flashAttention === "on",
  experimentalKvCacheKeyType: kv,
  experimentalKvCacheValueType: kv,
});
const contextMs = performance.now() - start;
const sequence = context.getSequence();
const completion = new LlamaCompletion({ contextSequence: sequence });

// Warm-up, as llama-bench does.
await completion.generateCompletion(task.prompt, { maxTokens: 4, temperature: 0 });
await sequence.clearHistory();

// Prompt speed: evaluating the prompt's tokens into an empty sequence.
const tokens = model.tokenize(task.prompt, false);
start = performance.now();
await sequence.evaluateWithoutGeneratingNewTokens(tokens);
const promptMs = performance.now() - start;
await sequence.clearHistory();

// Time to first token and generation speed: a completion of the same prompt from scratch.
let first = NaN;
let last = NaN;
let count = 0;
start = performance.now();
await completion.generateCompletion(task.prompt, {
  maxTokens: task.nGen + 1,
  temperature: 0,
  onToken(chunk) {
    last = performance.now();
    if (count === 0) first = last;
    count += chunk.length;
  },
});

// Event-loop lag: the same completion again, with the monitor on (not during the timed run, as
// for llama-napi: its 1 ms timer would slow the generation down).
await sequence.clearHistory();
const lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
lag.enable();
await completion.generateCompletion(task.prompt, { maxTokens: task.nGen + 1, temperature: 0 });
lag.disable();
const lagMs = (p) => Math.max(0, lag.percentile(p) / 1e6 - LAG_RESOLUTION_MS);

const result = {
  llamaCppRelease: llama.llamaCppRelease ?? null,
  buildType: llama.buildType,
  gpu: llama.gpu,
  loadMs,
  contextMs,
  promptTokens: tokens.length,
  promptMs,
  promptTokensPerS: tokens.length / (promptMs / 1e3),
  ttftMs: first - start,
  genTokens: count,
  genTokensPerS: (count - 1) / ((last - first) / 1e3),
  lagP50Ms: lagMs(50),
  lagP99Ms: lagMs(99),
  lagMaxMs: Math.max(0, lag.max / 1e6 - LAG_RESOLUTION_MS),
  maxRssKb: process.resourceUsage().maxRSS,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
