/**
 * N-gram lookup decoding (generate's `lookup` option, native/EngineLookup.cc): drafts copied from
 * the history, decoded in one batch with the next token and kept as far as sampling confirms them.
 * The oracle is plain decoding: the same tokens, greedy or sampled with a seed, with every
 * generation feature, and a session left exactly as plain decoding leaves it.
 *
 * Exactness here is checked with an F32 KV cache and flash attention off. With F16 K/V, the
 * batched verification rounds the attention differently from one-token decoding (up to ~1.5e-3
 * in log-probabilities, measured on stories260K), so a near-tie can go the other way, as it can in
 * llama.cpp's own speculative decoding.
 */
import fs from "node:fs";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LlamaError, loadModel, type Context, type GenerateOptions, type GenerationResult, type Model } from "../src/index.js";
import { fixturePath, storiesModelPath } from "./helpers/fixtures.js";

const EXACT = { kvCacheType: "f32", flashAttention: "off", threads: 2 } as const;

let model: Model;
let context: Context;

beforeAll(async () => {
  model = await loadModel(fixturePath("gpt2-tiny-f32"));
  context = await model.createContext({ contextSize: 128, sequences: 3, ...EXACT });
});
afterAll(() => model?.dispose());

async function run(ctx: Context, prompt: string, options: GenerateOptions, then?: GenerateOptions): Promise<{ first: GenerationResult; second?: GenerationResult; history: number[] }> {
  using session = ctx.createSession();
  await session.prompt(prompt);
  const first = await session.generate(options).collect();
  // What the session holds afterwards must be what plain decoding leaves: the next generation shows it.
  const second = then ? await session.generate(then).collect() : undefined;
  return { first, ...(second ? { second } : {}), history: Array.from(session.tokens) };
}

const PROMPTS = ["The quick brown fox", "Hello, my name is", "1, 2, 3, 4, 5, 6, 7, 8,", "a a a a a a", "In 1905 Einstein published"];

