/**
 * A reference Llama forward pass in plain TypeScript, computed in float64: an oracle for what
 * llama.cpp computes for arch "llama" (logits, attention maps, hidden states).
 *
 * Follows llama.cpp's graph (src/models/llama.cpp): token embedding (no position embedding),
 * pre-RMSNorm blocks with causal grouped-query self-attention and a SwiGLU network
 * (down(silu(gate·x) ⊙ up·x)), a final RMSNorm, and the output projection (token_embd when the
 * file has no output.weight). Rotary embeddings are llama.cpp's LLAMA_ROPE_TYPE_NORM for this
 * arch: each head's consecutive pairs (x[2i], x[2i+1]) rotate by p·θ^(-2i/d), applied to q and k
 * before the attention scores softmax(q·k/√d). Query head h reads key/value head
 * floor(h / (nHead / nHeadKv)), as ggml_mul_mat broadcasts the KV heads.
 *
 * ggml CPU numerics: SiLU, softmax and RMSNorm have no table lookups on the CPU backend (SiLU and
 * softmax use a float32 expf, RMSNorm sums in double), so they are computed exactly here. The
 * RoPE angles are modelled on request (`rope: "ggml-cpu"`, the default): ggml computes θ_i by a
 * running float32 product θ_{i+1} = θ_i·powf(base, -2/d) starting at float(p), and cosf/sinf in
 * float32; that moves angles by up to ~p·d·1e-7, negligible for short prompts but cheap to match.
 * Matrix products with F16 weights are modelled too (`matmul: "ggml-cpu"`, the default): ggml's
 * CPU backend multiplies F16 weights by activations converted to F16 (vec_dot_type of F16), which
 * moves logits by a few 1e-3; the reference rounds the input vector to F16 for such matrices (F16
 * models still match only to ~1e-2: float32-vs-float64 differences flip some of those roundings).
 *
 * LoRA: `loras` merges adapters into the weights in float64, W' = W + scale·(α/r)·B·A (scale
 * alone when α is 0), exactly the update llama.cpp applies in build_lora_mm.
 *
 * Weight layout is ggml's: a matrix of shape [nIn, nOut] stores nOut rows of nIn values.
 */

import { GgufError, LlamaError } from "../../src/errors.js";
import { f16BitsToF32, f32ToF16Bits, readGguf, readTensorFloats, type GgufFile, type GgufTensorInfo } from "../../src/gguf/index.js";

/** A matrix in ggml layout: `rows` rows of `cols` contiguous values. */
export interface Matrix {
  data: Float32Array | Float64Array;
  cols: number;
  rows: number;
  /** Stored as F16 in the file: ggml's CPU backend rounds the activations it multiplies to F16. */
  f16?: boolean;
}

export interface LlamaHparams {
  nVocab: number;
  nEmbd: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  nLayer: number;
  nCtx: number;
  nFf: number;
  /** RoPE base frequency, exactly as stored (a float32). */
  ropeTheta: number;
  /** RMSNorm epsilon, exactly as stored (a float32). */
  rmsEps: number;
}

export interface LlamaLora {
  /** A LoRA adapter GGUF (see src/fixtures/lora.ts). */
  path: string;
  /** The user scale llama.cpp multiplies by α/r. */
  scale: number;
}

export interface LlamaReferenceOptions {
  /** Adapters merged into the weights, in order. */
  loras?: readonly LlamaLora[];
}

export interface LlamaForwardOptions {
  /** Also return attention maps and the residual stream after each block. */
  capture?: boolean;
  /** "ggml-cpu" (default): RoPE angles as ggml's CPU backend rounds them; "exact": float64 angles. */
  rope?: "ggml-cpu" | "exact";
  /** "ggml-cpu" (default): F16 weights see F16-rounded activations, as on ggml's CPU backend; "exact": no rounding. */
  matmul?: "ggml-cpu" | "exact";
}

export interface LlamaForwardResult {
  /** One row of nVocab logits per input position. */
  logits: Float64Array[];
  /** attention[layer][queryHead]: nTokens × nTokens, row = query, column = key (future keys 0). Only with `capture`. */
  attention?: Float64Array[][];
  /** hidden[layer]: nTokens × nEmbd, the residual stream after the block. Only with `capture`. */
  hidden?: Float64Array[];
}

