/**
 * T5 (issue 20): the UGM vocabulary of the T5 fixtures, the encoder (t5encoder embeddings) and
 * the encoder–decoder sessions, all against the float64 reference of tests/reference/t5.ts.
 *
 * Tolerances (max abs differences). Contexts use an F32 KV cache and no flash attention: an F16
 * cache (or flash attention's F16 K/V in the cross-attention) rounds keys and values to F16.
 * - ReLU fixture (t5-tiny-relu-f32): logits 1e-3, attention probabilities 1e-4, as the other
 *   reference tests. Nothing in its graph is table-driven, so only float32 rounding separates
 *   llama.cpp from the float64 reference: simulated in the reference (±1.5e-6 relative noise on
 *   every matrix product), it moves logits by < 5e-5 and probabilities by < 1e-5.
 * - GELU-gated fixtures (t5-tiny-f32, t5encoder-tiny-f32): ggml's CPU GELU reads a float16 table
 *   at the float16-rounded gate value, and the reference rounds the same way; but where a gate
 *   value lies within float32 rounding of a float16 rounding boundary (a few in a thousand), the
 *   two round it to neighbouring float16 values and that GELU output differs by one float16 ulp
 *   (~5e-4 relative). T5's unscaled attention and the 32000-row output projection amplify those
 *   flips: the same simulated float32 noise moves the encoder output by up to 6e-4, logits by
 *   1e-3..4.4e-3 and probabilities by up to 5e-4. So: encoder output 1e-3, logits 1e-2,
 *   probabilities 1e-3, still far below what a wrong bucket, bias, mask or encoder input would
 *   cause (differences of 0.1 and more).
 * Measured (2026-12, CPU): t5encoder output 4.1e-4; t5-tiny-f32 logits 1.2e-3 (6.3e-3 in the
 * sanitizer build, -O1: other float32 rounding, other flips), probabilities 3.6e-5;
 * t5-tiny-relu-f32 logits 2.2e-6, probabilities 9e-7.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, type AttentionMap, type Context, type Model, type TraceResult } from "../src/index.js";
import { LLAMA_VOCAB_PATHS } from "../src/fixtures/llama.js";
import { metadataValues, readGguf } from "../src/gguf/index.js";
import { T5_PRESETS, writeRandomT5 } from "../src/fixtures/t5.js";
import { loadT5Reference, relativePositionBucket, type T5Reference } from "./reference/t5.js";
import { fixturePath, type FixtureName } from "./helpers/fixtures.js";
import { maxAbsDiff } from "./helpers/math.js";

const ENCODER_TEXT = "translate English to German: The quick brown fox jumps over the lazy dog, and the pizza came out of the oven.";
/** Teacher-forced decoder input: long enough (> 16 tokens) to reach the decoder's logarithmic buckets. */
const DECODER_TEXT = "Der schnelle braune Fuchs springt über den faulen Hund, und die Pizza kam aus dem Ofen.";
/** Per fixture: max abs difference of logits and of attention probabilities, max relative difference of hidden states (see above). */
const TOLERANCE = {
  "t5-tiny-f32": { logits: 1e-2, attention: 1e-3, hidden: 1e-2 },
  "t5-tiny-relu-f32": { logits: 1e-3, attention: 1e-4, hidden: 1e-3 },
} as const satisfies Partial<Record<FixtureName, { logits: number; attention: number; hidden: number }>>;
const CONTEXT_OPTIONS = { contextSize: 128, threads: 2, sequences: 2, kvCacheType: "f32", flashAttention: "off" } as const;

function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** The tokens whose reference logit is within `slack` of the maximum (the acceptable greedy picks). */
function nearMax(logits: Float64Array, slack: number): number[] {
  const max = logits[argmax(logits)];
  return Array.from(logits.keys()).filter((i) => logits[i] >= max - slack);
}

