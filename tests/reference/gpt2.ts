/**
 * A reference GPT-2 forward pass in plain TypeScript, computed in float64, to serve as an
 * oracle for what llama.cpp computes (logits, attention maps, hidden states).
 *
 * Follows GPT-2 / nanoGPT: token + learned position embeddings, pre-LayerNorm blocks with
 * causal multi-head self-attention (softmax(QKᵀ/√d_head), future positions masked) and a GELU
 * MLP, a final LayerNorm, and the output projection (tied to token_embd when the file has no
 * output.weight). GELU is the tanh approximation, as ggml_gelu computes it.
 *
 * One numerical detail of llama.cpp is modelled on request (`gelu: "ggml-cpu"`, the default):
 * ggml's CPU backend evaluates GELU through a lookup table indexed by the input rounded to
 * float16, and the table holds float16 results (GGML_GELU_FP16 in ggml-cpu/vec.h). That rounding
 * moves logits by ~1e-3, so an oracle that must agree to 1e-3 has to round the same way.
 * `gelu: "exact"` gives the textbook function.
 *
 * Weight layout is ggml's: a matrix of shape [nIn, nOut] stores nOut rows of nIn contiguous
 * values, so y[o] = Σ_i W[o·nIn + i]·x[i] walks memory in order and needs no transpose.
 */

import { GgufError, LlamaError } from "../../src/errors.js";
import { f16BitsToF32, f32ToF16Bits, readGguf, readTensorFloats, type GgufFile, type GgufTensorInfo } from "../../src/gguf/index.js";

export interface Gpt2Hparams {
  nVocab: number;
  nEmbd: number;
  nHead: number;
  nLayer: number;
  nCtx: number;
  nFf: number;
  /** LayerNorm epsilon, exactly as stored (a float32). */
  eps: number;
}

export interface ForwardOptions {
  /** Also return attention maps and the residual stream after each block. */
  capture?: boolean;
  /** "ggml-cpu" (default): GELU with float16 input/output rounding as ggml's CPU table; "exact": none. */
  gelu?: "ggml-cpu" | "exact";
}

export interface ForwardResult {
  /** One row of nVocab logits per input position. */
  logits: Float64Array[];
  /**
   * attention[layer][head]: nTokens × nTokens row-major, row = query position, column = key
   * position; entries for future keys are exactly 0. Only with `capture`.
   */
  attention?: Float64Array[][];
  /** hidden[layer]: nTokens × nEmbd row-major, the residual stream after the block. Only with `capture`. */
  hidden?: Float64Array[];
}

export interface Gpt2Reference {
  hparams: Gpt2Hparams;
  forward(tokens: readonly number[], opts?: ForwardOptions): ForwardResult;
}

/** A matrix in ggml layout: `rows` rows of `cols` contiguous values. */
interface Matrix {
  data: Float32Array;
  cols: number;
  rows: number;
}

/** A LayerNorm's weight and bias. */
export interface Norm {
  weight: Float32Array;
  bias: Float32Array;
}

interface Layer {
  attnNorm: Norm;
  qkv: Matrix;
  qkvBias: Float32Array;
  attnOut: Matrix;
  attnOutBias: Float32Array;
  ffnNorm: Norm;
  up: Matrix;
  upBias: Float32Array;
  down: Matrix;
  downBias: Float32Array;
}

interface Weights {
  tokenEmbd: Matrix;
  posEmbd: Matrix;
  layers: Layer[];
  outputNorm: Norm;
  output: Matrix;
}

function uint32Key(file: GgufFile, key: string): number {
  const entry = file.metadata[key];
  if (entry?.type !== "uint32") throw new GgufError(`${key} is missing or not a uint32`);
  return entry.value;
}

function readHparams(file: GgufFile): Gpt2Hparams {
  const arch = file.metadata["general.architecture"];
  if (arch?.value !== "gpt2") throw new LlamaError("ERR_UNSUPPORTED", `Not a GPT-2 model: architecture ${arch?.value}`);
  const eps = file.metadata["gpt2.attention.layer_norm_epsilon"];
  const tokens = file.metadata["tokenizer.ggml.tokens"];
  if (eps?.type !== "float32") throw new GgufError("gpt2.attention.layer_norm_epsilon is missing or not a float32");
  if (tokens?.type !== "array") throw new GgufError("tokenizer.ggml.tokens is missing");
  return {
    nVocab: tokens.value.length,
    nEmbd: uint32Key(file, "gpt2.embedding_length"),
    nHead: uint32Key(file, "gpt2.attention.head_count"),
    nLayer: uint32Key(file, "gpt2.block_count"),
    nCtx: uint32Key(file, "gpt2.context_length"),
    nFf: uint32Key(file, "gpt2.feed_forward_length"),
    eps: eps.value,
  };
}

