/**
 * The native logits match an independent reference: a float64 GPT-2 forward pass written in
 * TypeScript (tests/reference/gpt2.ts), on an F32 model with random weights.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, type Context, type Model } from "../src/index.js";
import { loadGpt2Reference, type Gpt2Reference } from "./reference/gpt2.js";
import { fixturePath } from "./helpers/fixtures.js";
import { maxAbsDiff } from "./helpers/math.js";

const PROMPTS = [
  "Hello",
  "The pizza came out of the oven and it tasted good",
  "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
  "Zürich, 東京 and मुंबई are cities. 🚀",
];

function spread(a: ArrayLike<number>): number {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < a.length; i++) {
    lo = Math.min(lo, a[i]);
    hi = Math.max(hi, a[i]);
  }
  return hi - lo;
}

describe("logits oracle (F32 random GPT-2 vs TypeScript reference)", () => {
  let model: Model;
  let context: Context;
  let reference: Gpt2Reference;

  beforeAll(async () => {
    const file = fixturePath("gpt2-tiny-f32");
    model = await loadModel(file);
    context = await model.createContext({ contextSize: 128, threads: 2, kvCacheType: "f32", flashAttention: "off" });
    reference = await loadGpt2Reference(file);
  });
  afterAll(() => model?.dispose());

  for (const text of PROMPTS) {
    it(`matches for ${JSON.stringify(text.slice(0, 30))} evaluated in one batch`, async () => {
      const tokens = [...model.tokenize(text)];
      expect(tokens.length).toBeGreaterThan(0);
      const expected = reference.forward(tokens).logits.at(-1)!;
      using session = context.createSession();
      await session.prompt(tokens);
      const logits = session.logits();
      expect(logits.length).toBe(model.info.vocabSize);
      // The fixture's logits are spread out, so a match is not an accident of flat outputs.
      expect(spread(expected)).toBeGreaterThan(1);
      expect(maxAbsDiff(logits, expected)).toBeLessThan(1e-3);
    });
  }

  it("matches at every position when the prompt is fed one token at a time through the KV cache", async () => {
    const tokens = [...model.tokenize(PROMPTS[1])];
    const expected = reference.forward(tokens).logits;
    using session = context.createSession();
    for (let i = 0; i < tokens.length; i++) {
      const r = await session.prompt(tokens.slice(i, i + 1), { append: true });
      expect(r.evaluated).toBe(1);
      expect(maxAbsDiff(session.logits(), expected[i])).toBeLessThan(1e-3);
    }
  });

  it("gives the same logits for the batch and the token-by-token evaluation", async () => {
    const tokens = [...model.tokenize(PROMPTS[2])];
    using a = context.createSession();
    await a.prompt(tokens);
    const batched = a.logits().slice();
    a.dispose();
    using b = context.createSession();
    for (const t of tokens) await b.prompt([t], { append: true });
    expect(maxAbsDiff(b.logits(), batched)).toBeLessThan(1e-3);
  });
});
