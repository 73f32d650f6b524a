/**
 * Concurrency stress: 32 sessions over 4 contexts (8 sequences each) generate at once, with
 * seeded random aborts, forks, rewinds, appends, session disposals and a context disposal in
 * between, for a bounded time. Checks: no crash, no deadlock (every operation settles within
 * OP_BOUND_MS), no leaked KV sequences (freeSequences returns to its maximum and every sequence
 * can be filled to the brim again), and every greedy generation that was not aborted produced
 * the tokens it produces running alone in a one-sequence context.
 *
 * GPT-2 tiny F32 with an F32 KV cache and flash attention off, so that batched and solo
 * numerics agree; a mismatch at a near-tie of the top two logits is reported, not hidden.
 * LLAMA_NAPI_STRESS=1 (npm run test:stress) runs it for STRESS_SECONDS (default 120) instead of 5.
 */
import { afterAll, describe, expect, it } from "vitest";

import { LlamaError, loadModel, type Context, type Model, type Session } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";
import { mulberry32 } from "./helpers/math.js";

const LONG = process.env.LLAMA_NAPI_STRESS === "1";
const SECONDS = LONG ? Number(process.env.STRESS_SECONDS ?? 120) : 5;
const SEED = Number(process.env.STRESS_SEED ?? 20240611);
const CONTEXTS = 4;
const SEQUENCES = 8;
const CAPACITY = 128; // GPT-2 tiny's training context
const OP_BOUND_MS = 60_000;
const CONTEXT_OPTIONS = { contextSize: CAPACITY, sequences: SEQUENCES, threads: 1, kvCacheType: "f32", flashAttention: "off" } as const;

class Deadlock extends Error {}

/** Every operation must settle within OP_BOUND_MS: a hang fails the test instead of timing it out. */
function bounded<T>(promise: Promise<T>, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Deadlock(`${label} did not settle within ${OP_BOUND_MS} ms`)), OP_BOUND_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A greedy generation that ran to its end: what went in and what came out. */
interface GreedyRun {
  history: number[];
  maxTokens: number;
  tokens: number[];
  batched: boolean;
}

interface Counters {
  [name: string]: number;
}

interface Slot {
  context: Context;
  epoch: number;
}

const count = (counters: Counters, name: string) => (counters[name] = (counters[name] ?? 0) + 1);

/** Expected errors end an operation; anything else (and any deadlock) is a failure. */
const EXPECTED = new Set(["ERR_ABORTED", "ERR_DISPOSED", "ERR_NO_SEQUENCE", "ERR_CONTEXT_FULL"]);