/** Loads a GPT-2 GGUF (F32, F16 or BF16 tensors) into a reference model. */
export async function loadGpt2Reference(path: string): Promise<Gpt2Reference> {
  const file = await readGguf(path);
  const hp = readHparams(file);
  const byName = new Map<string, GgufTensorInfo>(file.tensors.map((t) => [t.name, t]));

  const load = async (name: string, shape: number[]): Promise<Float32Array> => {
    const info = byName.get(name);
    if (info === undefined) throw new GgufError(`Tensor ${name} is missing`);
    if (info.shape.join(",") !== shape.join(",")) {
      throw new GgufError(`Tensor ${name} has shape [${info.shape}], expected [${shape}]`);
    }
    return readTensorFloats(path, info);
  };
  const matrix = async (name: string, cols: number, rows: number): Promise<Matrix> => ({
    data: await load(name, [cols, rows]),
    cols,
    rows,
  });
  const norm = async (prefix: string): Promise<Norm> => ({
    weight: await load(`${prefix}.weight`, [hp.nEmbd]),
    bias: await load(`${prefix}.bias`, [hp.nEmbd]),
  });

  const { nEmbd, nFf, nVocab } = hp;
  const layers: Layer[] = [];
  for (let i = 0; i < hp.nLayer; i++) {
    const blk = `blk.${i}`;
    layers.push({
      attnNorm: await norm(`${blk}.attn_norm`),
      qkv: await matrix(`${blk}.attn_qkv.weight`, nEmbd, 3 * nEmbd),
      qkvBias: await load(`${blk}.attn_qkv.bias`, [3 * nEmbd]),
      attnOut: await matrix(`${blk}.attn_output.weight`, nEmbd, nEmbd),
      attnOutBias: await load(`${blk}.attn_output.bias`, [nEmbd]),
      ffnNorm: await norm(`${blk}.ffn_norm`),
      up: await matrix(`${blk}.ffn_up.weight`, nEmbd, nFf),
      upBias: await load(`${blk}.ffn_up.bias`, [nFf]),
      down: await matrix(`${blk}.ffn_down.weight`, nFf, nEmbd),
      downBias: await load(`${blk}.ffn_down.bias`, [nEmbd]),
    });
  }
  const tokenEmbd = await matrix("token_embd.weight", nEmbd, nVocab);
  const weights: Weights = {
    tokenEmbd,
    posEmbd: await matrix("position_embd.weight", nEmbd, hp.nCtx),
    layers,
    outputNorm: await norm("output_norm"),
    output: byName.has("output.weight") ? await matrix("output.weight", nEmbd, nVocab) : tokenEmbd,
  };
  return { hparams: hp, forward: (tokens, opts) => forward(hp, weights, tokens, opts ?? {}) };
}

/** y = W·x (+ bias), accumulated in float64. */
function matVec(w: Matrix, x: Float64Array, bias?: Float32Array): Float64Array {
  const y = new Float64Array(w.rows);
  const { data, cols } = w;
  for (let o = 0; o < w.rows; o++) {
    let sum = 0;
    const row = o * cols;
    for (let i = 0; i < cols; i++) sum += data[row + i] * x[i];
    y[o] = bias === undefined ? sum : sum + bias[o];
  }
  return y;
}

/** LayerNorm with biased variance, as ggml_norm: (x - mean) / sqrt(var + eps) · w + b (also BERT's and SigLIP's). */
export function layerNorm(x: Float64Array, { weight, bias }: Norm, eps: number): Float64Array {
  const n = x.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += x[i];
  mean /= n;
  let variance = 0;
  for (let i = 0; i < n; i++) variance += (x[i] - mean) ** 2;
  const scale = 1 / Math.sqrt(variance / n + eps);
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) y[i] = (x[i] - mean) * scale * weight[i] + bias[i];
  return y;
}

/** GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²))). */
export function gelu(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * x * (1 + 0.044715 * x * x)));
}

