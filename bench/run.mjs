#!/usr/bin/env node
/**
 * npm run bench: llama-napi against raw llama.cpp (built from the same vendored source with the
 * same options) and against node-llama-cpp, with the same models, threads and machine, in one
 * run. Prints a table per suite and writes every figure to bench/results.json.
 *
 *   npm run bench -- [--quick] [--suite speed,tokenize] [--threads 2] [--reps 5]
 *
 * A suite is a module in bench/suites/ whose default export is
 *   { name, description, async run(ctx) => ({ results, tables: [{ title, columns, rows, notes }] }) }
 * (see makeContext below for what ctx offers); dropping a file there adds a suite.
 */
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { USAGE, UsageError, parseArgs } from "./lib/args.mjs";
import { lastJsonLine, runCommand, runWorker } from "./lib/child.mjs";
import { BENCH_DIR, ROOT, WORK_DIR, describeMachine, ensureBenchDependencies, ensureLibrary } from "./lib/env.mjs";
import { ensureModels } from "./lib/models.mjs";
import { printTable } from "./lib/table.mjs";
import { promptOfTokens } from "./lib/text.mjs";
import { compareCompileFlags, ensureTools } from "./lib/tools.mjs";

const SUITES_DIR = path.join(BENCH_DIR, "suites");
const RESULTS_FILE = path.join(BENCH_DIR, "results.json");

const log = (message) => console.error(`[bench] ${message}`);

async function loadSuites() {
  const files = fs.readdirSync(SUITES_DIR).filter((f) => f.endsWith(".mjs")).sort();
  const suites = [];
  for (const file of files) {
    const suite = (await import(pathToFileURL(path.join(SUITES_DIR, file)).href)).default;
    if (!suite || typeof suite.name !== "string" || typeof suite.run !== "function") {
      throw new Error(`bench/suites/${file} must export default { name, description, run(ctx) }`);
    }
    suites.push(suite);
  }
  // The original four first, in the order of their issues; later suites after them.
  const order = ["speed", "tokenize", "batched", "sampling"];
  const rank = (s) => (order.includes(s.name) ? order.indexOf(s.name) : order.length);
  return suites.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}

/** Runs `fn` once and keeps its promise: prerequisites are prepared only for suites that ask. */
function once(fn) {
  let promise;
  return () => (promise ??= Promise.resolve().then(fn));
}

/** What a suite gets: options, prerequisites on demand, and helpers to run children. */
function makeContext(options, shared) {
  const lib = once(() => import(pathToFileURL(path.join(ROOT, "dist", "index.js")).href));
  const models = once(async () => (shared.models = await ensureModels(log, { threads: options.threads })));
  const vocabModel = once(async () => (await lib()).loadModel((await models()).vocab.file, { vocabOnly: true }));
  const prompts = new Map();
  return {
    options,
    workDir: WORK_DIR,
    log,
    progress: (message) => log(message),
    /** { f16, q8_0, q4_0, vocab }: { file, type, bytes, madeWith }. */
    models,
    /** { "llama-bench", "llama-batched-bench", "llama-server", "llama-mtmd-cli", "llama-lookup", "llama-speculative-simple", "tokenize-bench", "load-bench", "media-bench" } → paths. */
    tools: once(() => {
      const tools = ensureTools(log);
      shared.compileFlags = compareCompileFlags();
      if (shared.compileFlags.checked && !shared.compileFlags.identical) {
        log(`WARNING: the tools' compile flags differ from the addon's: ${JSON.stringify(shared.compileFlags.differences)}`);
      }
      return tools;
    }),
    /** Installs node-llama-cpp into bench/node_modules if needed; resolves to its version. */
    nodeLlamaCpp: once(() => (shared.nodeLlamaCpp = ensureBenchDependencies(log))),
    /** Our library's Model for the GPT-2 vocabulary (vocab only), to prepare inputs. */
    vocabModel,
    /** English text of exactly `tokens` GPT-2 tokens. */
    prompt: async (tokens) => {
      if (!prompts.has(tokens)) prompts.set(tokens, promptOfTokens(await vocabModel(), tokens));
      return prompts.get(tokens);
    },
    runWorker,
    runCommand,
    lastJsonLine,
    /** Runs fn; on failure logs it, records it in results.json and resolves to null. */
    attempt: async (what, fn) => {
      try {
        return await fn();
      } catch (err) {
        log(`${what} failed: ${err.message}`);
        shared.errors.push({ what, error: err.message });
        return null;
      }
    },
    dispose: async () => (await vocabModel().catch(() => null))?.dispose(),
  };
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  if (options.help) return console.log(USAGE);
  const suites = await loadSuites();
  if (options.list) {
    for (const s of suites) console.log(`${s.name.padEnd(12)} ${s.description ?? ""}`);
    return;
  }
  const selected = options.suites ?? suites.map((s) => s.name);
  const unknown = selected.filter((name) => !suites.some((s) => s.name === name));
  if (unknown.length) throw new UsageError(`unknown suite(s): ${unknown.join(", ")}; available: ${suites.map((s) => s.name).join(", ")}`);

  fs.mkdirSync(WORK_DIR, { recursive: true });
  ensureLibrary(log);
  const started = new Date();
  const machine = describeMachine();
  log(`${machine.cpu}, ${machine.cores} cores, node ${machine.node}; threads ${options.threads}, reps ${options.reps}${options.quick ? ", quick" : ""}`);
  if (machine.loadAverage[0] > Math.max(1, machine.cores - options.threads)) {
    log(`WARNING: the machine is busy (load average ${machine.loadAverage[0].toFixed(1)} on ${machine.cores} cores): timings will be noisy`);
  }

  const shared = { errors: [] };
  const ctx = makeContext(options, shared);
  const results = {};
  let failed = false;
  for (const suite of suites.filter((s) => selected.includes(s.name))) {
    log(`suite ${suite.name}: ${suite.description ?? ""}`);
    const t0 = performance.now();
    try {
      const out = await suite.run(ctx);
      for (const t of out.tables ?? []) printTable(t.title, t.columns, t.rows, { notes: t.notes });
      results[suite.name] = { ...out.results, seconds: (performance.now() - t0) / 1e3 };
    } catch (err) {
      failed = true;
      log(`suite ${suite.name} failed: ${err.stack ?? err}`);
      results[suite.name] = { error: String(err.message ?? err) };
    }
  }
  await ctx.dispose();

  const report = {
    date: started.toISOString(),
    finished: new Date().toISOString(),
    machine,
    settings: { quick: options.quick, threads: options.threads, reps: options.reps, suites: selected },
    models: shared.models ?? null,
    nodeLlamaCpp: shared.nodeLlamaCpp ?? null,
    compileFlags: shared.compileFlags ?? null,
    errors: shared.errors,
    suites: results,
  };
  fs.writeFileSync(RESULTS_FILE, `${JSON.stringify(report, null, 2)}\n`);
  log(`wrote ${path.relative(process.cwd(), RESULTS_FILE) || RESULTS_FILE}`);
  if (failed) process.exitCode = 1;
}

main().catch((err) => {
  console.error(err instanceof UsageError ? `bench: ${err.message}` : (err.stack ?? String(err)));
  process.exit(1);
});