export interface LlamaReference {
  hparams: LlamaHparams;
  forward(tokens: readonly number[], opts?: LlamaForwardOptions): LlamaForwardResult;
  /** The weights forward() reads (mutable: tests/train.test.ts perturbs them for finite differences). */
  weights: Weights;
}

export interface Layer {
  attnNorm: Float32Array;
  q: Matrix;
  k: Matrix;
  v: Matrix;
  o: Matrix;
  ffnNorm: Float32Array;
  gate: Matrix;
  up: Matrix;
  down: Matrix;
}

export interface Weights {
  tokenEmbd: Matrix;
  layers: Layer[];
  outputNorm: Float32Array;
  output: Matrix;
}

export function uint32Key(file: GgufFile, key: string): number {
  const entry = file.metadata[key];
  if (entry?.type !== "uint32") throw new GgufError(`${key} is missing or not a uint32`);
  return entry.value;
}

export function float32Key(file: GgufFile, key: string, fallback?: number): number {
  const entry = file.metadata[key];
  if (entry === undefined && fallback !== undefined) return Math.fround(fallback);
  if (entry?.type !== "float32") throw new GgufError(`${key} is missing or not a float32`);
  return entry.value;
}

export function vocabSize(file: GgufFile): number {
  const tokens = file.metadata["tokenizer.ggml.tokens"];
  if (tokens?.type !== "array") throw new GgufError("tokenizer.ggml.tokens is missing");
  return tokens.truncatedFrom ?? tokens.value.length;
}

function readHparams(file: GgufFile): LlamaHparams {
  const arch = file.metadata["general.architecture"];
  if (arch?.value !== "llama") throw new LlamaError("ERR_UNSUPPORTED", `Not a Llama model: architecture ${arch?.value}`);
  const nEmbd = uint32Key(file, "llama.embedding_length");
  const nHead = uint32Key(file, "llama.attention.head_count");
  const nHeadKv = file.metadata["llama.attention.head_count_kv"] === undefined ? nHead : uint32Key(file, "llama.attention.head_count_kv");
  const headDim = nEmbd / nHead;
  const nRot = file.metadata["llama.rope.dimension_count"] === undefined ? headDim : uint32Key(file, "llama.rope.dimension_count");
  if (nRot !== headDim) throw new LlamaError("ERR_UNSUPPORTED", `rope.dimension_count ${nRot} differs from the head size ${headDim}`);
  return {
    nVocab: vocabSize(file),
    nEmbd,
    nHead,
    nHeadKv,
    headDim,
    nLayer: uint32Key(file, "llama.block_count"),
    nCtx: uint32Key(file, "llama.context_length"),
    nFf: uint32Key(file, "llama.feed_forward_length"),
    ropeTheta: float32Key(file, "llama.rope.freq_base", 10000),
    rmsEps: float32Key(file, "llama.attention.layer_norm_rms_epsilon"),
  };
}

/** Reads tensors of a GGUF file by name, checking their shapes. */
export function tensorReader(path: string, file: GgufFile) {
  const byName = new Map<string, GgufTensorInfo>(file.tensors.map((t) => [t.name, t]));
  const load = async (name: string, shape: readonly number[]): Promise<Float32Array> => {
    const info = byName.get(name);
    if (info === undefined) throw new GgufError(`Tensor ${name} is missing`);
    if (info.shape.join(",") !== shape.join(",")) throw new GgufError(`Tensor ${name} has shape [${info.shape}], expected [${shape}]`);
    return readTensorFloats(path, info);
  };
  const matrix = async (name: string, cols: number, rows: number): Promise<Matrix> => {
    const data = await load(name, [cols, rows]);
    return byName.get(name)!.typeName === "F16" ? { data, cols, rows, f16: true } : { data, cols, rows };
  };
  return { has: (name: string) => byName.has(name), load, matrix };
}

/** One LoRA pair of an adapter: ΔW = B·A with A of shape [nIn, rank] and B of shape [rank, nOut]. */
export interface LoraPair {
  a: Float32Array;
  b: Float32Array;
  rank: number;
  nIn: number;
  nOut: number;
}

/** A LoRA adapter as llama.cpp reads it: architecture, adapter.lora.alpha and the pairs by base tensor name. */
export interface LoraAdapter {
  architecture: string;
  alpha: number;
  pairs: Map<string, LoraPair>;
}

