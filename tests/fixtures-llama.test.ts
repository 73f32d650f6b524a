/**
 * The random Llama fixtures (src/fixtures/llama.ts) load in llama.cpp, and llama.cpp's logits
 * match the float64 reference (tests/reference/llama.ts): RoPE, RMSNorm, SwiGLU and grouped-query
 * attention included.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LLAMA2_CHAT_TEMPLATE, LLAMA_PRESETS, writeRandomLlama, type LlamaOptions } from "../src/fixtures/llama.js";
import { ggufValue, metadataValues, readGguf, readTensorFloats, writeGguf, GgmlType, type GgufTensorInput } from "../src/gguf/index.js";
import { loadModel, type Context, type Model } from "../src/index.js";
import { FIXTURES, fixturePath } from "./helpers/fixtures.js";
import { loadLlamaReference, ropeAngles, type LlamaReference } from "./reference/llama.js";
import { maxAbsDiff } from "./helpers/math.js";

const PROMPTS = [
  "Hello",
  "The pizza came out of the oven and it tasted good",
  "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
  "Zürich, 東京 and मुंबई are cities. 🚀",
];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-llama-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function spread(a: ArrayLike<number>): number {
  let [lo, hi] = [Infinity, -Infinity];
  for (let i = 0; i < a.length; i++) [lo, hi] = [Math.min(lo, a[i]), Math.max(hi, a[i])];
  return hi - lo;
}

const sha256 = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");

/** A shape small enough to write quickly (the 32000-token vocabulary dominates). */
const MINI: LlamaOptions = { nEmbd: 16, nHead: 4, nHeadKv: 2, nLayer: 1, nCtx: 32, nFf: 32, seed: 3 };

