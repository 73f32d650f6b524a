/**
 * Embeddings, reranking and LoRA adapters, against the float64 references of the BERT and
 * Llama fixtures (tests/reference/bert.ts, tests/reference/llama.ts).
 */
import { describe, expect, it } from "vitest";

import { loadModel } from "../src/index.js";
import { loadBertReference } from "./reference/bert.js";
import { loadLlamaReference } from "./reference/llama.js";
import { fixturePath } from "./helpers/fixtures.js";
import { maxAbsDiff } from "./helpers/math.js";

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

const texts = ["The cat sat on the mat.", "A dog barked at the mailman", "quantum chromodynamics", "The cat sat on the mat."];

describe("embeddings (BERT fixture vs reference)", () => {
  it("mean pooling matches the reference; identical texts have cosine 1; a batch equals one by one", async () => {
    const file = fixturePath("bert-tiny-f32");
    using model = await loadModel(file);
    using ctx = await model.createEmbeddingContext({ flashAttention: "off", threads: 1 });
    const reference = await loadBertReference(file);
    const batch = await ctx.embed(texts);
    expect(ctx.pooling).toBe("mean");
    expect(batch).toHaveLength(4);
    for (const [i, text] of texts.entries()) {
      const expected = reference.forward([...model.tokenize(text)]).mean;
      expect(maxAbsDiff(batch[i], expected)).toBeLessThan(1e-3);
      // Alone or in a batch: the same vector (up to float rounding of other matrix shapes).
      const alone = await ctx.embed(text);
      expect(maxAbsDiff(alone, batch[i])).toBeLessThan(2e-4);
    }
    expect(cosine(batch[0], batch[3])).toBeCloseTo(1, 6);
    expect(cosine(batch[0], batch[1])).toBeLessThan(0.999);
    // L2 normalisation on request.
    const unit = await ctx.embed(texts[1], { normalize: true });
    expect(Math.hypot(...unit)).toBeCloseTo(1, 5);
    expect(cosine(unit, batch[1])).toBeCloseTo(1, 6);
  });

  it("changes the result as each pooling mode defines", async () => {
    const file = fixturePath("bert-tiny-f32");
    using model = await loadModel(file);
    const reference = await loadBertReference(file);
    const tokens = [...model.tokenize(texts[1])];
    const ref = reference.forward(tokens);
    const pooled = async (pooling: "none" | "mean" | "cls" | "last") => {
      using ctx = await model.createEmbeddingContext({ pooling, flashAttention: "off", threads: 1 });
      return await ctx.embed(texts[1]);
    };
    const none = await pooled("none");
    const dim = ref.mean.length;
    expect(none.length).toBe(tokens.length * dim);
    const row = (i: number) => none.subarray(i * dim, (i + 1) * dim);
    for (let i = 0; i < tokens.length; i++) expect(maxAbsDiff(row(i), ref.hidden[i])).toBeLessThan(1e-3);
    const mean = new Float64Array(dim);
    for (let i = 0; i < tokens.length; i++) for (let k = 0; k < dim; k++) mean[k] += row(i)[k] / tokens.length;
    expect(maxAbsDiff(await pooled("mean"), mean)).toBeLessThan(1e-5);
    expect(maxAbsDiff(await pooled("cls"), row(0))).toBeLessThan(1e-5);
    expect(maxAbsDiff(await pooled("last"), row(tokens.length - 1))).toBeLessThan(1e-5);
    expect(maxAbsDiff(await pooled("cls"), ref.cls)).toBeLessThan(1e-3);
  });

  it("reranks with a classifier head", async () => {
    const file = fixturePath("bert-rerank-tiny-f32");
    using model = await loadModel(file);
    using ctx = await model.createEmbeddingContext({ flashAttention: "off", threads: 1 });
    const reference = await loadBertReference(file);
    const query = "what do cats eat?";
    const docs = ["Cats eat fish and meat.", "The stock market fell today.", "Dogs chase cats."];
    const scores = await ctx.rerank(query, docs);
    expect(ctx.pooling).toBe("rank");
    expect(scores).toHaveLength(3);
    const st = model.specialTokens;
    for (const [i, doc] of docs.entries()) {
      // The pair as llama-server formats it: BOS query [EOS] [SEP] doc [EOS], each optional part
      // as the vocabulary asks; for this BERT vocabulary: [CLS] query [SEP] doc.
      expect([st.addBos, st.addEos, st.addSep]).toEqual([true, false, true]);
      const pair = [st.bos!, ...model.tokenize(query, { addSpecial: false }), st.sep!, ...model.tokenize(doc, { addSpecial: false })];
      const expected = reference.forward(pair).rank!;
      expect(Math.abs(scores[i] - expected[0])).toBeLessThan(1e-3);
    }
    using plain = await (await loadModel(fixturePath("bert-tiny-f32"))).createEmbeddingContext();
    await expect(plain.rerank(query, docs)).rejects.toMatchObject({ code: "ERR_UNSUPPORTED" });
    plain.model.dispose();
  });

  it("refuses sessions on an embedding context and embeddings on a generation context", async () => {
    using model = await loadModel(fixturePath("llama-tiny-f32"));
    using ctx = await model.createContext({ contextSize: 64, threads: 1 });
    // (Through the native layer: the public API has no way to ask either.)
    expect(() => ctx.native.embed([Int32Array.of(1, 2)], false)).toThrow(expect.objectContaining({ code: "ERR_UNSUPPORTED" }));
    using emb = await model.createEmbeddingContext({ pooling: "mean", threads: 1 });
    const v = await emb.embed("hello");
    expect(v.length).toBe(model.info.embeddingSize);
  });
});