/** Reads a LoRA adapter GGUF, checking what llama_adapter_lora_init checks. */
export async function readLoraAdapter(path: string): Promise<LoraAdapter> {
  const file = await readGguf(path);
  const str = (key: string) => {
    const v = file.metadata[key];
    return v?.type === "string" ? v.value : undefined;
  };
  if (str("general.type") !== "adapter" || str("adapter.type") !== "lora") throw new GgufError(`${path} is not a LoRA adapter`);
  const alphaEntry = file.metadata["adapter.lora.alpha"];
  const alpha = alphaEntry?.type === "float32" ? alphaEntry.value : 0;
  const infos = new Map(file.tensors.map((t) => [t.name, t]));
  const pairs = new Map<string, LoraPair>();
  for (const info of file.tensors) {
    if (!info.name.endsWith(".lora_a")) continue;
    const base = info.name.slice(0, -".lora_a".length);
    const bInfo = infos.get(`${base}.lora_b`);
    if (bInfo === undefined) throw new GgufError(`${base}.lora_b is missing`);
    const [nIn, rank] = info.shape;
    const [rankB, nOut] = bInfo.shape;
    if (rank !== rankB) throw new GgufError(`${base}: lora_a rank ${rank} differs from lora_b rank ${rankB}`);
    pairs.set(base, { a: await readTensorFloats(path, info), b: await readTensorFloats(path, bInfo), rank, nIn, nOut });
  }
  return { architecture: str("general.architecture") ?? "", alpha, pairs };
}

/** W + scale·(α/r)·B·A in float64 (scale alone when α is 0), as a new matrix. */
export function mergeLora(w: Matrix, pair: LoraPair, alpha: number, scale: number): Matrix {
  if (pair.nIn !== w.cols || pair.nOut !== w.rows) throw new GgufError(`LoRA pair [${pair.nIn}→${pair.nOut}] does not fit a ${w.cols}→${w.rows} matrix`);
  const s = alpha === 0 ? scale : (scale * alpha) / pair.rank;
  const data = Float64Array.from(w.data);
  const { a, b, rank, nIn } = pair;
  for (let o = 0; o < w.rows; o++) {
    for (let k = 0; k < rank; k++) {
      const bk = s * b[o * rank + k];
      if (bk === 0) continue;
      for (let i = 0; i < nIn; i++) data[o * nIn + i] += bk * a[k * nIn + i];
    }
  }
  return { data, cols: w.cols, rows: w.rows };
}

/** Loads a Llama GGUF (F32, F16 or BF16 tensors) into a reference model, with LoRA adapters merged. */
export async function loadLlamaReference(path: string, opts: LlamaReferenceOptions = {}): Promise<LlamaReference> {
  const file = await readGguf(path, { maxArrayLength: 1 });
  const hp = readHparams(file);
  const { load, matrix, has } = tensorReader(path, file);
  const { nEmbd, nFf, nVocab, nLayer } = hp;
  const nKv = hp.headDim * hp.nHeadKv;
  const layers: Layer[] = [];
  for (let i = 0; i < nLayer; i++) {
    const blk = `blk.${i}`;
    layers.push({
      attnNorm: await load(`${blk}.attn_norm.weight`, [nEmbd]),
      q: await matrix(`${blk}.attn_q.weight`, nEmbd, nEmbd),
      k: await matrix(`${blk}.attn_k.weight`, nEmbd, nKv),
      v: await matrix(`${blk}.attn_v.weight`, nEmbd, nKv),
      o: await matrix(`${blk}.attn_output.weight`, nEmbd, nEmbd),
      ffnNorm: await load(`${blk}.ffn_norm.weight`, [nEmbd]),
      gate: await matrix(`${blk}.ffn_gate.weight`, nEmbd, nFf),
      up: await matrix(`${blk}.ffn_up.weight`, nEmbd, nFf),
      down: await matrix(`${blk}.ffn_down.weight`, nFf, nEmbd),
    });
  }
  const tokenEmbd = await matrix("token_embd.weight", nEmbd, nVocab);
  const weights: Weights = {
    tokenEmbd,
    layers,
    outputNorm: await load("output_norm.weight", [nEmbd]),
    output: has("output.weight") ? await matrix("output.weight", nEmbd, nVocab) : tokenEmbd,
  };
  for (const lora of opts.loras ?? []) applyLora(weights, await readLoraAdapter(lora.path), lora.scale);
  return { hparams: hp, weights, forward: (tokens, o) => forward(hp, weights, tokens, o ?? {}) };
}

