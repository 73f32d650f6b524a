/**
 * Child process of tests/lifecycle-faults.test.ts: runs one fault scenario and reports on stdout
 * with lines "MARK <name>" and "RESULT <json>". Run with
 * `node --import ./tests/helpers/register-ts-cached.mjs tests/helpers/fault-child.ts <scenario> <json args>`.
 * Under `npm run test:asan` it inherits the sanitizer environment, so its exit is checked too.
 */
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

import { LlamaError, loadModel, type Generation } from "../../src/index.js";
import { binding } from "../../src/native.js";

interface Args {
  model: string;
  /** A slower model for long decodes. */
  wide?: string;
  rounds?: number;
  workers?: number;
  tokens?: number;
}

const mark = (name: string) => process.stdout.write(`MARK ${name}\n`);
const result = (value: unknown) => process.stdout.write(`RESULT ${JSON.stringify(value)}\n`);
const gc = () => (globalThis as { gc?: () => void }).gc?.();
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

function errorInfo(err: unknown): { llama: boolean; code?: string; message: string } {
  return err instanceof LlamaError
    ? { llama: true, code: err.code, message: err.message }
    : { llama: false, message: String(err) };
}

/** Leaves the process with process.exit() while a generation is running. */
async function exitMidGeneration(args: Args): Promise<void> {
  const model = await loadModel(args.model);
  const context = await model.createContext({ contextSize: 128, threads: 1 });
  const session = context.createSession();
  await session.prompt("The quick brown fox");
  let n = 0;
  for await (const _ of session.generate({ temperature: 0, maxTokens: 100 })) {
    if (++n === 5) {
      mark("exiting");
      process.exit(0);
    }
  }
}

/** Leaves the process with process.exit() while a long prompt is being decoded. */
async function exitMidDecode(args: Args): Promise<void> {
  const model = await loadModel(args.wide ?? args.model);
  const context = await model.createContext({ contextSize: 1024, batchSize: 1024, threads: 2 });
  const session = context.createSession();
  const tokens = Array.from({ length: 1000 }, (_, i) => 100 + ((i * 37) % 5000));
  void session.prompt(tokens).catch(() => undefined);
  setTimeout(() => {
    mark("exiting");
    process.exit(0);
  }, 30);
}

/** Leaves the process with process.exit() while a model is being read (on a libuv thread). */
async function exitMidLoad(args: Args): Promise<void> {
  let exiting = false;
  await loadModel(args.wide ?? args.model, {
    useMmap: false,
    onProgress: (p) => {
      if (p > 0.2 && !exiting) {
        exiting = true;
        mark("exiting");
        process.exit(0);
      }
    },
  });
  mark("loaded-before-exit");
}

/**
 * Returns from main with a generation whose consumer stopped reading: once its buffer is full it
 * pauses, and a paused generation must not keep the process alive. Nothing is disposed.
 */
async function returnWhilePaused(args: Args): Promise<void> {
  const model = await loadModel(args.model);
  const context = await model.createContext({ contextSize: 2048, threads: 1 });
  const session = context.createSession();
  await session.prompt([1, 2, 3]);
  const generation: Generation = session.generate({ temperature: 0, maxTokens: 2000 });
  const it = generation[Symbol.asyncIterator]();
  await it.next();
  await it.next();
  mark("returning");
}

/** Returns from main with a model, a context and sessions alive and never disposed. */
async function returnWithLiveHandles(args: Args): Promise<void> {
  const model = await loadModel(args.model);
  const context = await model.createContext({ contextSize: 128, sequences: 2, threads: 1 });
  const a = context.createSession();
  const b = context.createSession();
  await a.prompt("Hello there");
  await b.prompt("General Kenobi");
  await a.generate({ temperature: 0, maxTokens: 4 }).collect();
  mark("returning");
}

/**
 * Creates models, contexts and sessions and drops them without dispose(); the garbage collector
 * finalizes them. Reports RSS and V8's external-memory count after each round (after gc).
 */
