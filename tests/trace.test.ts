/**
 * session.trace() against the float64 reference GPT-2: attention probabilities, hidden states,
 * logit lens and next-token distribution.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, type Context, type Model } from "../src/index.js";
import { loadGpt2Reference, type Gpt2Reference } from "./reference/gpt2.js";
import { loadLlamaReference } from "./reference/llama.js";
import { fixturePath } from "./helpers/fixtures.js";
import { maxAbsDiff, softmax } from "./helpers/math.js";

describe("trace (GPT-2 vs the reference forward pass)", () => {
  let model: Model;
  let context: Context;
  let reference: Gpt2Reference;
  const text = "The pizza came out of the oven and it tasted good";

  beforeAll(async () => {
    const file = fixturePath("gpt2-tiny-f32");
    model = await loadModel(file);
    context = await model.createContext({ contextSize: 128, threads: 1, kvCacheType: "f32", flashAttention: "off" });
    reference = await loadGpt2Reference(file);
  });
  afterAll(() => model?.dispose());

  it("captures attention and hidden states that match the reference", async () => {
    using session = context.createSession();
    const trace = await session.trace(text, { logitLens: 3 });
    const tokens = [...model.tokenize(text)];
    expect([...trace.tokens]).toEqual(tokens);
    expect(trace.queryStart).toBe(0);
    const ref = reference.forward(tokens, { capture: true });
    const n = tokens.length;
    expect(trace.layers).toEqual([0, 1]);
    expect(trace.attention).toHaveLength(2);
    for (const [l, map] of trace.attention!.entries()) {
      expect(map.heads).toBe(4);
      expect(map.queries).toBe(n);
      expect(map.keys).toBe(n);
      for (let h = 0; h < map.heads; h++) {
        const expected = ref.attention![l][h];
        for (let q = 0; q < n; q++) {
          const row = map.row(h, q);
          let sum = 0;
          for (let k = 0; k < n; k++) {
            sum += row[k];
            if (k > q) expect(row[k]).toBe(0); // the future is masked exactly
            expect(Math.abs(row[k] - expected[q * n + k])).toBeLessThan(1e-4);
          }
          expect(Math.abs(sum - 1)).toBeLessThan(1e-5);
        }
      }
    }
    expect(trace.hiddenStates).toHaveLength(2);
    for (const [l, hidden] of trace.hiddenStates!.entries()) {
      const expected = ref.hidden![l];
      let worst = 0;
      for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(hidden[i] - expected[i]) / Math.max(1, Math.abs(expected[i])));
      expect(worst).toBeLessThan(1e-3);
    }
    // The logit lens at the last layer is the model's real output distribution.
    const lastLayer = trace.logitLens!.at(-1)!;
    const real = softmax(session.logits());
    const top = lastLayer.at(-1)!;
    expect(top).toHaveLength(3);
    expect(top[0].token).toBe(trace.next[0].token);
    for (const t of top) expect(Math.abs(t.probability - real[t.token])).toBeLessThan(1e-4);
    // And the next-token distribution equals softmax(reference logits).
    const refNext = softmax(ref.logits.at(-1)!);
    for (const t of trace.next) expect(Math.abs(t.probability - refNext[t.token])).toBeLessThan(1e-4);
    expect(trace.next[0].probability).toBeGreaterThanOrEqual(trace.next[1].probability);
  });

  it("traces a continuation: new tokens attend over the whole cached history", async () => {
    using session = context.createSession();
    const head = "The pizza came out of the oven";
    await session.prompt(head);
    const before = context.stats().tokensDecoded;
    const trace = await session.trace(" and it tasted good", { hiddenStates: false, layers: [1] });
    const all = [...model.tokenize(text)];
    expect([...trace.tokens]).toEqual(all);
    const nHead = model.tokenize(head).length;
    expect(trace.queryStart).toBe(nHead);
    expect(trace.hiddenStates).toBeUndefined();
    const map = trace.attention![0];
    expect(map.layer).toBe(1);
    expect(map.queries).toBe(all.length - nHead);
    expect(map.keys).toBe(all.length);
    const ref = reference.forward(all, { capture: true }).attention![1];
    for (let h = 0; h < map.heads; h++) {
      for (let q = 0; q < map.queries; q++) {
        const row = ref[h].subarray((nHead + q) * all.length, (nHead + q + 1) * all.length);
        expect(maxAbsDiff(map.row(h, q), row)).toBeLessThan(1e-4);
      }
    }
    // The session's own cache evaluated only the new tokens, and goes on after them.
    expect(context.stats().tokensDecoded - before).toBe(all.length - nHead);
    expect([...session.tokens]).toEqual(all);
    expect(maxAbsDiff(session.logits(), reference.forward(all).logits.at(-1)!)).toBeLessThan(1e-3);
  });

  it("exposes the embeddings and tensor shapes the model is made of", async () => {
    const tokens = model.tokenize("Hello");
    const emb = model.tokenEmbedding(tokens[0]);
    expect(emb).toHaveLength(64);
    const table = model.tensors.find((t) => t.name === "token_embd.weight")!;
    expect(table.shape).toEqual([64, 50257]);
    expect(model.tensors.find((t) => t.name === "position_embd.weight")!.shape).toEqual([64, 128]);
    // Layer 0's residual input is token + position embedding: check through the reference.
    const ref = reference.forward([tokens[0]], { capture: true });
    expect(ref.hidden).toBeDefined();
    const pos = model.positionEmbedding(0);
    expect(pos).toHaveLength(64);
    expect(() => model.positionEmbedding(128)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => model.tokenEmbedding(50257)).toThrow(expect.objectContaining({ code: "ERR_TOKEN_INVALID" }));
  });
});

describe("trace on a grouped-query-attention model (Llama)", () => {
  it("reports one attention map per query head, matching the reference", async () => {
    const file = fixturePath("llama-tiny-f32");
    using model = await loadModel(file);
    using context = await model.createContext({ contextSize: 64, threads: 1, kvCacheType: "f32" });
    using session = context.createSession();
    const trace = await session.trace("Hello world, how are you?");
    expect(trace.heads).toBe(model.info.heads);
    expect(trace.headsKv).toBe(model.info.headsKv);
    expect(trace.headsKv).toBeLessThan(trace.heads);
    const reference = await loadLlamaReference(file);
    const ref = reference.forward([...trace.tokens], { capture: true });
    const n = trace.tokens.length;
    for (const [l, map] of trace.attention!.entries()) {
      for (let h = 0; h < map.heads; h++) {
        expect(maxAbsDiff(map.data.subarray(h * n * n, (h + 1) * n * n), ref.attention![l][h])).toBeLessThan(1e-4);
      }
    }
    expect(() => model.positionEmbedding(0)).toThrow(expect.objectContaining({ code: "ERR_UNSUPPORTED" }));
  });
});
