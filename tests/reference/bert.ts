/**
 * A reference BERT forward pass in plain TypeScript, computed in float64: an oracle for the
 * embeddings llama.cpp computes for arch "bert" (src/models/bert.cpp + build_pooling).
 *
 * Input: token embedding + token-type embedding (row 0: llama.cpp hard-codes type "Sentence A")
 * + learned position embedding, then LayerNorm. Each block (post-LN): non-causal multi-head
 * self-attention with q/k/v/output biases, residual, LayerNorm; GELU network with biases,
 * residual, LayerNorm. The per-token output is the last block's output (no final norm).
 *
 * Pooling, per sequence: mean = the average of the token rows, cls = the first row, rank = the
 * reranker head on the first row: cls.output·tanh(cls·h + cls.bias) + cls.output.bias.
 * llama.cpp returns pooled embeddings unnormalised (llama-embedding then L2-normalises by default).
 *
 * ggml CPU numerics: GELU goes through ggml's float16 table (as in tests/reference/gpt2.ts,
 * `gelu: "ggml-cpu"`, the default); F16 weights multiply F16-rounded activations (`matmul`, as in
 * tests/reference/llama.ts); LayerNorm, softmax and tanh have no such approximation. llama.cpp's
 * flash attention (its default on CPU) computes attention with F16 K/V and is not modelled: match
 * it to ~1e-3, or to ~1e-5 with flash attention off.
 */

import { GgufError, LlamaError } from "../../src/errors.js";
import { readGguf, type GgufFile } from "../../src/gguf/index.js";
import { gelu, geluGgmlCpu, layerNorm, type Norm } from "./gpt2.js";
import { checkTokens, float32Key, matVec, multiHeadAttention, tensorReader, uint32Key, vocabSize, type Matrix } from "./llama.js";

export type BertPoolingName = "none" | "mean" | "cls" | "last" | "rank";

export interface BertHparams {
  nVocab: number;
  nEmbd: number;
  nHead: number;
  nLayer: number;
  nCtx: number;
  nFf: number;
  /** LayerNorm epsilon, exactly as stored (a float32). */
  eps: number;
  /** bert.pooling_type as a name. */
  pooling: BertPoolingName;
  /** Whether the file has the classification head (cls.*). */
  hasClassifier: boolean;
}

export interface BertForwardOptions {
  /** "ggml-cpu" (default): GELU with ggml's float16 table; "exact": the tanh formula. */
  gelu?: "ggml-cpu" | "exact";
  /** "ggml-cpu" (default): F16 weights see F16-rounded activations; "exact": no rounding. */
  matmul?: "ggml-cpu" | "exact";
}

export interface BertForwardResult {
  /** Per token: nEmbd values, the last block's output. */
  hidden: Float64Array[];
  /** Average of the token rows (mean pooling). */
  mean: Float64Array;
  /** The first token's row (cls pooling). */
  cls: Float64Array;
  /** The reranker score(s) (rank pooling); only for files with a classification head. */
  rank?: Float64Array;
  /** What llama.cpp returns as the sequence embedding for the file's pooling type (none: undefined). */
  pooled?: Float64Array;
}

export interface BertReference {
  hparams: BertHparams;
  forward(tokens: readonly number[], opts?: BertForwardOptions): BertForwardResult;
}

interface Affine {
  w: Matrix;
  b: Float32Array;
}

interface Layer {
  q: Affine;
  k: Affine;
  v: Affine;
  o: Affine;
  attnNorm: Norm;
  up: Affine;
  down: Affine;
  outNorm: Norm;
}

interface Weights {
  tokenEmbd: Matrix;
  typeEmbd?: Matrix;
  posEmbd: Matrix;
  embdNorm: Norm;
  layers: Layer[];
  cls?: Affine;
  clsOut?: Affine;
}

const POOLING_NAMES: readonly BertPoolingName[] = ["none", "mean", "cls", "last", "rank"];

function readHparams(file: GgufFile, hasClassifier: boolean): BertHparams {
  const arch = file.metadata["general.architecture"];
  if (arch?.value !== "bert") throw new LlamaError("ERR_UNSUPPORTED", `Not a BERT model: architecture ${arch?.value}`);
  const pooling = file.metadata["bert.pooling_type"] === undefined ? 0 : uint32Key(file, "bert.pooling_type");
  if (pooling >= POOLING_NAMES.length) throw new GgufError(`Unknown pooling type ${pooling}`);
  return {
    nVocab: vocabSize(file),
    nEmbd: uint32Key(file, "bert.embedding_length"),
    nHead: uint32Key(file, "bert.attention.head_count"),
    nLayer: uint32Key(file, "bert.block_count"),
    nCtx: uint32Key(file, "bert.context_length"),
    nFf: uint32Key(file, "bert.feed_forward_length"),
    eps: float32Key(file, "bert.attention.layer_norm_epsilon"),
    pooling: POOLING_NAMES[pooling],
    hasClassifier,
  };
}