async function gcFinalize(args: Args): Promise<void> {
  const rounds = args.rounds ?? 10;
  const rss: number[] = [];
  const external: number[] = [];
  for (let r = 0; r < rounds; r++) {
    await (async () => {
      const model = await loadModel(args.model);
      const context = await model.createContext({ contextSize: 64, sequences: 2, threads: 1 });
      const session = context.createSession();
      await session.prompt("Dropped without dispose");
      await session.generate({ temperature: 0, maxTokens: 3 }).collect();
      // A second session with a prompt still pending when it is dropped.
      void context.createSession().prompt("pending").catch(() => undefined);
    })();
    for (let i = 0; i < 6; i++) {
      gc();
      await tick();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    rss.push(process.memoryUsage().rss);
    // V8's external-memory count, which models and contexts report their size to.
    external.push(binding().externalMemory());
  }
  result({ rss, external });
}

/** Several worker threads load the model and generate at once; each reports its tokens. */
async function workers(args: Args): Promise<void> {
  const count = args.workers ?? 3;
  const run = (mode: string) =>
    new Promise<unknown>((resolve, reject) => {
      const w = new Worker(new URL(import.meta.url), { workerData: { mode, args } });
      let last: unknown;
      w.on("message", (m) => (last = m));
      w.on("error", reject);
      w.on("exit", (code) => (code === 0 ? resolve(last) : reject(new Error(`worker exited with ${code}`))));
    });
  const outputs = await Promise.all(Array.from({ length: count }, () => run("generate")));
  // The main thread uses the addon at the same time as the workers did.
  const model = await loadModel(args.model);
  const context = await model.createContext({ contextSize: 128, threads: 1 });
  const session = context.createSession();
  await session.prompt("The quick brown fox");
  const main = (await session.generate({ temperature: 0, maxTokens: args.tokens ?? 8 }).collect()).tokens;
  model.dispose();

  // Terminated at three points: while loading, mid-decode of a long prompt, mid-generation.
  const terminated: string[] = [];
  for (const [mode, when] of [["load", "loading"], ["decode", "decoding"], ["generate-forever", "generating"]] as const) {
    const w = new Worker(new URL(import.meta.url), { workerData: { mode, args } });
    await new Promise<void>((resolve, reject) => {
      w.on("message", (m) => {
        if (m === when) resolve();
      });
      w.on("error", reject);
    });
    const code = await w.terminate();
    terminated.push(`${mode}:${code}`);
  }
  result({ outputs, main, terminated });
}

async function workerMain(mode: string, args: Args): Promise<void> {
  const port = parentPort!;
  if (mode === "load") {
    port.postMessage("loading");
    await loadModel(args.wide ?? args.model);
    return;
  }
  const model = await loadModel(mode === "decode" ? args.wide ?? args.model : args.model);
  const context = await model.createContext({ contextSize: mode === "decode" ? 1024 : 128, batchSize: mode === "decode" ? 1024 : 512, threads: 1 });
  const session = context.createSession();
  if (mode === "decode") {
    const done = session.prompt(Array.from({ length: 1000 }, (_, i) => 100 + ((i * 37) % 5000)));
    port.postMessage("decoding");
    await done;
    return;
  }
  await session.prompt("The quick brown fox");
  if (mode === "generate-forever") {
    let n = 0;
    for await (const _ of session.generate({ temperature: 0.8, seed: 1, maxTokens: 120 })) {
      if (++n === 3) port.postMessage("generating");
    }
    // Keeps generating until terminated.
    for (;;) {
      session.truncate(session.length - 100);
      for await (const _ of session.generate({ temperature: 0.8, seed: 1, maxTokens: 100 }));
    }
  }
  const tokens = (await session.generate({ temperature: 0, maxTokens: args.tokens ?? 8 }).collect()).tokens;
  model.dispose();
  port.postMessage(tokens);
}

const SCENARIOS: Record<string, (args: Args) => Promise<void>> = {
  "exit-mid-generation": exitMidGeneration,
  "exit-mid-decode": exitMidDecode,
  "exit-mid-load": exitMidLoad,
  "return-while-paused": returnWhilePaused,
  "return-with-live-handles": returnWithLiveHandles,
  "gc-finalize": gcFinalize,
  workers,
};

if (isMainThread) {
  const [scenario, json] = process.argv.slice(2);
  const fn = SCENARIOS[scenario];
  if (!fn) throw new Error(`unknown scenario ${scenario}`);
  fn(JSON.parse(json) as Args).catch((err: unknown) => {
    result({ error: errorInfo(err) });
    process.exitCode = 3;
  });
} else {
  const { mode, args } = workerData as { mode: string; args: Args };
  workerMain(mode, args).catch((err: unknown) => {
    parentPort!.postMessage({ error: errorInfo(err) });
  });
}