describe("lookup decoding gives plain decoding's output", () => {
  it("greedy: the same tokens over prompts, lengths and draft settings, and drafts were kept", async () => {
    let accepted = 0;
    for (const prompt of PROMPTS) {
      for (const maxTokens of [1, 7, 110]) {
        const plain = await run(context, prompt, { maxTokens, temperature: 0 });
        for (const lookup of [true, maxTokens === 110 ? { ngramSize: 5, maxDraft: 32 } : { ngramSize: 1, maxDraft: 2 }] as const) {
          const fast = await run(context, prompt, { maxTokens, temperature: 0, lookup });
          expect(fast.first.tokens, `${prompt} / ${maxTokens} / ${JSON.stringify(lookup)}`).toEqual(plain.first.tokens);
          expect(fast.first.finishReason).toBe(plain.first.finishReason);
          expect(fast.history).toEqual(plain.history);
          expect(fast.first.lookup).toBeDefined();
          expect(fast.first.lookup!.accepted).toBeLessThanOrEqual(fast.first.lookup!.drafted);
          accepted += fast.first.lookup!.accepted;
        }
        expect(plain.first.lookup).toBeUndefined();
      }
    }
    // Random GPT-2 weights fall into loops under greedy decoding: most drafts there are right.
    expect(accepted).toBeGreaterThan(300);
  }, 120_000);

  it("sampled: the same tokens for the same seed (the sampler draws the same random numbers)", async () => {
    for (const seed of [1, 2, 3, 4]) {
      const options = { maxTokens: 80, temperature: 0.9, topK: 40, topP: 0.95, seed, repeatPenalty: 1.1 };
      const plain = await run(context, "a a a a a a", options);
      const fast = await run(context, "a a a a a a", { ...options, lookup: { ngramSize: 2, maxDraft: 8 } });
      expect(fast.first.tokens, `seed ${seed}`).toEqual(plain.first.tokens);
    }
  }, 60_000);

  it("stops at the same stop string and leaves the session as plain decoding does", async () => {
    const plain0 = await run(context, "1, 2, 3, 4, 5, 6, 7, 8,", { maxTokens: 60, temperature: 0 });
    // A stop string that occurs a few tokens into the output (inside a draft).
    const stop = plain0.first.text.slice(Math.floor(plain0.first.text.length / 2)).slice(0, 3);
    expect(stop.length).toBeGreaterThan(0);
    const then = { maxTokens: 20, temperature: 0 };
    const plain = await run(context, "1, 2, 3, 4, 5, 6, 7, 8,", { maxTokens: 60, temperature: 0, stop }, then);
    const fast = await run(context, "1, 2, 3, 4, 5, 6, 7, 8,", { maxTokens: 60, temperature: 0, stop, lookup: true }, then);
    expect(plain.first.finishReason).toBe("stop");
    expect(fast.first).toMatchObject({ text: plain.first.text, tokens: plain.first.tokens, finishReason: "stop" });
    expect(fast.second!.tokens).toEqual(plain.second!.tokens);
    expect(fast.history).toEqual(plain.history);
  }, 60_000);

  it("follows a grammar, reports the same logprobs, and honours maxTokens exactly", async () => {
    const grammar = 'root ::= ("ab" | " a" | " b")+';
    const plain = await run(context, "a a a a a a", { maxTokens: 40, temperature: 0, grammar, logprobs: 3 });
    const fastGen = context.createSession();
    await fastGen.prompt("a a a a a a");
    const items = [];
    for await (const item of fastGen.generate({ maxTokens: 40, temperature: 0, grammar, logprobs: 3, lookup: true })) items.push(item);
    fastGen.dispose();
    expect(items.map((i) => i.token)).toEqual(plain.first.tokens);
    expect(/^(ab| a| b)+$/.test(items.map((i) => i.text).join(""))).toBe(true);
    const plainItems: { logprob?: number }[] = [];
    {
      using s = context.createSession();
      await s.prompt("a a a a a a");
      for await (const item of s.generate({ maxTokens: 40, temperature: 0, grammar, logprobs: 3 })) plainItems.push(item);
    }
    for (let i = 0; i < items.length; i++) expect(items[i]!.logprob!).toBeCloseTo(plainItems[i]!.logprob!, 3); // batched vs one-row output: ~1e-4
    for (const maxTokens of [1, 3, 9, 17]) {
      const r = await run(context, "a a a a a a", { maxTokens, temperature: 0, lookup: { ngramSize: 2, maxDraft: 16 } });
      expect(r.first.tokens).toHaveLength(maxTokens);
    }
  }, 60_000);

  it("several sessions generating at once each get their plain output", async () => {
    const alone = await Promise.all(PROMPTS.slice(0, 3).map((p) => run(context, p, { maxTokens: 48, temperature: 0 })));
    const together = await Promise.all(PROMPTS.slice(0, 3).map((p, i) => run(context, p, { maxTokens: 48, temperature: 0, lookup: i !== 1 })));
    expect(together.map((r) => r.first.tokens)).toEqual(alone.map((r) => r.first.tokens));
  }, 60_000);

  it("aborts like plain decoding, and the session goes on", async () => {
    using session = context.createSession();
    await session.prompt("a a a a a a");
    const ac = new AbortController();
    let n = 0;
    const generation = session.generate({ maxTokens: 100, temperature: 0, lookup: true, signal: ac.signal });
    await expect(
      (async () => {
        for await (const _ of generation) if (++n === 5) ac.abort();
      })(),
    ).rejects.toMatchObject({ code: "ERR_ABORTED" });
    const next = await session.generate({ maxTokens: 4, temperature: 0, lookup: true }).collect();
    expect(next.tokens).toHaveLength(4);
  }, 30_000);

  it("matches plain decoding on a real model (stories260K), greedy", async (ctx) => {
    if (!fs.existsSync(storiesModelPath)) ctx.skip(`no ${storiesModelPath}`);
    const stories = await loadModel(storiesModelPath);
    try {
      const c = await stories.createContext({ contextSize: 1024, ...EXACT });
      let accepted = 0;
      for (const prompt of ["Once upon a time", "The cat sat on the mat. The cat sat on the"]) {
        const plain = await run(c, prompt, { maxTokens: 250, temperature: 0 });
        const fast = await run(c, prompt, { maxTokens: 250, temperature: 0, lookup: true });
        expect(fast.first.tokens).toEqual(plain.first.tokens);
        accepted += fast.first.lookup!.accepted;
      }
      expect(accepted).toBeGreaterThan(30);
    } finally {
      stories.dispose();
    }
  }, 120_000);
});

describe("lookup option", () => {
  it("refuses bad settings with ERR_INVALID_ARGUMENT", () => {
    using session = context.createSession();
    for (const lookup of [{ ngramSize: 0 }, { maxDraft: 65 }, { ngramSize: 2.5 }, { ngramSize: 3, ngramMin: 4 }, { other: 1 }, "yes", null]) {
      expect(() => session.generate({ lookup } as unknown as GenerateOptions)).toThrow(LlamaError);
      try {
        session.generate({ lookup } as unknown as GenerateOptions);
      } catch (err) {
        expect((err as LlamaError).code).toBe("ERR_INVALID_ARGUMENT");
      }
    }
  });
});