/** Merges an adapter into the weights it names; every pair must name a matrix of the model. */
function applyLora(w: Weights, adapter: LoraAdapter, scale: number): void {
  if (adapter.architecture !== "llama") throw new LlamaError("ERR_UNSUPPORTED", `LoRA for ${adapter.architecture}, not llama`);
  const slots = new Map<string, [get: () => Matrix, set: (m: Matrix) => void]>();
  w.layers.forEach((layer, i) => {
    for (const [key, suffix] of [["q", "attn_q"], ["k", "attn_k"], ["v", "attn_v"], ["o", "attn_output"], ["gate", "ffn_gate"], ["up", "ffn_up"], ["down", "ffn_down"]] as const) {
      slots.set(`blk.${i}.${suffix}.weight`, [() => layer[key], (m) => (layer[key] = m)]);
    }
  });
  // Tied models have no output.weight: an adapter for it would not load in llama.cpp either.
  if (w.output !== w.tokenEmbd) slots.set("output.weight", [() => w.output, (m) => (w.output = m)]);
  for (const [name, pair] of adapter.pairs) {
    const slot = slots.get(name);
    if (slot === undefined) throw new LlamaError("ERR_UNSUPPORTED", `The reference cannot apply LoRA to ${name}`);
    slot[1](mergeLora(slot[0](), pair, adapter.alpha, scale));
  }
}

/** y = W·x, accumulated in float64; with `roundF16`, x is first rounded to F16 when W is stored as F16. */
export function matVec(w: Matrix, input: ArrayLike<number>, roundF16 = false): Float64Array {
  const x = roundF16 && w.f16 ? Float64Array.from(input, toF16) : input;
  const y = new Float64Array(w.rows);
  const { data, cols } = w;
  for (let o = 0; o < w.rows; o++) {
    let sum = 0;
    const row = o * cols;
    for (let i = 0; i < cols; i++) sum += data[row + i] * x[i];
    y[o] = sum;
  }
  return y;
}

/** RMSNorm as ggml_rms_norm followed by the weight: x / √(mean(x²) + eps) · w. */
export function rmsNorm(x: Float64Array, weight: Float32Array, eps: number): Float64Array {
  let sumSq = 0;
  for (let i = 0; i < x.length; i++) sumSq += x[i] * x[i];
  const scale = 1 / Math.sqrt(sumSq / x.length + eps);
  return x.map((v, i) => v * scale * weight[i]);
}

export const silu = (x: number): number => x / (1 + Math.exp(-x));

/** The nearest float16 value (round to nearest even), as a number. */
export const toF16 = (x: number): number => f16BitsToF32(f32ToF16Bits(Math.fround(x)));

/** Per pair i of a head: [cos, sin] of the RoPE angle at position `pos`. */
export function ropeAngles(pos: number, headDim: number, theta: number, mode: "ggml-cpu" | "exact"): Float64Array {
  const out = new Float64Array(headDim);
  if (mode === "exact") {
    for (let i = 0; i < headDim / 2; i++) {
      const angle = pos * Math.pow(theta, (-2 * i) / headDim);
      out[2 * i] = Math.cos(angle);
      out[2 * i + 1] = Math.sin(angle);
    }
    return out;
  }
  const f = Math.fround;
  const thetaScale = f(Math.pow(f(theta), f(-2 / headDim)));
  let angle = f(pos);
  for (let i = 0; i < headDim / 2; i++) {
    out[2 * i] = f(Math.cos(angle));
    out[2 * i + 1] = f(Math.sin(angle));
    angle = f(angle * thetaScale);
  }
  return out;
}

/** Rotates consecutive pairs of every head of `x` in place (LLAMA_ROPE_TYPE_NORM). */
function applyRope(x: Float64Array, headDim: number, cosSin: Float64Array): void {
  for (let h = 0; h < x.length; h += headDim) {
    for (let i = 0; i < headDim; i += 2) {
      const [x0, x1, c, s] = [x[h + i], x[h + i + 1], cosSin[i], cosSin[i + 1]];
      x[h + i] = x0 * c - x1 * s;
      x[h + i + 1] = x0 * s + x1 * c;
    }
  }
}

