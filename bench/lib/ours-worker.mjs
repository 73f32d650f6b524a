/**
 * The llama-napi side of the benchmark, run in a fresh process per measurement:
 *   node bench/lib/ours-worker.mjs '{"mode": "speed", ...}'
 * Prints one JSON line. Uses the built library (dist/), as a user of the package would.
 */
import fs from "node:fs";
import path from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const lib = await import(pathToFileURL(path.join(ROOT, "dist", "index.js")).href);
const task = JSON.parse(process.argv[2]);
const LAG_RESOLUTION_MS = 1;

/** Loads the model (timed) after the addon itself is loaded, so only the model load is counted. */
async function load(file, options = {}) {
  lib.systemInfo();
  const start = performance.now();
  const model = await lib.loadModel(file, options);
  return { model, loadMs: performance.now() - start };
}

/** Generates and times each token's arrival: first token, last token and their count. */
async function timedGenerate(session, options) {
  let first = NaN;
  let last = NaN;
  let count = 0;
  for await (const _ of session.generate(options)) {
    last = performance.now();
    if (count === 0) first = last;
    count++;
  }
  return { first, last, count };
}

/** Prompt, then generate greedily: load time, prompt speed, time to first token, generation speed, lag, peak RSS. */
async function speed() {
  const { model, loadMs } = await load(task.model, { useMmap: true });
  let start = performance.now();
  const context = await model.createContext(task.context);
  const contextMs = performance.now() - start;

  // Warm-up, as llama-bench does: one short run on its own session, then a fresh session.
  const warm = context.createSession();
  await warm.prompt(task.prompt);
  await warm.generate({ maxTokens: 4, temperature: 0 }).collect();
  warm.dispose();

  const session = context.createSession();
  start = performance.now();
  const prompted = await session.prompt(task.prompt);
  const promptMs = performance.now() - start;

  // nGen + 1 tokens: the first comes from the prompt's logits, then nGen decodes (llama-bench's tg).
  const gen = await timedGenerate(session, { maxTokens: task.nGen + 1, temperature: 0 });
  session.dispose();

  // Event-loop lag: the same generation again on a fresh session, with the lag monitor on. Not
  // during the timed run: the monitor's 1 ms timer wakes the JS thread about four times a token,
  // which on two cores preempts a compute thread (about 3% of the tokens/s, measured).
  const lagged = context.createSession();
  await lagged.prompt(task.prompt);
  const lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  lag.enable();
  await timedGenerate(lagged, { maxTokens: task.nGen + 1, temperature: 0 });
  lag.disable();
  lagged.dispose();
  const lagMs = (p) => Math.max(0, lag.percentile(p) / 1e6 - LAG_RESOLUTION_MS);
  return {
    loadMs,
    contextMs,
    promptTokens: prompted.evaluated,
    promptMs,
    promptTokensPerS: prompted.evaluated / (promptMs / 1e3),
    ttftMs: gen.first - start,
    genTokens: gen.count,
    genTokensPerS: (gen.count - 1) / ((gen.last - gen.first) / 1e3),
    lagP50Ms: lagMs(50),
    lagP99Ms: lagMs(99),
    lagMaxMs: Math.max(0, lag.max / 1e6 - LAG_RESOLUTION_MS),
    maxRssKb: process.resourceUsage().maxRSS,
  };
}

/** model.tokenize over a text file: one warm-up, then `reps` timed runs. */
async function tokenize() {
  const { model } = await load(task.vocab, { vocabOnly: true });
  const text = fs.readFileSync(task.textFile, "utf8");
  const bytes = Buffer.byteLength(text);
  let tokens = model.tokenize(text).length;
  const timesMs = [];
  for (let i = 0; i < task.reps; i++) {
    const start = performance.now();
    tokens = model.tokenize(text).length;
    timesMs.push(performance.now() - start);
  }
  return { bytes, tokens, timesMs };
}