/** Checks `map` (queries from `queryStart` on) against reference probabilities [head][query][key]; rows must sum to 1. */
function expectAttention(map: AttentionMap, expected: Float64Array[][], queryStart: number, tolerance: number, label: string): void {
  expect(map.heads, label).toBe(expected.length);
  expect(map.queries, label).toBe(expected[0].length - queryStart);
  expect(map.keys, label).toBe(expected[0][0].length);
  let worst = 0;
  for (let h = 0; h < map.heads; h++) {
    for (let q = 0; q < map.queries; q++) {
      const row = map.row(h, q);
      worst = Math.max(worst, maxAbsDiff(row, expected[h][queryStart + q]));
      expect(Math.abs(row.reduce((s, p) => s + p, 0) - 1), `${label} row sum h${h} q${q}`).toBeLessThan(1e-5);
    }
  }
  expect(worst, label).toBeLessThan(tolerance);
}

/** The encoder-decoder parts of a trace, checked present. */
function present(trace: TraceResult): { encoder: { tokens: Int32Array; pieces: string[]; attention: AttentionMap[] }; crossAttention: AttentionMap[] } {
  expect(trace.encoder?.attention, "trace.encoder.attention").toBeDefined();
  expect(trace.crossAttention, "trace.crossAttention").toBeDefined();
  return { encoder: { ...trace.encoder!, attention: trace.encoder!.attention! }, crossAttention: trace.crossAttention! };
}

describe("the T5 fixtures' UGM vocabulary", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixturePath("t5-tiny-f32"));
  });
  afterAll(() => model?.dispose());

  it("is T5's layout (<pad> 0, </s> 1, <unk> 2) over the Llama SentencePiece pieces, and appends </s>", async () => {
    expect(model.info).toMatchObject({ architecture: "t5", vocabType: "ugm", vocabSize: 32000 });
    expect(model.specialTokens).toMatchObject({ bos: null, eos: 1, pad: 0, addBos: false, addEos: true });
    const tokens = (await readGguf(fixturePath("t5-tiny-f32"))).metadata["tokenizer.ggml.tokens"].value as string[];
    const spm = (await readGguf(LLAMA_VOCAB_PATHS.spm)).metadata["tokenizer.ggml.tokens"].value as string[];
    expect(tokens.slice(0, 3)).toEqual(["<pad>", "</s>", "<unk>"]);
    expect(tokens.slice(3)).toEqual(spm.slice(3));
    const hello = Array.from(model.tokenize("Hello world"));
    expect(hello.map((t) => tokens[t])).toEqual(["▁Hello", "▁world", "</s>"]);
    expect(hello.map((t) => model.tokenToPiece(t, { special: true }))).toEqual([" Hello", " world", "</s>"]);
    expect(Array.from(model.tokenize("Hello world", { addSpecial: false }))).toEqual(hello.slice(0, 2));
  });

  it("tokenizes English into whole-word pieces, merges extra whitespace, and maps unknown characters to <unk>", () => {
    const pieces = (text: string) => Array.from(model.tokenize(text, { addSpecial: false }), (t) => model.tokenToPiece(t));
    expect(pieces("translate English to German: That is good.")).toEqual([" translate", " English", " to", " German", ":", " That", " is", " good", "."]);
    expect(Array.from(model.tokenize("  Hello   world  "))).toEqual(Array.from(model.tokenize("Hello world")));
    const emoji = Array.from(model.tokenize("Hello 😀", { addSpecial: false }));
    expect(emoji).toContain(2);
    for (const text of [ENCODER_TEXT, DECODER_TEXT]) expect(model.detokenize(model.tokenize(text, { addSpecial: false }))).toBe(text);
  });
});

