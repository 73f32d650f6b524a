/**
 * `generate({ prompt })`: the prompt is evaluated by the generation itself, in the decode
 * batches of the context's other sessions, and the first token is sampled from the decode that
 * ends it. The oracle is the two-call path it replaces: `prompt()` then `generate()` on another
 * session of the same context (same tokens, same PromptResult), and a session run alone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { AbortError, LlamaError, loadModel, type Context, type Model, type Session } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";

const GREEDY = { temperature: 0, maxTokens: 10 } as const;
const PROMPTS = [
  "The pizza came out of the oven and it tasted",
  "Once upon a time, in a village by the sea,",
  "The quick brown fox jumps over",
  "In 1492 the ships left the harbour and",
];

let model: Model;
let context: Context;

beforeAll(async () => {
  model = await loadModel(fixturePath("gpt2-tiny-f32"));
  context = await model.createContext({ contextSize: 64, threads: 2, sequences: 4 });
});
afterAll(() => model?.dispose());

/** The two-call path: prompt(), then generate(). */
async function twoCalls(session: Session, prompt: string | number[]) {
  const prompted = await session.prompt(prompt);
  const { tokens } = await session.generate(GREEDY).collect();
  return { prompted, tokens };
}

/** The one-call path. */
async function oneCall(session: Session, prompt: string | number[]) {
  const generation = session.generate({ ...GREEDY, prompt });
  const [prompted, { tokens }] = await Promise.all([generation.prompted, generation.collect()]);
  return { prompted, tokens };
}