describe("writeRandomLlama", () => {
  const file = fixturePath("llama-tiny-f32");

  it("writes the Llama layout llama.cpp expects", async () => {
    const gguf = await readGguf(file, { maxArrayLength: 1 });
    const { nEmbd, nHead, nHeadKv, nLayer, nCtx, nFf } = LLAMA_PRESETS.tiny;
    const kv = (nEmbd / nHead) * nHeadKv;
    expect(metadataValues(gguf)).toMatchObject({
      "general.architecture": "llama",
      "general.file_type": 0,
      "llama.context_length": nCtx,
      "llama.embedding_length": nEmbd,
      "llama.feed_forward_length": nFf,
      "llama.block_count": nLayer,
      "llama.attention.head_count": nHead,
      "llama.attention.head_count_kv": nHeadKv,
      "llama.rope.dimension_count": nEmbd / nHead,
      "llama.rope.freq_base": 10000,
      "llama.attention.layer_norm_rms_epsilon": Math.fround(1e-5),
      "tokenizer.ggml.model": "llama",
      "tokenizer.ggml.bos_token_id": 1,
      "tokenizer.ggml.eos_token_id": 2,
      "tokenizer.chat_template": LLAMA2_CHAT_TEMPLATE,
    });
    const shapes = Object.fromEntries(gguf.tensors.map((t) => [t.name, t.shape]));
    expect(gguf.tensors).toHaveLength(1 + 9 * nLayer + 2);
    expect(shapes).toMatchObject({
      "token_embd.weight": [nEmbd, 32000],
      "blk.1.attn_q.weight": [nEmbd, nEmbd],
      "blk.1.attn_k.weight": [nEmbd, kv],
      "blk.1.attn_v.weight": [nEmbd, kv],
      "blk.1.attn_output.weight": [nEmbd, nEmbd],
      "blk.1.ffn_gate.weight": [nEmbd, nFf],
      "blk.1.ffn_up.weight": [nEmbd, nFf],
      "blk.1.ffn_down.weight": [nFf, nEmbd],
      "output_norm.weight": [nEmbd],
      "output.weight": [nEmbd, 32000],
    });
  });

  it("is deterministic, and other seeds, a tied output, F16 and the BPE vocabulary change the file as they should", async () => {
    const write = async (name: string, opts: Partial<LlamaOptions> = {}) => {
      const p = path.join(tmp, name);
      await writeRandomLlama(p, { ...MINI, ...opts });
      return p;
    };
    const [a, b, c] = [await write("a.gguf"), await write("b.gguf"), await write("c.gguf", { seed: 4 })];
    expect(sha256(a)).toBe(sha256(b));
    expect(sha256(c)).not.toBe(sha256(a));
    const tied = await readGguf(await write("tied.gguf", { tiedOutput: true, type: "f16", ropeTheta: 500000, rmsEps: 1e-6 }), { maxArrayLength: 1 });
    expect(tied.tensors.map((t) => t.name)).not.toContain("output.weight");
    for (const t of tied.tensors) expect(t.type).toBe(t.shape.length === 2 ? GgmlType.F16 : GgmlType.F32);
    expect(metadataValues(tied)).toMatchObject({ "general.file_type": 1, "llama.rope.freq_base": 500000, "llama.attention.layer_norm_rms_epsilon": Math.fround(1e-6) });
    expect(metadataValues(tied)).not.toHaveProperty("tokenizer.chat_template");
    const bpe = await readGguf(fixturePath("llama-tiny-bpe-f16"), { maxArrayLength: 1 });
    expect(metadataValues(bpe)).toMatchObject({ "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.bos_token_id": 128000 });
    expect(bpe.tensors.find((t) => t.name === "token_embd.weight")?.shape).toEqual([64, 128256]);
  });

  it("rejects inconsistent shapes", async () => {
    const p = path.join(tmp, "bad.gguf");
    await expect(writeRandomLlama(p, { ...MINI, nHeadKv: 3 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(writeRandomLlama(p, { ...MINI, nHead: 3 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(writeRandomLlama(p, { ...MINI, nEmbd: 12, nHead: 4, nHeadKv: 4 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" }); // head size 3
  });
});

describe("llama.cpp runs the Llama fixture as the float64 reference does", () => {
  let model: Model;
  let context: Context;
  let reference: LlamaReference;
  const file = fixturePath("llama-tiny-f32");

  beforeAll(async () => {
    model = await loadModel(file);
    context = await model.createContext({ contextSize: 256, threads: 2, kvCacheType: "f32", flashAttention: "off" });
    reference = await loadLlamaReference(file);
  });
  afterAll(() => model?.dispose());

  it("reports a Llama with grouped-query attention and its own chat template", () => {
    const shape = FIXTURES["llama-tiny-f32"];
    expect(model.info).toMatchObject({
      architecture: "llama",
      vocabSize: 32000,
      vocabType: "spm",
      trainContextSize: shape.nCtx,
      embeddingSize: shape.nEmbd,
      layers: shape.nLayer,
      heads: shape.nHead,
      headsKv: shape.nHeadKv,
      learnedPositions: false,
    });
    expect(model.info.headsKv).toBeLessThan(model.info.heads);
    const [d, kv, ff] = [shape.nEmbd, (shape.nEmbd / shape.nHead) * shape.nHeadKv, shape.nFf];
    const expected = 2 * 32000 * d + shape.nLayer * (2 * d + 2 * d * d + 2 * d * kv + 3 * d * ff) + d;
    expect(model.info.parameters).toBe(expected);
    expect(model.chatTemplate).toBe(LLAMA2_CHAT_TEMPLATE);
    expect(model.specialTokens).toMatchObject({ bos: 1, eos: 2, addBos: true });
  });

  for (const text of PROMPTS) {
    it(`matches for ${JSON.stringify(text.slice(0, 30))} evaluated in one batch`, async () => {
      const tokens = [...model.tokenize(text)];
      expect(tokens[0]).toBe(1); // BOS
      const expected = reference.forward(tokens).logits.at(-1)!;
      using session = context.createSession();
      await session.prompt(tokens);
      expect(spread(expected)).toBeGreaterThan(4);
      expect(maxAbsDiff(session.logits(), expected)).toBeLessThan(1e-3);
    });
  }

  it("matches at every position when the prompt is fed one token at a time through the KV cache", async () => {
    const tokens = [...model.tokenize(PROMPTS[1])];
    const expected = reference.forward(tokens).logits;
    using session = context.createSession();
    for (let i = 0; i < tokens.length; i++) {
      await session.prompt([tokens[i]], { append: true });
      expect(maxAbsDiff(session.logits(), expected[i])).toBeLessThan(1e-3);
    }
  });

  it("depends on positions only through RoPE: llama.cpp and the reference agree on a repeated token", async () => {
    // No position embedding: a token repeated n times differs between positions only by the
    // rotation of q and k. The reference's last-position logits change with n, and llama.cpp follows.
    const rows: Float64Array[] = [];
    for (const n of [2, 9, 40]) {
      const tokens = [1, ...new Array<number>(n).fill(450)];
      const expected = reference.forward(tokens).logits.at(-1)!;
      using session = context.createSession();
      await session.prompt(tokens);
      expect(maxAbsDiff(session.logits(), expected)).toBeLessThan(1e-3);
      rows.push(expected);
    }
    expect(maxAbsDiff(rows[0], rows[1])).toBeGreaterThan(0.1);
    expect(maxAbsDiff(rows[1], rows[2])).toBeGreaterThan(0.1);
  });
});

describe("the reference Llama", () => {
  let reference: LlamaReference;
  const file = fixturePath("llama-tiny-f32");
  beforeAll(async () => {
    reference = await loadLlamaReference(file);
  });

  it("captures causal attention per query head and the residual stream per block", async () => {
    const tokens = [1, 450, 282, 3012, 29874, 2113, 714, 310];
    const n = tokens.length;
    const { attention, hidden, logits } = reference.forward(tokens, { capture: true });
    const { nHead, nLayer, nEmbd } = reference.hparams;
    expect(attention).toHaveLength(nLayer);
    expect(hidden).toHaveLength(nLayer);
    for (const layer of attention!) {
      expect(layer).toHaveLength(nHead);
      for (const map of layer) {
        expect(map).toHaveLength(n * n);
        expect(map[0]).toBe(1);
        for (let i = 0; i < n; i++) {
          const row = map.subarray(i * n, (i + 1) * n);
          expect(row.subarray(0, i + 1).reduce((s, p) => s + p, 0)).toBeCloseTo(1, 12);
          expect(row.subarray(i + 1).every((p) => p === 0)).toBe(true);
        }
      }
      // Heads 0 and 1 share a KV head but have their own queries: different maps.
      expect(maxAbsDiff(layer[0], layer[1])).toBeGreaterThan(0.05);
      expect(Math.max(...layer[0].subarray((n - 1) * n))).toBeGreaterThan(2 / n);
    }
    // The logits are the output projection of the RMS-normed last hidden state.
    const gguf = await readGguf(file, { maxArrayLength: 1 });
    const tensor = (name: string) => readTensorFloats(file, gguf.tensors.find((t) => t.name === name)!);
    const [normW, out] = [await tensor("output_norm.weight"), await tensor("output.weight")];
    const last = hidden![nLayer - 1].subarray((n - 1) * nEmbd, n * nEmbd);
    const rms = Math.sqrt(last.reduce((s, v) => s + v * v, 0) / nEmbd + reference.hparams.rmsEps);
    for (const v of [0, 1, 2, 450, 31999]) {
      const logit = last.reduce((s, x, d) => s + (x / rms) * normW[d] * out[v * nEmbd + d], 0);
      expect(logits[n - 1][v]).toBeCloseTo(logit, 10);
    }
  });

  it("computes RoPE angles as ggml's running float32 product, within 1e-5 of the exact ones", () => {
    const exact = ropeAngles(200, 16, 10000, "exact");
    const ggml = ropeAngles(200, 16, 10000, "ggml-cpu");
    expect(exact[0]).toBeCloseTo(Math.cos(200), 15);
    expect(exact[1]).toBeCloseTo(Math.sin(200), 15);
    expect(exact[3]).toBeCloseTo(Math.sin(200 / 10000 ** (2 / 16)), 12);
    expect(maxAbsDiff(exact, ggml)).toBeGreaterThan(0);
    expect(maxAbsDiff(exact, ggml)).toBeLessThan(1e-5);
  });
});

describe("grouped-query attention", () => {
  it("is the same as full multi-head attention with each KV head repeated for its group (llama.cpp and reference)", async () => {
    // Expand the fixture's K/V weights so query head h gets its own copy of KV head
    // floor(h / group): a plain multi-head model that must compute exactly the same thing.
    const src = fixturePath("llama-tiny-f32");
    const gguf = await readGguf(src);
    const { nEmbd, nHead, nHeadKv } = FIXTURES["llama-tiny-f32"];
    const [headDim, group] = [nEmbd / nHead, nHead / nHeadKv];
    const tensors: GgufTensorInput[] = [];
    for (const t of gguf.tensors) {
      const data = await readTensorFloats(src, t);
      if (!/attn_[kv]\.weight$/.test(t.name)) {
        tensors.push({ name: t.name, shape: t.shape, type: t.type, data });
        continue;
      }
      const expanded = new Float32Array(nEmbd * nEmbd);
      for (let h = 0; h < nHead; h++) {
        const kvHead = Math.floor(h / group);
        expanded.set(data.subarray(kvHead * headDim * nEmbd, (kvHead + 1) * headDim * nEmbd), h * headDim * nEmbd);
      }
      tensors.push({ name: t.name, shape: [nEmbd, nEmbd], type: t.type, data: expanded });
    }
    const mha = path.join(tmp, "mha.gguf");
    await writeGguf(mha, { metadata: { ...gguf.metadata, "llama.attention.head_count_kv": ggufValue.uint32(nHead) }, tensors });

    const tokens = [1, 15043, 29892, 590, 1024, 338, 263, 1243, 29889];
    const [gqaRef, mhaRef] = [await loadLlamaReference(src), await loadLlamaReference(mha)];
    expect(maxAbsDiff(gqaRef.forward(tokens).logits.at(-1)!, mhaRef.forward(tokens).logits.at(-1)!)).toBeLessThan(1e-12);

    const logitsOf = async (file: string) => {
      using model = await loadModel(file);
      const ctx = await model.createContext({ contextSize: 64, threads: 2, kvCacheType: "f32", flashAttention: "off" });
      using session = ctx.createSession();
      await session.prompt(tokens);
      return { headsKv: model.info.headsKv, logits: session.logits().slice() };
    };
    const [a, b] = [await logitsOf(src), await logitsOf(mha)];
    expect([a.headsKv, b.headsKv]).toEqual([nHeadKv, nHead]);
    expect(maxAbsDiff(a.logits, b.logits)).toBeLessThan(1e-4);
    expect(maxAbsDiff(a.logits, gqaRef.forward(tokens).logits.at(-1)!)).toBeLessThan(1e-3);
  });
});

describe("the BPE-vocabulary, tied, F16 fixture", () => {
  it("loads with Llama 3's vocabulary and runs close to the reference (F16 weights)", async () => {
    const file = fixturePath("llama-tiny-bpe-f16");
    using model = await loadModel(file);
    expect(model.info).toMatchObject({ architecture: "llama", vocabSize: 128256, vocabType: "bpe", headsKv: 2, heads: 4 });
    expect(model.chatTemplate).toBeNull();
    const tokens = [...model.tokenize("Hello, my name is")];
    expect(tokens[0]).toBe(128000);
    const ctx = await model.createContext({ contextSize: 64, threads: 2, kvCacheType: "f32", flashAttention: "off" });
    using session = ctx.createSession();
    await session.prompt(tokens);
    const expected = (await loadLlamaReference(file)).forward(tokens).logits.at(-1)!;
    // ggml multiplies F16 weights by activations rounded to F16. The reference rounds them too, but
    // float32-vs-float64 differences flip some of those roundings: measured up to 9e-3 here.
    expect(spread(expected)).toBeGreaterThan(4);
    expect(maxAbsDiff(session.logits(), expected)).toBeLessThan(2e-2);
  });
});