describe("relativePositionBucket (the reference's copy of llama_relative_position_bucket)", () => {
  it("gives T5's buckets: exact near, logarithmic far, capped", () => {
    // Encoder (bidirectional, 32 buckets): 16 per direction, keys after the query in the upper half.
    expect([0, 1, 7, 8, 15, 16, 31, 32, 64, 127, 500].map((d) => relativePositionBucket(0, d, 32, true))).toEqual([0, 1, 7, 8, 9, 10, 11, 12, 14, 15, 15]);
    expect([1, 7, 16].map((d) => relativePositionBucket(d, 0, 32, true))).toEqual([17, 23, 26]);
    // Decoder (causal, 32 buckets): 16 exact, then logarithmic; future keys would be bucket 0.
    expect([0, 15, 16, 32, 64, 128].map((d) => relativePositionBucket(0, d, 32, false))).toEqual([0, 15, 16, 21, 26, 31]);
    expect(relativePositionBucket(5, 0, 32, false)).toBe(0);
  });
});

describe("writeRandomT5", () => {
  const tensorNames = async (name: FixtureName) => new Set((await readGguf(fixturePath(name), { maxArrayLength: 1 })).tensors.map((t) => t.name));

  it("writes the layout llama.cpp's t5 and t5encoder loaders read", async () => {
    const gated = await readGguf(fixturePath("t5-tiny-f32"), { maxArrayLength: 1 });
    expect(metadataValues(gated)).toMatchObject({
      "general.architecture": "t5",
      "t5.block_count": 2,
      "t5.attention.relative_buckets_count": 32,
      "t5.decoder_start_token_id": 0,
      "tokenizer.ggml.model": "t5",
      "tokenizer.ggml.add_eos_token": true,
    });
    expect(gated.metadata["t5.decoder_block_count"]).toBeUndefined(); // as many decoder as encoder blocks
    const names = await tensorNames("t5-tiny-f32");
    for (const n of ["enc.blk.0.attn_rel_b.weight", "dec.blk.0.attn_rel_b.weight", "enc.blk.1.ffn_gate.weight", "dec.blk.1.cross_attn_o.weight", "output.weight"]) expect(names, n).toContain(n);
    for (const n of ["enc.blk.1.attn_rel_b.weight", "dec.blk.1.attn_rel_b.weight"]) expect(names, n).not.toContain(n);
    const relu = await readGguf(fixturePath("t5-tiny-relu-f32"), { maxArrayLength: 1 });
    expect(metadataValues(relu)).toMatchObject({ "t5.block_count": 3, "t5.decoder_block_count": 2, "t5.decoder_start_token_id": 2 });
    const reluNames = await tensorNames("t5-tiny-relu-f32");
    for (const n of ["enc.blk.2.attn_rel_b.weight", "dec.blk.1.attn_rel_b.weight"]) expect(reluNames, n).toContain(n);
    for (const n of ["enc.blk.0.ffn_gate.weight", "dec.blk.2.attn_q.weight", "output.weight"]) expect(reluNames, n).not.toContain(n);
    const encoder = await tensorNames("t5encoder-tiny-f32");
    expect([...encoder].some((n) => n.startsWith("dec.") || n === "output.weight")).toBe(false);
  });

  it("refuses a decoder deeper than the encoder (llama.cpp sizes per-layer state by block_count) and odd bucket counts", async () => {
    for (const bad of [{ nDecLayer: 3 }, { nBuckets: 7 }, { nHead: 5 }]) {
      await expect(writeRandomT5("/nonexistent/t5.gguf", { ...T5_PRESETS.tiny, seed: 1, ...bad })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    }
  });
});

describe("t5encoder embeddings vs the reference", () => {
  let model: Model;
  let reference: T5Reference;
  beforeAll(async () => {
    model = await loadModel(fixturePath("t5encoder-tiny-f32"));
    reference = await loadT5Reference(fixturePath("t5encoder-tiny-f32"));
  });
  afterAll(() => model?.dispose());

  it("pooling none gives each token's encoder output (after enc.output_norm) within 1e-3", async () => {
    expect(model.info).toMatchObject({ architecture: "t5encoder", hasEncoder: true, hasDecoder: false });
    const tokens = Array.from(model.tokenize(ENCODER_TEXT));
    expect(tokens.length).toBeGreaterThan(17); // distances past 16 reach the logarithmic buckets
    const ref = reference.encode(tokens);
    using ctx = await model.createEmbeddingContext({ pooling: "none", threads: 2 });
    const none = await ctx.embed(ENCODER_TEXT);
    const dim = reference.hparams.nEmbd;
    expect(none.length).toBe(tokens.length * dim);
    for (let i = 0; i < tokens.length; i++) expect(maxAbsDiff(none.subarray(i * dim, (i + 1) * dim), ref.output[i]), `token ${i}`).toBeLessThan(1e-3);
    // Mean pooling averages the same rows.
    using meanCtx = await model.createEmbeddingContext({ pooling: "mean", threads: 2 });
    const mean = new Float64Array(dim);
    for (const row of ref.output) row.forEach((v, k) => (mean[k] += v / tokens.length));
    expect(maxAbsDiff(await meanCtx.embed(ENCODER_TEXT), mean)).toBeLessThan(1e-3);
  });

  it("the fixture's attention is far from uniform, and the relative bias alone shapes it by distance", () => {
    const tokens = Array.from(model.tokenize(ENCODER_TEXT));
    const n = tokens.length;
    const meanMax = (maps: Float64Array[][]) => maps.flat().reduce((sum, row) => sum + Math.max(...row), 0) / (maps.length * n);
    for (const layer of reference.encode(tokens).attention) expect(meanMax(layer)).toBeGreaterThan(5 / n);
    // One token repeated: every q·k of layer 0 is the same, so without the bias each row would be uniform.
    const same = reference.encode(Array<number>(n).fill(tokens[1])).attention[0];
    expect(meanMax(same)).toBeGreaterThan(3 / n);
    expect(maxAbsDiff(same[0][2], same[0][n - 3].slice().reverse())).toBeGreaterThan(0.01); // before ≠ after
  });
});

/** What the encoder–decoder tests need of a fixture: the model, a context and the reference. */
interface Loaded {
  model: Model;
  context: Context;
  reference: T5Reference;
  encoderTokens: number[];
  encoderOutput: Float64Array[];
  start: number;
  teacher: number[];
}

describe.each(["t5-tiny-f32", "t5-tiny-relu-f32"] as const)("%s: encoder–decoder sessions vs the reference", (name) => {
  const tol = TOLERANCE[name];
  let t: Loaded;
  beforeAll(async () => {
    const model = await loadModel(fixturePath(name));
    const reference = await loadT5Reference(fixturePath(name));
    const encoderTokens = Array.from(model.tokenize(ENCODER_TEXT));
    const context = await model.createContext(CONTEXT_OPTIONS);
    t = {
      model,
      context,
      reference,
      encoderTokens,
      encoderOutput: reference.encode(encoderTokens).output,
      start: reference.hparams.decoderStartToken!,
      teacher: Array.from(model.tokenize(DECODER_TEXT, { addSpecial: false })),
    };
  });
  afterAll(() => t?.model.dispose());

  it("model.info describes an encoder–decoder model with its decoder start token", () => {
    expect(t.model.info).toMatchObject({ architecture: "t5", hasEncoder: true, hasDecoder: true, decoderStartToken: t.reference.hparams.decoderStartToken });
    expect(t.teacher.length).toBeGreaterThan(17);
  });

  it("prompt encodes the input, starts the decoder, and gives the reference's first logits", async () => {
    using s = t.context.createSession();
    await s.prompt(ENCODER_TEXT);
    expect(Array.from(s.encoderTokens)).toEqual(t.encoderTokens); // with </s> appended
    expect(Array.from(s.tokens)).toEqual([t.start]);
    const ref = t.reference.decode(t.encoderOutput, [t.start]);
    expect(maxAbsDiff(s.logits(), ref.logits[0])).toBeLessThan(tol.logits);
    // Token ids as input: the same encoder input, the same logits.
    using byIds = t.context.createSession();
    await byIds.prompt(Int32Array.from(t.encoderTokens));
    expect(Array.from(byIds.encoderTokens)).toEqual(t.encoderTokens);
    expect(maxAbsDiff(byIds.logits(), ref.logits[0])).toBeLessThan(tol.logits);
  });

  it("teacher forcing in one batch: the logits after every prefix match the reference (rewind, and a fresh session)", async () => {
    const decoderTokens = [t.start, ...t.teacher];
    const ref = t.reference.decode(t.encoderOutput, decoderTokens);
    using s = t.context.createSession();
    await s.prompt(ENCODER_TEXT);
    await s.prompt(t.teacher, { append: true });
    expect(Array.from(s.tokens)).toEqual(decoderTokens);
    expect(maxAbsDiff(s.logits(), ref.logits.at(-1)!)).toBeLessThan(tol.logits);
    // Back to shorter prefixes: rewind past the prefix's last token, then append it again.
    for (const length of [decoderTokens.length - 1, decoderTokens.length - 5, 2]) {
      s.rewind(s.tokens.length - (length - 1));
      await s.prompt([decoderTokens[length - 1]], { append: true });
      expect(Array.from(s.tokens)).toEqual(decoderTokens.slice(0, length));
      expect(maxAbsDiff(s.logits(), ref.logits[length - 1]), `prefix of ${length}`).toBeLessThan(tol.logits);
    }
    // A prefix as its own session, in one batch.
    using fresh = t.context.createSession();
    await fresh.prompt(ENCODER_TEXT);
    await fresh.prompt(t.teacher.slice(0, 9), { append: true });
    expect(maxAbsDiff(fresh.logits(), ref.logits[9])).toBeLessThan(tol.logits);
  });

  it("greedy generation picks the reference's arg-max at every step; step-by-step logits match", async () => {
    using s = t.context.createSession();
    await s.prompt(ENCODER_TEXT);
    const n = 20;
    const { tokens, text } = await s.generate({ temperature: 0, maxTokens: n }).collect();
    expect(tokens.length).toBeGreaterThan(0);
    expect(tokens.length).toBeLessThanOrEqual(n);
    expect(text).toBe(t.model.detokenize(tokens));
    expect(Array.from(s.tokens)).toEqual([t.start, ...tokens]);
    const ref = t.reference.decode(t.encoderOutput, [t.start, ...tokens]);
    tokens.forEach((token, i) => expect(nearMax(ref.logits[i], 2 * tol.logits), `step ${i}`).toContain(token));
    // The same steps one token per decode, in another session.
    using step = t.context.createSession();
    await step.prompt(ENCODER_TEXT);
    for (const [i, token] of tokens.entries()) {
      expect(maxAbsDiff(step.logits(), ref.logits[i]), `before step ${i}`).toBeLessThan(tol.logits);
      await step.prompt([token], { append: true });
    }
    expect(maxAbsDiff(step.logits(), ref.logits.at(-1)!)).toBeLessThan(tol.logits);
  });

  it("two sessions with different inputs keep their own encoder outputs", async () => {
    const other = "Hello world, this is another input.";
    const otherTokens = Array.from(t.model.tokenize(other));
    const otherOutput = t.reference.encode(otherTokens).output;
    using a = t.context.createSession();
    using b = t.context.createSession();
    await a.prompt(ENCODER_TEXT);
    await b.prompt(other);
    // Decode in a after b encoded: a must still attend over its own encoder output.
    await a.prompt(t.teacher.slice(0, 4), { append: true });
    await b.prompt(t.teacher.slice(0, 4), { append: true });
    const refA = t.reference.decode(t.encoderOutput, [t.start, ...t.teacher.slice(0, 4)]);
    const refB = t.reference.decode(otherOutput, [t.start, ...t.teacher.slice(0, 4)]);
    expect(maxAbsDiff(a.logits(), refA.logits.at(-1)!)).toBeLessThan(tol.logits);
    expect(maxAbsDiff(b.logits(), refB.logits.at(-1)!)).toBeLessThan(tol.logits);
    expect(Array.from(b.encoderTokens)).toEqual(otherTokens);
  });

  it("trace: encoder self-attention, decoder self-attention, cross-attention and hidden states match the reference", async () => {
    const decoderTokens = [t.start, ...t.teacher];
    const enc = t.reference.encode(t.encoderTokens);
    const ref = t.reference.decode(enc.output, decoderTokens);
    const { nLayer, nDecLayer, nEmbd } = t.reference.hparams;
    using s = t.context.createSession();
    await s.prompt(ENCODER_TEXT);
    const trace = await s.trace(t.teacher);
    const { encoder, crossAttention } = present(trace);
    expect(Array.from(trace.tokens)).toEqual(decoderTokens);
    expect(trace.queryStart).toBe(1);
    expect(Array.from(encoder.tokens)).toEqual(t.encoderTokens);
    expect(encoder.pieces).toEqual(t.encoderTokens.map((tok) => t.model.tokenToPiece(tok, { special: true })));
    expect(encoder.attention.map((m) => m.layer)).toEqual([...Array(nLayer).keys()]);
    expect(trace.attention!.map((m) => m.layer)).toEqual([...Array(nDecLayer).keys()]);
    expect(crossAttention.map((m) => m.layer)).toEqual([...Array(nDecLayer).keys()]);
    for (const [l, map] of encoder.attention.entries()) expectAttention(map, enc.attention[l], 0, tol.attention, `encoder layer ${l}`);
    for (const [l, map] of trace.attention!.entries()) {
      expectAttention(map, ref.selfAttention[l], 1, tol.attention, `decoder self layer ${l}`);
      for (let h = 0; h < map.heads; h++) for (let q = 0; q < map.queries; q++) expect(map.row(h, q).subarray(q + 2).every((p) => p === 0)).toBe(true);
    }
    for (const [l, map] of crossAttention.entries()) expectAttention(map, ref.crossAttention[l], 1, tol.attention, `cross layer ${l}`);
    expect(trace.hiddenStates).toHaveLength(nDecLayer);
    for (const [l, hidden] of trace.hiddenStates!.entries()) {
      expect(hidden.length).toBe(t.teacher.length * nEmbd);
      let worst = 0;
      for (let q = 0; q < t.teacher.length; q++) {
        const expected = ref.hidden[l][q + 1];
        for (let i = 0; i < nEmbd; i++) worst = Math.max(worst, Math.abs(hidden[q * nEmbd + i] - expected[i]) / Math.max(1, Math.abs(expected[i])));
      }
      expect(worst, `hidden layer ${l}`).toBeLessThan(tol.hidden);
    }
    expect(nearMax(ref.logits.at(-1)!, 2 * tol.logits)).toContain(trace.next[0].token);
    expect(maxAbsDiff(s.logits(), ref.logits.at(-1)!)).toBeLessThan(tol.logits);
  });

  it("trace with `layers` captures only the listed layers each stack has", async () => {
    const { nLayer, nDecLayer } = t.reference.hparams;
    const layers = [0, nLayer - 1];
    using s = t.context.createSession();
    await s.prompt(ENCODER_TEXT);
    const trace = await s.trace(t.teacher.slice(0, 3), { layers, hiddenStates: false });
    const { encoder, crossAttention } = present(trace);
    const inDecoder = layers.filter((l) => l < nDecLayer);
    expect(encoder.attention.map((m) => m.layer)).toEqual(layers);
    expect(trace.attention!.map((m) => m.layer)).toEqual(inDecoder);
    expect(crossAttention.map((m) => m.layer)).toEqual(inDecoder);
    const enc = t.reference.encode(t.encoderTokens);
    const ref = t.reference.decode(enc.output, [t.start, ...t.teacher.slice(0, 3)]);
    for (const map of encoder.attention) expectAttention(map, enc.attention[map.layer], 0, tol.attention, `encoder layer ${map.layer}`);
    for (const map of crossAttention) expectAttention(map, ref.crossAttention[map.layer], 1, tol.attention, `cross layer ${map.layer}`);
  });
});