describe("generate({ prompt })", () => {
  it("generates what prompt() then generate() do, and reports the same PromptResult, prefix reuse included", async () => {
    using a = context.createSession();
    using b = context.createSession();
    const first = await twoCalls(a, PROMPTS[0]);
    const one = await oneCall(b, PROMPTS[0]);
    expect(one).toEqual(first);
    expect(one.prompted).toEqual({ evaluated: model.tokenize(PROMPTS[0]).length, reused: 0, length: model.tokenize(PROMPTS[0]).length });
    expect([...b.tokens]).toEqual([...a.tokens]);

    // The next turn: the history and a reply; the cached prefix is kept in both.
    const next = [...a.tokens, ...model.tokenize(" and then", { addSpecial: false })];
    const again = await twoCalls(a, next);
    const oneAgain = await oneCall(b, next);
    expect(oneAgain).toEqual(again);
    expect(oneAgain.prompted?.reused).toBe(first.prompted.length + GREEDY.maxTokens - 1);

    // The same prompt once more: everything is cached; the last token is evaluated again.
    const same = await oneCall(b, next);
    expect(same.prompted).toEqual({ evaluated: 1, reused: next.length - 1, length: next.length });
    expect(same.tokens).toEqual(again.tokens);
  });

  it("sessions prompted together on one context generate what each generates alone", async () => {
    const expected: number[][] = [];
    for (const prompt of PROMPTS) {
      using own = await model.createContext({ contextSize: 64, threads: 2 });
      using session = own.createSession();
      expected.push((await twoCalls(session, prompt)).tokens);
    }
    using shared = await model.createContext({ contextSize: 64, threads: 2, sequences: 4 });
    const sessions = PROMPTS.map(() => shared.createSession());
    try {
      const results = await Promise.all(sessions.map((s, i) => oneCall(s, PROMPTS[i])));
      expect(results.map((r) => r.tokens)).toEqual(expected);
      expect(results.map((r) => r.prompted?.evaluated)).toEqual(PROMPTS.map((p) => model.tokenize(p).length));
      // The prompts shared batches (with each other, or with the first tokens of the others).
      expect(shared.stats().maxSequencesPerBatch).toBeGreaterThan(1);
    } finally {
      for (const s of sessions) s.dispose();
    }
  });

  it("the first token comes from the decode that ends the prompt", async () => {
    using session = context.createSession();
    const before = context.stats().decodeCalls;
    const generation = session.generate({ ...GREEDY, maxTokens: 4, prompt: PROMPTS[1] });
    const iterator = generation[Symbol.asyncIterator]();
    await generation.prompted;
    // The first token came with the prompt's result: no further decode is waited for.
    const first = await Promise.race([iterator.next(), new Promise<"later">((resolve) => setImmediate(() => resolve("later")))]);
    expect(first).toMatchObject({ done: false });
    let count = 1;
    while (!(await iterator.next()).done) count++;
    expect(count).toBe(4);
    // The prompt's decode gave token 1; tokens 2-4 took one decode each.
    expect(context.stats().decodeCalls - before).toBe(4);
  });

  it("an abort before the prompt ran ends the generation without tokens and keeps the cached history", async () => {
    using session = context.createSession();
    await session.prompt(PROMPTS[2]);
    const history = [...session.tokens];
    const generation = session.generate({ ...GREEDY, prompt: [...history, ...model.tokenize(" again", { addSpecial: false })] });
    generation.abort();
    await expect(generation.prompted).rejects.toBeInstanceOf(AbortError);
    const result = await generation.collect();
    expect(result).toMatchObject({ tokens: [], finishReason: "aborted" });
    // The prompt's tail never reached the cache: the history is what was cached before.
    expect([...session.tokens]).toEqual(history);
    // The session goes on.
    expect((await oneCall(session, PROMPTS[2])).tokens).toHaveLength(GREEDY.maxTokens);

    // An AbortSignal aborted already: nothing runs, the history stays.
    const controller = new AbortController();
    controller.abort(new Error("stop"));
    const stopped = session.generate({ ...GREEDY, prompt: PROMPTS[3], signal: controller.signal });
    await expect(stopped.prompted).rejects.toBeInstanceOf(AbortError);
    await expect(stopped.collect()).rejects.toBeInstanceOf(AbortError);
    expect(session.length).toBe(model.tokenize(PROMPTS[2]).length + GREEDY.maxTokens);
  });

  it("an abort within a long prompt stops its decode; the history keeps what reached the cache", async () => {
    using wide = await loadModel(fixturePath("gpt2-wide-f16"));
    using ctx = await wide.createContext({ contextSize: 1024, batchSize: 1024, threads: 2 });
    using session = ctx.createSession();
    const prompt = Array.from({ length: 1000 }, (_, i) => 200 + (i % 500));
    // How long the whole prompt takes here.
    let started = performance.now();
    await session.prompt(prompt);
    const full = performance.now() - started;
    session.truncate(0);

    const generation = session.generate({ ...GREEDY, prompt });
    started = performance.now();
    setTimeout(() => generation.abort(), full / 4);
    await expect(generation.prompted).rejects.toBeInstanceOf(AbortError);
    expect(await generation.collect()).toMatchObject({ tokens: [], finishReason: "aborted" });
    const took = performance.now() - started;
    expect(took).toBeLessThan(full);
    // Whole micro-batches that were decoded stay; the rest of the prompt is not in the history.
    const kept = session.length;
    expect(kept).toBeLessThan(prompt.length);
    expect([...session.tokens]).toEqual(prompt.slice(0, kept));
    // The session goes on from there, reusing what was kept.
    const again = session.generate({ ...GREEDY, maxTokens: 2, prompt });
    expect(await again.prompted).toEqual({ evaluated: prompt.length - kept, reused: kept, length: prompt.length });
    expect((await again.collect()).tokens).toHaveLength(2);
  }, 60_000);

  it("a plain generate() aborted before it started produces nothing", async () => {
    using session = context.createSession();
    await session.prompt(PROMPTS[0]);
    const generation = session.generate({ ...GREEDY, maxTokens: 40 });
    generation.abort();
    expect(await generation.collect()).toMatchObject({ tokens: [], finishReason: "aborted" });
    expect(await generation.prompted).toBeUndefined();
    expect(session.length).toBe(model.tokenize(PROMPTS[0]).length);
  });

  it("refuses a bad prompt with a typed error and leaves the history as it was", async () => {
    using session = context.createSession();
    await session.prompt(PROMPTS[0]);
    const history = [...session.tokens];
    const failing = async (prompt: number[], code: string) => {
      const generation = session.generate({ ...GREEDY, prompt });
      await expect(generation.prompted).rejects.toMatchObject({ code });
      await expect(generation.collect()).rejects.toMatchObject({ code });
      expect([...session.tokens]).toEqual(history);
    };
    await failing([1, model.info.vocabSize], "ERR_TOKEN_INVALID");
    // The session's 64 positions: a 64-token prompt leaves no room for a reply.
    await failing(Array.from({ length: 64 }, (_, i) => 100 + i), "ERR_CONTEXT_FULL");
    await failing([], "ERR_INVALID_ARGUMENT");
    expect(() => session.generate({ prompt: 5 as unknown as string })).toThrow(LlamaError);
    expect(() => session.generate({ prompt: 5 as unknown as string })).toThrow(/options\.prompt must be a string or token ids/);
    // Still usable.
    expect((await oneCall(session, PROMPTS[1])).tokens).toHaveLength(GREEDY.maxTokens);
  });
});