/** N sessions of one context generating at once; aggregate generation tokens/s per N. */
async function batched() {
  const { model } = await load(task.model, { useMmap: true });
  const results = [];
  for (const n of task.parallel) {
    const context = await model.createContext({ ...task.context, sequences: n });
    const prompts = task.prompts.slice(0, n);
    // Warm-up on throwaway sessions, then fresh sessions for the measurement.
    const warm = prompts.map(() => context.createSession());
    await Promise.all(warm.map((s, i) => s.prompt(prompts[i])));
    await Promise.all(warm.map((s) => s.generate({ maxTokens: 2, temperature: 0 }).collect()));
    for (const s of warm) s.dispose();

    const sessions = prompts.map(() => context.createSession());
    let start = performance.now();
    await Promise.all(sessions.map((s, i) => s.prompt(prompts[i])));
    const promptMs = performance.now() - start;
    // Each session: a first token from its prompt's logits, then nGen decodes batched with the others.
    start = performance.now();
    const gens = await Promise.all(sessions.map((s) => timedGenerate(s, { maxTokens: task.nGen + 1, temperature: 0 })));
    const genMs = Math.max(...gens.map((g) => g.last)) - start;
    const decoded = gens.reduce((sum, g) => sum + g.count - 1, 0);
    results.push({
      parallel: n,
      promptTokens: prompts.reduce((sum, p) => sum + p.length, 0),
      promptMs,
      generated: gens.reduce((sum, g) => sum + g.count, 0),
      decoded,
      genMs,
      genTokensPerS: decoded / (genMs / 1e3),
    });
    context.dispose();
  }
  return { results };
}

/** Generation speed with one sampler setting (greedy or the default chain). */
async function sampling() {
  const { model } = await load(task.model, { useMmap: true });
  const context = await model.createContext(task.context);
  const out = {};
  for (const mode of task.order) {
    const options = mode === "greedy" ? { temperature: 0 } : { seed: task.seed };
    const warm = context.createSession();
    await warm.prompt(task.prompt);
    await warm.generate({ ...options, maxTokens: 4 }).collect();
    warm.dispose();
    const session = context.createSession();
    await session.prompt(task.prompt);
    const gen = await timedGenerate(session, { ...options, maxTokens: task.nGen + 1 });
    session.dispose();
    out[mode] = { genTokens: gen.count, genTokensPerS: (gen.count - 1) / ((gen.last - gen.first) / 1e3) };
  }
  return out;
}

/** Prompt and greedy generation, with the layers local or on RPC servers (task.rpcServers). */
async function rpc() {
  const { model, loadMs } = await load(task.model, task.rpcServers ? { rpcServers: task.rpcServers } : {});
  const context = await model.createContext(task.context);
  const warm = context.createSession();
  await warm.prompt(task.prompt);
  await warm.generate({ maxTokens: 4, temperature: 0 }).collect();
  warm.dispose();
  const session = context.createSession();
  const start = performance.now();
  const prompted = await session.prompt(task.prompt);
  const promptMs = performance.now() - start;
  const gen = await timedGenerate(session, { maxTokens: task.nGen + 1, temperature: 0 });
  return {
    loadMs,
    promptTokensPerS: prompted.evaluated / (promptMs / 1e3),
    genTokens: gen.count,
    genTokensPerS: (gen.count - 1) / ((gen.last - gen.first) / 1e3),
  };
}

/**
 * Images and audio (the "media" suite): per round, the time to the first greedy token of a prompt
 * with one media item on a fresh session (the file's bytes decoded, encoded by the projector, and
 * every chunk evaluated), then the media item alone (model.encodeMedia). Round 0 warms up.
 */
