/**
 * Speculative decoding with a draft model (generate's `speculative` option, native/EngineDraft.cc):
 * the draft model proposes tokens greedily, the target decodes them in one batch with its next
 * token and keeps them as far as its own sampler confirms them.
 *
 * Oracles: plain decoding (the same tokens, greedy or seeded, with every generation feature, and
 * the session left as plain decoding leaves it), and for sampling the target's own distribution:
 * a chi-square test of two-token continuations drawn with speculation against the probabilities
 * computed from the target's logits, one token at a time.
 *
 * Exactness runs with an F32 KV cache and flash attention off (see tests/lookup.test.ts: an F16
 * cache rounds batched and one-token attention differently).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LlamaError, loadModel, type Context, type GenerateOptions, type GenerationResult, type Model } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";

const EXACT = { kvCacheType: "f32", flashAttention: "off", threads: 2 } as const;
// Under the sanitizers (LLAMA_NAPI_SANITIZER, 10x slower): longer limits, fewer prompts.
const SANITIZED = process.env.LLAMA_NAPI_SANITIZER !== undefined;
const SLOW = SANITIZED ? 10 : 1;
const PROMPTS = ["The quick brown fox", "Hello, my name is", "1, 2, 3, 4, 5, 6, 7, 8,", "In 1905 Einstein published"];

let target: Model;
let otherSeed: Model; // the same shape, other weights (F16)
let otherSize: Model; // wider and deeper, other weights (F16)
let context: Context;

beforeAll(async () => {
  target = await loadModel(fixturePath("gpt2-tiny-f32"));
  otherSeed = await loadModel(fixturePath("gpt2-tiny-f16"));
  otherSize = await loadModel(fixturePath("gpt2-wide-f16"));
  context = await target.createContext({ contextSize: 128, sequences: 3, ...EXACT });
});
afterAll(() => {
  context?.dispose();
  for (const m of [target, otherSeed, otherSize]) m?.dispose();
});

async function run(prompt: string, options: GenerateOptions, then?: GenerateOptions): Promise<{ first: GenerationResult; second?: GenerationResult; history: number[] }> {
  using session = context.createSession();
  await session.prompt(prompt);
  const first = await session.generate(options).collect();
  // The session must hold what plain decoding leaves: the next generation shows it.
  const second = then ? await session.generate(then).collect() : undefined;
  return { first, ...(second ? { second } : {}), history: Array.from(session.tokens) };
}

describe("speculative decoding gives plain decoding's output", () => {
  it("greedy: the same tokens over prompts, lengths and draft models; a draft equal to the target is always right", async () => {
    for (const prompt of SANITIZED ? PROMPTS.slice(0, 2) : PROMPTS) {
      for (const maxTokens of [1, 9, 100]) {
        const then = { maxTokens: 5, temperature: 0 };
        const plain = await run(prompt, { maxTokens, temperature: 0 }, then);
        expect(plain.first.speculative).toBeUndefined();
        for (const [name, draft, maxDraft] of [["itself", target, 8], ["other seed", otherSeed, 4], ["other size", otherSize, 16]] as const) {
          const fast = await run(prompt, { maxTokens, temperature: 0, speculative: { draft, maxDraft } }, then);
          const what = `${prompt} / ${maxTokens} / ${name}`;
          expect(fast.first.tokens, what).toEqual(plain.first.tokens);
          expect(fast.first.finishReason, what).toBe(plain.first.finishReason);
          expect(fast.second!.tokens, what).toEqual(plain.second!.tokens);
          expect(fast.history, what).toEqual(plain.history);
          const stats = fast.first.speculative!;
          expect(stats.accepted).toBeLessThanOrEqual(stats.drafted);
          if (draft === target) {
            // Greedy drafts of the target itself: every one is kept, and drafts cover all but
            // the tokens sampled after a full draft (at most one per draft, and the first).
            expect(stats.accepted, what).toBe(stats.drafted);
            if (maxTokens === 100) expect(stats.drafted, what).toBeGreaterThan(80);
          }
        }
      }
    }
  }, 180_000 * SLOW);

  it("sampled: the same tokens for the same seed, up to a near-tie that batched logits order differently", async () => {
    // The verification batch's logits differ from one-token decoding's by ~1e-4 in log-probability
    // (another summation order), so where two tokens are that close the sampler can pick the
    // other one. Random weights have such near-ties; up to the first, the tokens are the same.
    const sample = async (seed: number, speculative?: GenerateOptions["speculative"]) => {
      using s = context.createSession();
      await s.prompt("Hello, my name is");
      const items = [];
      const options = { maxTokens: 60, temperature: 0.7, topK: 5, seed, repeatPenalty: 1.1, logprobs: 5 };
      for await (const item of s.generate({ ...options, ...(speculative ? { speculative } : {}) })) items.push(item);
      return items;
    };
    let identical = 0;
    for (const seed of [1, 2, 3, 4, 5]) {
      const plain = await sample(seed);
      for (const draft of [target, otherSeed]) {
        const fast = await sample(seed, { draft });
        const i = plain.findIndex((item, k) => item.token !== fast[k]?.token);
        if (i < 0) {
          expect(fast).toHaveLength(plain.length);
          identical++;
          continue;
        }
        const other = plain[i]!.top!.find((t) => t.token === fast[i]!.token);
        expect(other, `seed ${seed}: token ${i} is not a near-tie`).toBeDefined();
        expect(Math.abs(other!.logprob - plain[i]!.logprob!), `seed ${seed}: token ${i}`).toBeLessThan(1e-3);
      }
    }
    expect(identical).toBeGreaterThanOrEqual(5);
  }, 60_000 * SLOW);

  it("sampled: two-token continuations follow the target's distribution (chi-square)", async () => {
    const prompt = "Hello, my name is";
    const sampling = { temperature: 1, topK: 3, topP: 1, minP: 0 };
    // The oracle: p(t1) p(t2 | t1) over the three most likely tokens at each step, from logits.
    const top3 = (logits: Float32Array): Map<number, number> => {
      const ids = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!).slice(0, 3);
      const max = logits[ids[0]!]!;
      const w = ids.map((i) => Math.exp(logits[i]! - max));
      const sum = w.reduce((a, b) => a + b, 0);
      return new Map(ids.map((id, k) => [id, w[k]! / sum]));
    };
    const expected = new Map<string, number>();
    {
      using s = context.createSession();
      await s.prompt(prompt);
      const n = s.tokens.length;
      for (const [t1, p1] of top3(s.logits().slice())) {
        await s.prompt([t1], { append: true });
        for (const [t2, p2] of top3(s.logits().slice())) expected.set(`${t1},${t2}`, p1 * p2);
        s.truncate(n);
      }
    }
    // Fewer under the sanitizers (10x slower there): the same code paths.
    const N = SANITIZED ? 400 : 1500;
    const counts = new Map<string, number>();
    let drafted = 0;
    let accepted = 0;
    {
      using s = context.createSession();
      await s.prompt(prompt);
      const n = s.tokens.length;
      for (let seed = 1; seed <= N; seed++) {
        // Four tokens, so that the second is sampled from the verification batch's logits.
        const r = await s.generate({ ...sampling, seed, maxTokens: 4, speculative: { draft: target, maxDraft: 3 } }).collect();
        const key = `${r.tokens[0]},${r.tokens[1]}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
        drafted += r.speculative!.drafted;
        accepted += r.speculative!.accepted;
        s.truncate(n);
      }
    }
    for (const key of counts.keys()) expect(expected.has(key), `sampled ${key}, outside the top 3`).toBe(true);
    let chi2 = 0;
    for (const [key, p] of expected) chi2 += ((counts.get(key) ?? 0) - N * p) ** 2 / (N * p);
    // 9 cells, 8 degrees of freedom: P(chi2 > 26.12) = 0.001 under the model's distribution.
    expect(chi2).toBeLessThan(26.12);
    // The drafts were really in play: drafted greedily, kept as often as sampling agreed.
    expect(drafted).toBeGreaterThan(N);
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(drafted);
  }, 120_000 * SLOW);

  it("stops at the same stop string, follows a grammar and reports the same logprobs", async () => {
    const prompt = "1, 2, 3, 4, 5, 6, 7, 8,";
    const plain0 = await run(prompt, { maxTokens: 60, temperature: 0 });
    const stop = plain0.first.text.slice(Math.floor(plain0.first.text.length / 2)).slice(0, 3);
    const then = { maxTokens: 10, temperature: 0 };
    const plain = await run(prompt, { maxTokens: 60, temperature: 0, stop }, then);
    const fast = await run(prompt, { maxTokens: 60, temperature: 0, stop, speculative: { draft: target } }, then);
    expect(plain.first.finishReason).toBe("stop");
    expect(fast.first).toMatchObject({ text: plain.first.text, tokens: plain.first.tokens, finishReason: "stop" });
    expect(fast.second!.tokens).toEqual(plain.second!.tokens);

    const grammar = 'root ::= ("ab" | " a" | " b")+';
    const collect = async (speculative?: GenerateOptions["speculative"]) => {
      using s = context.createSession();
      await s.prompt("a a a a a a");
      const items = [];
      for await (const item of s.generate({ maxTokens: 30, temperature: 0, grammar, logprobs: 2, ...(speculative ? { speculative } : {}) })) items.push(item);
      return items;
    };
    const a = await collect();
    const b = await collect({ draft: otherSeed, maxDraft: 4 });
    expect(b.map((i) => i.token)).toEqual(a.map((i) => i.token));
    expect(/^(ab| a| b)+$/.test(b.map((i) => i.text).join(""))).toBe(true);
    for (let i = 0; i < a.length; i++) expect(b[i]!.logprob!).toBeCloseTo(a[i]!.logprob!, 3);
  }, 60_000 * SLOW);

  it("several sessions generating at once, with and without drafts, each get their plain output", async () => {
    const prompts = PROMPTS.slice(0, 3);
    const alone = await Promise.all(prompts.map((p) => run(p, { maxTokens: 40, temperature: 0 })));
    const drafts = [{ draft: target }, undefined, { draft: otherSize }] as const;
    const together = await Promise.all(prompts.map((p, i) => run(p, { maxTokens: 40, temperature: 0, ...(drafts[i] ? { speculative: drafts[i] } : {}) })));
    expect(together.map((r) => r.first.tokens)).toEqual(alone.map((r) => r.first.tokens));
  }, 60_000 * SLOW);

  it("aborts like plain decoding, and the session goes on", async () => {
    using session = context.createSession();
    await session.prompt("Hello, my name is");
    const ac = new AbortController();
    let n = 0;
    const generation = session.generate({ maxTokens: 100, temperature: 0, speculative: { draft: target }, signal: ac.signal });
    await expect(
      (async () => {
        for await (const _ of generation) if (++n === 5) ac.abort();
      })(),
    ).rejects.toMatchObject({ code: "ERR_ABORTED" });
    const history = Array.from(session.tokens);
    const next = await session.generate({ maxTokens: 6, temperature: 0, speculative: { draft: target } }).collect();
    // The oracle: the same history, continued without a draft.
    using plain = context.createSession();
    await plain.prompt(history);
    expect(next.tokens).toEqual((await plain.generate({ maxTokens: 6, temperature: 0 }).collect()).tokens);
  }, 30_000 * SLOW);
});

describe("speculative option", () => {
  const codeOf = async (options: GenerateOptions): Promise<string | undefined> => {
    using session = context.createSession();
    await session.prompt("Hello");
    try {
      await session.generate(options).collect();
      return undefined;
    } catch (err) {
      expect(err).toBeInstanceOf(LlamaError);
      return `${(err as LlamaError).code}: ${(err as LlamaError).message}`;
    }
  };

  it("refuses a draft model whose vocabulary differs, naming what differs", async () => {
    const llama = await loadModel(fixturePath("llama-tiny-f32"));
    try {
      const message = await codeOf({ maxTokens: 3, speculative: { draft: llama } });
      expect(message).toMatch(/^ERR_INVALID_ARGUMENT: options\.speculative\.draft cannot draft for this model: its tokenizer type differs/);
    } finally {
      llama.dispose();
    }
    // A tokenizer-only load has no weights to draft with.
    const vocabOnly = await loadModel(fixturePath("gpt2-tiny-f16"), { vocabOnly: true });
    try {
      expect(await codeOf({ maxTokens: 3, speculative: { draft: vocabOnly } })).toMatch(/^ERR_INVALID_ARGUMENT: .*vocabOnly/);
    } finally {
      vocabOnly.dispose();
    }
  });

  it("refuses bad settings, a disposed draft, and lookup beside it", async () => {
    const bad = [{ draft: target, maxDraft: 0 }, { draft: target, maxDraft: 65 }, { draft: target, minProbability: 1.5 }, { draft: target, other: 1 }, { draft: {} }, {}, null, "yes"];
    for (const speculative of bad) {
      expect(await codeOf({ speculative } as unknown as GenerateOptions)).toMatch(/^ERR_INVALID_ARGUMENT/);
    }
    expect(await codeOf({ maxTokens: 2, lookup: true, speculative: { draft: target } })).toMatch(/^ERR_INVALID_ARGUMENT: .*cannot be used together/);
    const gone = await loadModel(fixturePath("gpt2-tiny-f16"));
    gone.dispose();
    expect(await codeOf({ maxTokens: 2, speculative: { draft: gone } })).toMatch(/^ERR_DISPOSED/);
  });

  it("a draft model disposed while its drafts run finishes the generation, and the context stays usable", async () => {
    const draft = await loadModel(fixturePath("gpt2-tiny-f16"));
    using session = context.createSession();
    await session.prompt("Hello, my name is");
    const tokens: number[] = [];
    for await (const { token } of session.generate({ maxTokens: 40, temperature: 0, speculative: { draft } })) {
      tokens.push(token);
      if (tokens.length === 1) draft.dispose(); // the context holds the weights until it is done with them
    }
    expect(tokens).toHaveLength(40);
    const r = { tokens };
    expect((await run("Hello, my name is", { maxTokens: 40, temperature: 0 })).first.tokens).toEqual(r.tokens);
  });
});