export function checkTokens(nVocab: number, nCtx: number, tokens: readonly number[]): void {
  if (tokens.length === 0 || tokens.length > nCtx) {
    throw new LlamaError("ERR_INVALID_ARGUMENT", `Need between 1 and ${nCtx} tokens, got ${tokens.length}`);
  }
  for (const t of tokens) {
    if (!Number.isInteger(t) || t < 0 || t >= nVocab) throw new LlamaError("ERR_TOKEN_INVALID", `Token ${t} is not in [0, ${nVocab})`);
  }
}

/**
 * Softmax attention of every query head over the keys `visible(i)` allows for position i.
 * q: per position nHead·headDim values; k, v: per position nHeadKv·headDim values.
 */
export function multiHeadAttention(
  q: Float64Array[],
  k: Float64Array[],
  v: Float64Array[],
  nHead: number,
  nHeadKv: number,
  causal: boolean,
): { out: Float64Array[]; maps: Float64Array[] } {
  const n = q.length;
  const headDim = q[0].length / nHead;
  const group = nHead / nHeadKv;
  const scale = 1 / Math.sqrt(headDim);
  const out = q.map(() => new Float64Array(nHead * headDim));
  const maps: Float64Array[] = [];
  for (let h = 0; h < nHead; h++) {
    const map = new Float64Array(n * n);
    const [q0, kv0] = [h * headDim, Math.floor(h / group) * headDim];
    for (let i = 0; i < n; i++) {
      const last = causal ? i : n - 1;
      const row = map.subarray(i * n, i * n + last + 1);
      let max = -Infinity;
      for (let j = 0; j <= last; j++) {
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[i][q0 + d] * k[j][kv0 + d];
        row[j] = dot * scale;
        max = Math.max(max, row[j]);
      }
      let sum = 0;
      for (let j = 0; j <= last; j++) sum += row[j] = Math.exp(row[j] - max);
      for (let j = 0; j <= last; j++) {
        row[j] /= sum;
        for (let d = 0; d < headDim; d++) out[i][q0 + d] += row[j] * v[j][kv0 + d];
      }
    }
    maps.push(map);
  }
  return { out, maps };
}

function addInPlace(x: Float64Array, y: Float64Array): void {
  for (let i = 0; i < x.length; i++) x[i] += y[i];
}

function forward(hp: LlamaHparams, w: Weights, tokens: readonly number[], opts: LlamaForwardOptions): LlamaForwardResult {
  checkTokens(hp.nVocab, hp.nCtx, tokens);
  const { nEmbd, nHead, nHeadKv, headDim, rmsEps } = hp;
  const rope = opts.rope ?? "ggml-cpu";
  const f16 = (opts.matmul ?? "ggml-cpu") === "ggml-cpu";
  const angles = tokens.map((_, pos) => ropeAngles(pos, headDim, hp.ropeTheta, rope));
  const x = tokens.map((t) => Float64Array.from(w.tokenEmbd.data.subarray(t * nEmbd, (t + 1) * nEmbd)));
  const attention: Float64Array[][] = [];
  const hidden: Float64Array[] = [];
  for (const layer of w.layers) {
    const normed = x.map((v) => rmsNorm(v, layer.attnNorm, rmsEps));
    const q = normed.map((v, pos) => {
      const r = matVec(layer.q, v, f16);
      applyRope(r, headDim, angles[pos]);
      return r;
    });
    const k = normed.map((v, pos) => {
      const r = matVec(layer.k, v, f16);
      applyRope(r, headDim, angles[pos]);
      return r;
    });
    const vv = normed.map((v) => matVec(layer.v, v, f16));
    const { out, maps } = multiHeadAttention(q, k, vv, nHead, nHeadKv, true);
    x.forEach((v, i) => addInPlace(v, matVec(layer.o, out[i], f16)));
    for (const v of x) {
      const n = rmsNorm(v, layer.ffnNorm, rmsEps);
      const gate = matVec(layer.gate, n, f16);
      const up = matVec(layer.up, n, f16);
      addInPlace(v, matVec(layer.down, gate.map((g, i) => silu(g) * up[i]), f16));
    }
    if (opts.capture) {
      attention.push(maps);
      const stream = new Float64Array(x.length * nEmbd);
      x.forEach((v, i) => stream.set(v, i * nEmbd));
      hidden.push(stream);
    }
  }
  const logits = x.map((v) => matVec(w.output, rmsNorm(v, w.outputNorm, rmsEps), f16));
  return opts.capture ? { logits, attention, hidden } : { logits };
}