async function media() {
  const { model } = await load(task.model);
  await model.loadProjector(task.projector, { threads: task.threads });
  const item = { [task.kind]: fs.readFileSync(task.media) };
  const [before, after] = task.prompt.split(task.marker);
  const encodeMs = [];
  const ttftMs = [];
  const context = await model.createContext(task.context);
  for (let round = 0; round <= task.rounds; round++) {
    // A fresh session on an empty sequence: nothing of the last round's is reused.
    const session = context.createSession();
    const start = performance.now();
    await session.prompt([before, item, after], { addSpecial: true, parseSpecial: true });
    await session.generate({ maxTokens: 1, temperature: 0 }).collect();
    const ttft = performance.now() - start;
    session.dispose();
    const t = performance.now();
    await model.encodeMedia(item);
    const encode = performance.now() - t;
    if (round > 0) {
      ttftMs.push(ttft);
      encodeMs.push(encode);
    }
  }
  context.dispose();
  return { encodeMs, ttftMs };
}

/** Lookup decoding (the "speculative" suite): plain generation against task.lookup's. */
async function lookup() {
  const { model } = await load(task.model);
  const context = await model.createContext(task.context);
  const r = await plainAgainst(model, context, { lookup: task.lookup }, (g) => g.lookup);
  context.dispose();
  return { plainTokensPerS: r.plain, lookupTokensPerS: r.fast, drafted: r.drafted, accepted: r.accepted, sameText: r.sameText, text: r.text };
}

/**
 * The "speculative" suite's draft-model cases: the same as lookup, with generate's `speculative`
 * option; the draft model is loaded from its own file (task.draft), as llama-speculative-simple
 * does, even when it is the target's.
 */
async function draft() {
  const { model } = await load(task.model);
  const draftModel = await lib.loadModel(task.draft);
  const context = await model.createContext(task.context);
  const r = await plainAgainst(model, context, { speculative: { draft: draftModel, ...task.speculative } }, (g) => g.speculative);
  context.dispose();
  draftModel.dispose();
  return { plainTokensPerS: r.plain, draftTokensPerS: r.fast, drafted: r.drafted, accepted: r.accepted, tokens: r.counts, sameText: r.sameText, text: r.text };
}

/**
 * Greedy generation of task.nGen tokens after task.prompt (EOS banned), plain and with `fast`
 * (options that draft), alternating over task.rounds after a warm-up of each; tokens/s from the
 * first token to the last, and the drafts' counts (`stats` of each fast generation) summed.
 */
async function plainAgainst(model, context, fast, stats) {
  const eos = model.specialTokens.eos;
  const base = { maxTokens: task.nGen + 1, temperature: 0, ...(eos === null ? {} : { logitBias: [[eos, -Infinity]] }) };
  const rates = { plain: [], fast: [] };
  const texts = { plain: "", fast: "" };
  const counts = { plain: 0, fast: 0 };
  let drafted = 0;
  let accepted = 0;
  for (let round = 0; round <= task.rounds; round++) {
    for (const mode of round % 2 === 0 ? ["plain", "fast"] : ["fast", "plain"]) {
      const session = context.createSession();
      await session.prompt(task.prompt);
      const generation = session.generate(mode === "plain" ? base : { ...base, ...fast });
      let first = NaN;
      let last = NaN;
      let count = 0;
      let text = "";
      for await (const item of generation) {
        last = performance.now();
        if (count++ === 0) first = last;
        text += item.text;
      }
      session.dispose();
      texts[mode] = text;
      counts[mode] = count;
      if (round === 0) continue; // warm-up
      rates[mode].push((count - 1) / ((last - first) / 1e3));
      if (mode === "fast") {
        const s = stats(generation);
        if (!s) throw new Error("no draft counts after a generation that drafts");
        drafted += s.drafted;
        accepted += s.accepted;
      }
    }
  }
  return { plain: rates.plain, fast: rates.fast, drafted, accepted, counts, sameText: texts.plain === texts.fast, text: texts.plain };
}

const modes = { speed, tokenize, batched, sampling, rpc, media, lookup, draft };
if (!(task.mode in modes)) throw new Error(`unknown mode ${task.mode}`);
const result = await modes[task.mode]();
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