const toF16 = (x: number): number => f16BitsToF32(f32ToF16Bits(x));

/** GELU as ggml's CPU backend computes it: a float16 table over float16-rounded inputs. */
export function geluGgmlCpu(x: number): number {
  if (x <= -10) return 0;
  if (x >= 10) return x;
  return toF16(gelu(toF16(x)));
}

/**
 * Causal multi-head self-attention over all positions. Returns the concatenated head outputs
 * per position and, per head, the nTokens × nTokens attention probabilities.
 */
function selfAttention(qkv: Float64Array[], nEmbd: number, nHead: number): { out: Float64Array[]; maps: Float64Array[] } {
  const n = qkv.length;
  const dHead = nEmbd / nHead;
  const scale = 1 / Math.sqrt(dHead);
  const out = qkv.map(() => new Float64Array(nEmbd));
  const maps: Float64Array[] = [];
  for (let h = 0; h < nHead; h++) {
    const map = new Float64Array(n * n);
    const [q0, k0, v0] = [h * dHead, nEmbd + h * dHead, 2 * nEmbd + h * dHead];
    for (let i = 0; i < n; i++) {
      const row = map.subarray(i * n, i * n + i + 1);
      let max = -Infinity;
      for (let j = 0; j <= i; j++) {
        let dot = 0;
        for (let d = 0; d < dHead; d++) dot += qkv[i][q0 + d] * qkv[j][k0 + d];
        row[j] = dot * scale;
        max = Math.max(max, row[j]);
      }
      let sum = 0;
      for (let j = 0; j <= i; j++) {
        row[j] = Math.exp(row[j] - max);
        sum += row[j];
      }
      for (let j = 0; j <= i; j++) {
        row[j] /= sum;
        for (let d = 0; d < dHead; d++) out[i][h * dHead + d] += row[j] * qkv[j][v0 + d];
      }
    }
    maps.push(map);
  }
  return { out, maps };
}

function checkTokens(hp: Gpt2Hparams, tokens: readonly number[]): void {
  if (tokens.length === 0 || tokens.length > hp.nCtx) {
    throw new LlamaError("ERR_INVALID_ARGUMENT", `Need between 1 and ${hp.nCtx} tokens, got ${tokens.length}`);
  }
  for (const t of tokens) {
    if (!Number.isInteger(t) || t < 0 || t >= hp.nVocab) {
      throw new LlamaError("ERR_TOKEN_INVALID", `Token ${t} is not in [0, ${hp.nVocab})`);
    }
  }
}

function addInPlace(x: Float64Array, y: Float64Array): void {
  for (let i = 0; i < x.length; i++) x[i] += y[i];
}

function forward(hp: Gpt2Hparams, w: Weights, tokens: readonly number[], opts: ForwardOptions): ForwardResult {
  checkTokens(hp, tokens);
  const { nEmbd, nHead, eps } = hp;
  const row = (m: Matrix, r: number) => Float64Array.from(m.data.subarray(r * m.cols, (r + 1) * m.cols));
  const x = tokens.map((t, pos) => {
    const v = row(w.tokenEmbd, t);
    addInPlace(v, row(w.posEmbd, pos));
    return v;
  });
  const attention: Float64Array[][] = [];
  const hidden: Float64Array[] = [];
  for (const layer of w.layers) {
    const qkv = x.map((v) => matVec(layer.qkv, layerNorm(v, layer.attnNorm, eps), layer.qkvBias));
    const { out, maps } = selfAttention(qkv, nEmbd, nHead);
    x.forEach((v, i) => addInPlace(v, matVec(layer.attnOut, out[i], layer.attnOutBias)));
    for (const v of x) {
      const up = matVec(layer.up, layerNorm(v, layer.ffnNorm, eps), layer.upBias).map(opts.gelu === "exact" ? gelu : geluGgmlCpu);
      addInPlace(v, matVec(layer.down, up, layer.downBias));
    }
    if (opts.capture) {
      attention.push(maps);
      const stream = new Float64Array(x.length * nEmbd);
      x.forEach((v, i) => stream.set(v, i * nEmbd));
      hidden.push(stream);
    }
  }
  const logits = x.map((v) => matVec(w.output, layerNorm(v, w.outputNorm, eps)));
  return opts.capture ? { logits, attention, hidden } : { logits };
}