/** Loads a BERT GGUF (F32, F16 or BF16 tensors) into a reference model. */
export async function loadBertReference(path: string): Promise<BertReference> {
  const file = await readGguf(path, { maxArrayLength: 1 });
  const { load, matrix, has } = tensorReader(path, file);
  const hp = readHparams(file, has("cls.output.weight"));
  const { nEmbd, nFf, nVocab } = hp;
  const norm = async (prefix: string): Promise<Norm> => ({ weight: await load(`${prefix}.weight`, [nEmbd]), bias: await load(`${prefix}.bias`, [nEmbd]) });
  const affine = async (prefix: string, nIn: number, nOut: number): Promise<Affine> => ({
    w: await matrix(`${prefix}.weight`, nIn, nOut),
    b: await load(`${prefix}.bias`, [nOut]),
  });
  const layers: Layer[] = [];
  for (let i = 0; i < hp.nLayer; i++) {
    const blk = `blk.${i}`;
    layers.push({
      q: await affine(`${blk}.attn_q`, nEmbd, nEmbd),
      k: await affine(`${blk}.attn_k`, nEmbd, nEmbd),
      v: await affine(`${blk}.attn_v`, nEmbd, nEmbd),
      o: await affine(`${blk}.attn_output`, nEmbd, nEmbd),
      attnNorm: await norm(`${blk}.attn_output_norm`),
      up: await affine(`${blk}.ffn_up`, nEmbd, nFf),
      down: await affine(`${blk}.ffn_down`, nFf, nEmbd),
      outNorm: await norm(`${blk}.layer_output_norm`),
    });
  }
  const typeInfo = file.tensors.find((t) => t.name === "token_types.weight");
  const weights: Weights = {
    tokenEmbd: await matrix("token_embd.weight", nEmbd, nVocab),
    typeEmbd: typeInfo === undefined ? undefined : await matrix("token_types.weight", nEmbd, typeInfo.shape[1]),
    posEmbd: await matrix("position_embd.weight", nEmbd, hp.nCtx),
    embdNorm: await norm("token_embd_norm"),
    layers,
  };
  if (hp.hasClassifier) {
    const clsOutInfo = file.tensors.find((t) => t.name === "cls.output.weight")!;
    weights.cls = has("cls.weight") ? await affine("cls", nEmbd, nEmbd) : undefined;
    weights.clsOut = await affine("cls.output", nEmbd, clsOutInfo.shape[1]);
  }
  return { hparams: hp, forward: (tokens, opts) => forward(hp, weights, tokens, opts ?? {}) };
}

function applyAffine({ w, b }: Affine, x: ArrayLike<number>, roundF16: boolean): Float64Array {
  const y = matVec(w, x, roundF16);
  for (let i = 0; i < y.length; i++) y[i] += b[i];
  return y;
}

function forward(hp: BertHparams, w: Weights, tokens: readonly number[], opts: BertForwardOptions): BertForwardResult {
  checkTokens(hp.nVocab, hp.nCtx, tokens);
  const { nEmbd, eps } = hp;
  const act = opts.gelu === "exact" ? gelu : geluGgmlCpu;
  const f16 = (opts.matmul ?? "ggml-cpu") === "ggml-cpu";
  const row = (m: Matrix, r: number) => m.data.subarray(r * m.cols, (r + 1) * m.cols);
  let x = tokens.map((t, pos) => {
    const [tok, position] = [row(w.tokenEmbd, t), row(w.posEmbd, pos)];
    const type = w.typeEmbd === undefined ? undefined : row(w.typeEmbd, 0);
    const v = new Float64Array(nEmbd);
    for (let d = 0; d < nEmbd; d++) v[d] = tok[d] + (type === undefined ? 0 : type[d]) + position[d];
    return layerNorm(v, w.embdNorm, eps);
  });
  for (const layer of w.layers) {
    const q = x.map((v) => applyAffine(layer.q, v, f16));
    const k = x.map((v) => applyAffine(layer.k, v, f16));
    const vv = x.map((v) => applyAffine(layer.v, v, f16));
    const { out } = multiHeadAttention(q, k, vv, hp.nHead, hp.nHead, false);
    x = x.map((v, i) => {
      const attn = applyAffine(layer.o, out[i], f16);
      const h = layerNorm(attn.map((a, d) => a + v[d]), layer.attnNorm, eps);
      const ffn = applyAffine(layer.down, applyAffine(layer.up, h, f16).map(act), f16);
      return layerNorm(ffn.map((f, d) => f + h[d]), layer.outNorm, eps);
    });
  }
  const mean = new Float64Array(nEmbd);
  for (const v of x) for (let d = 0; d < nEmbd; d++) mean[d] += v[d] / x.length;
  const cls = Float64Array.from(x[0]);
  let rank: Float64Array | undefined;
  if (w.clsOut !== undefined) {
    const head = w.cls === undefined ? cls : applyAffine(w.cls, cls, f16).map(Math.tanh);
    rank = applyAffine(w.clsOut, head, f16);
  }
  const pooled = { none: undefined, mean, cls, last: Float64Array.from(x[x.length - 1]), rank }[hp.pooling];
  return { hidden: x, mean, cls, rank, pooled };
}