describe("LoRA adapters (Llama fixture vs reference with merged weights)", () => {
  it("a zero adapter or scale 0 changes nothing; scale s changes the logits as the merged weights say", async () => {
    const base = fixturePath("llama-tiny-f32");
    const adapter = fixturePath("lora-llama-tiny");
    const zero = fixturePath("lora-llama-tiny-zero");
    using model = await loadModel(base);
    using ctx = await model.createContext({ contextSize: 64, threads: 1, kvCacheType: "f32", flashAttention: "off" });
    const prompt = "Hello world, this is a test";
    const logitsNow = async () => {
      using s = ctx.createSession();
      await s.prompt(prompt);
      return s.logits().slice();
    };
    const plain = await logitsNow();
    const tokens = [...model.tokenize(prompt)];
    const refPlain = (await loadLlamaReference(base)).forward(tokens).logits.at(-1)!;
    expect(maxAbsDiff(plain, refPlain)).toBeLessThan(1e-3);

    await ctx.setLora([{ path: zero, scale: 1 }]);
    expect(maxAbsDiff(await logitsNow(), plain)).toBeLessThan(1e-5);
    await ctx.setLora([{ path: adapter, scale: 0 }]);
    expect(maxAbsDiff(await logitsNow(), plain)).toBeLessThan(1e-5);
    for (const scale of [1, 0.5]) {
      await ctx.setLora([{ path: adapter, scale }]);
      const withLora = await logitsNow();
      const ref = (await loadLlamaReference(base, { loras: [{ path: adapter, scale }] })).forward(tokens).logits.at(-1)!;
      expect(maxAbsDiff(withLora, ref)).toBeLessThan(1e-3);
      expect(maxAbsDiff(withLora, plain)).toBeGreaterThan(1e-2);
    }
    await ctx.setLora([]);
    expect(maxAbsDiff(await logitsNow(), plain)).toBeLessThan(1e-5);
    await expect(ctx.setLora([{ path: "/nonexistent/adapter.gguf" }])).rejects.toMatchObject({ code: "ERR_MODEL_LOAD" });
    await expect(ctx.setLora([{ path: base }])).rejects.toMatchObject({ code: "ERR_MODEL_LOAD" });
  });
});