async function runStress(model: Model, seconds: number, seed: number) {
  const slots: Slot[] = [];
  for (let c = 0; c < CONTEXTS; c++) slots.push({ context: await model.createContext(CONTEXT_OPTIONS), epoch: 0 });
  const runs: GreedyRun[] = [];
  const counters: Counters = {};
  const failures: string[] = [];
  const started = performance.now();
  const deadline = started + seconds * 1000;
  const master = mulberry32(seed);
  const vocab = model.info.vocabSize;
  let maxBatch = 0;
  let disposedContext = false;

  const actor = async (id: number, rng: () => number) => {
    const slotIndex = id % CONTEXTS;
    let session: Session | undefined;
    let epoch = -1;
    const randomTokens = (n: number) => Array.from({ length: n }, () => Math.floor(rng() * (vocab - 1)));
    const fail = (what: string, err: unknown) => {
      if (err instanceof LlamaError && EXPECTED.has(err.code)) {
        count(counters, err.code);
        return;
      }
      failures.push(`actor ${id} ${what}: ${err instanceof Error ? `${err.name}: ${err.message} ${err.stack?.split("\n").slice(1, 4).join(" / ")}` : String(err)}`);
    };
    /** Greedy generation on `s`, maybe aborted; a completed one is recorded. */
    const generate = async (s: Session, label: string) => {
      const room = CAPACITY - s.length;
      if (room < 2) {
        s.truncate(Math.floor(s.length / 2));
        return;
      }
      const history = [...s.tokens];
      const maxTokens = 1 + Math.floor(rng() * Math.min(24, room - 1));
      const abortAfter = rng() < 0.25 ? Math.floor(rng() * maxTokens) : -1;
      const controller = rng() < 0.5 ? new AbortController() : undefined;
      const generation = s.generate({ temperature: 0, maxTokens, signal: controller?.signal });
      const tokens: number[] = [];
      const consume = (async () => {
        for await (const { token } of generation) {
          if (tokens.length === abortAfter) {
            if (controller) controller.abort();
            else generation.abort();
          }
          tokens.push(token);
        }
      })();
      try {
        await bounded(consume, `${label} generation`);
      } catch (err) {
        // An AbortSignal ends the iteration with an AbortError.
        if (!(abortAfter >= 0 && err instanceof LlamaError && err.code === "ERR_ABORTED")) throw err;
      }
      if (abortAfter >= 0) {
        count(counters, "aborted");
        return;
      }
      expect(generation.finishReason === "length" || generation.finishReason === "eog", `finish ${generation.finishReason}`).toBe(true);
      if (generation.finishReason === "length") expect(tokens).toHaveLength(maxTokens);
      runs.push({ history, maxTokens, tokens, batched: true });
      count(counters, label);
    };

    while (performance.now() < deadline) {
      const slot = slots[slotIndex];
      try {
        if (!session || session.disposed || epoch !== slot.epoch) {
          session = slot.context.createSession();
          epoch = slot.epoch;
          await bounded(session.prompt(randomTokens(2 + Math.floor(rng() * 40))), "prompt");
          count(counters, "sessions");
        }
        maxBatch = Math.max(maxBatch, slot.context.stats().maxSequencesPerBatch);
        const r = rng();
        if (r < 0.4) {
          await generate(session, "generate");
        } else if (r < 0.55) {
          const child = await bounded(session.fork(), "fork");
          try {
            await generate(child, "fork");
          } finally {
            child.dispose();
          }
        } else if (r < 0.7) {
          session.rewind(Math.floor(rng() * session.length));
          if (session.length === 0) await bounded(session.prompt(randomTokens(3)), "prompt");
          await generate(session, "rewind");
        } else if (r < 0.8) {
          const extra = randomTokens(1 + Math.floor(rng() * 20));
          if (session.length + extra.length <= CAPACITY) {
            await bounded(session.prompt(extra, { append: true }), "append");
            count(counters, "append");
          }
        } else if (r < 0.9) {
          // Disposed with a generation in flight.
          const generation = session.generate({ temperature: 0, maxTokens: 8 });
          const pending = generation.collect().catch((err: unknown) => err);
          await new Promise((resolve) => setTimeout(resolve, rng() * 5));
          session.dispose();
          const outcome = await bounded(pending, "generation of a disposed session");
          if (outcome instanceof Error && !(outcome instanceof LlamaError && outcome.code === "ERR_DISPOSED")) fail("dispose", outcome);
          count(counters, "disposed-mid-generation");
        } else {
          session.dispose();
          count(counters, "disposed");
          await new Promise((resolve) => setTimeout(resolve, rng() * 10));
        }
      } catch (err) {
        if (err instanceof Deadlock) throw err;
        fail("operation", err);
        // Give the others a turn (a sequence to be freed, a disposed context to be replaced).
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    }
    session?.dispose();
  };

  // Once, at a random time, one context is disposed with its 8 actors busy, and replaced.
  const disposeAt = started + (0.3 + 0.4 * master()) * seconds * 1000;
  const disposer = (async () => {
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, disposeAt - performance.now())));
    const slot = slots[Math.floor(master() * CONTEXTS)];
    slot.context.dispose();
    slot.context = await model.createContext(CONTEXT_OPTIONS);
    slot.epoch++;
    disposedContext = true;
  })();

  const actors = Array.from({ length: CONTEXTS * SEQUENCES }, (_, id) => actor(id, mulberry32(Math.floor(master() * 2 ** 32))));
  const settled = await Promise.allSettled([...actors, disposer]);
  for (const s of settled) if (s.status === "rejected") failures.push(String(s.reason));
  const elapsed = (performance.now() - started) / 1000;
  return { slots, runs, counters, failures, elapsed, maxBatch, disposedContext };
}

/** Runs each greedy generation again alone: one context, one sequence, same settings. */
async function soloCheck(model: Model, runs: GreedyRun[]) {
  using context = await model.createContext({ ...CONTEXT_OPTIONS, sequences: 1 });
  using session = context.createSession();
  const mismatches: string[] = [];
  const nearTies: string[] = [];
  const seen = new Set<string>();
  let checked = 0;
  for (const run of runs) {
    const key = `${run.history.join(",")}|${run.maxTokens}`;
    if (seen.has(key)) continue;
    seen.add(key);
    await session.prompt(run.history);
    const solo = (await session.generate({ temperature: 0, maxTokens: run.maxTokens }).collect()).tokens;
    checked++;
    if (solo.join(",") === run.tokens.join(",")) continue;
    // Where the outputs part, how close were the two candidates in the solo logits?
    let k = 0;
    while (k < solo.length && solo[k] === run.tokens[k]) k++;
    await session.prompt([...run.history, ...solo.slice(0, k)]);
    const logits = session.logits();
    const a = solo[k] ?? -1;
    const b = run.tokens[k] ?? -1;
    const gap = a >= 0 && b >= 0 ? Math.abs(logits[a] - logits[b]) : Infinity;
    const line = `history of ${run.history.length} tokens, step ${k}: solo ${a}, batched ${b}, logit gap ${gap.toExponential(2)}`;
    // A batch of 8 sequences and a single one run different kernel shapes (another summation
    // order); each is within the oracle's 1e-3 of the exact logits, so two candidates closer
    // than that may swap (seen: gaps up to 2.0e-4 in 28,415 checked runs).
    if (gap < 1e-3) nearTies.push(line);
    else mismatches.push(line);
  }
  return { checked, mismatches, nearTies };
}

/** No leaked sequences: all free again, and each can be filled to capacity and agrees with solo. */
async function checkNoLeaks(model: Model, context: Context) {
  expect(context.freeSequences).toBe(SEQUENCES);
  const sessions = Array.from({ length: SEQUENCES }, () => context.createSession());
  const rng = mulberry32(7);
  const prompts = sessions.map(() => Array.from({ length: CAPACITY }, () => Math.floor(rng() * 50000)));
  await bounded(Promise.all(sessions.map((s, i) => s.prompt(prompts[i]))), "full prompts");
  const logits = sessions.map((s) => s.logits().slice());
  for (const s of sessions) s.dispose();
  expect(context.freeSequences).toBe(SEQUENCES);
  using solo = await model.createContext({ ...CONTEXT_OPTIONS, sequences: 1 });
  using one = solo.createSession();
  await one.prompt(prompts[3]);
  const expected = one.logits();
  let max = 0;
  for (let i = 0; i < expected.length; i++) max = Math.max(max, Math.abs(expected[i] - logits[3][i]));
  expect(max).toBeLessThan(1e-3);
}

describe(`concurrency stress (${SECONDS} s, seed ${SEED})`, () => {
  let model: Model | undefined;
  afterAll(() => model?.dispose());

  it("32 sessions over 4 contexts: no crash, no deadlock, no leaked sequence, same tokens as alone", { timeout: (SECONDS + 240) * 1000 }, async () => {
    model = await loadModel(fixturePath("gpt2-tiny-f32"));
    const stress = await runStress(model, SECONDS, SEED);
    expect(stress.failures, stress.failures.slice(0, 10).join("\n")).toEqual([]);
    expect(stress.disposedContext).toBe(true);
    for (const slot of stress.slots) await checkNoLeaks(model, slot.context);
    const solo = await soloCheck(model, stress.runs);
    const summary = {
      seconds: Number(stress.elapsed.toFixed(1)),
      greedyRuns: stress.runs.length,
      tokens: stress.runs.reduce((n, r) => n + r.tokens.length, 0),
      soloChecked: solo.checked,
      nearTies: solo.nearTies.length,
      maxSequencesPerBatch: stress.maxBatch,
      ...stress.counters,
    };
    console.log(`stress: ${JSON.stringify(summary)}`);
    for (const line of solo.nearTies) console.warn(`stress: near-tie (batched and solo numerics part at a tie): ${line}`);
    expect(solo.mismatches, solo.mismatches.join("\n")).toEqual([]);
    // The run did what it set out to do: batches of many sessions, and every kind of operation.
    expect(stress.maxBatch).toBeGreaterThanOrEqual(4);
    expect(stress.runs.length).toBeGreaterThan(20);
    for (const kind of ["fork", "rewind", "aborted", "disposed", "disposed-mid-generation", "append"]) {
      expect(stress.counters[kind] ?? 0, kind).toBeGreaterThan(0);
    }
    for (const slot of stress.slots) slot.context.dispose();
  });
});
