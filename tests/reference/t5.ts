/**
 * A reference T5 in plain TypeScript, computed in float64: an oracle for what llama.cpp computes
 * for the "t5" and "t5encoder" architectures (src/models/t5.cpp, t5encoder.cpp).
 *
 * Encoder: token embedding (no position embedding), pre-RMSNorm blocks of bidirectional
 * self-attention and a feed-forward network, then enc.output_norm. Decoder: the same embedding,
 * pre-RMSNorm blocks of causal self-attention, cross-attention over every encoder output (no mask,
 * no position bias) and the feed-forward network, then dec.output_norm and the output projection
 * (token_embd when the file has no output.weight; llama.cpp does not rescale it as HF T5 does).
 *
 * Attention is softmax(q·k + bias) without the 1/√d scaling (build_attn's kq_scale 1.0). The bias
 * of self-attention is attn_rel_b[bucket(key position − query position)][head] (build_pos_bias),
 * from the layer's own attn_rel_b or, when it has none, layer 0's; the buckets are
 * llama_relative_position_bucket's (llama-graph.cpp): bidirectional in the encoder (half the
 * buckets per direction), causal in the decoder, exact below max_exact = buckets/2 (per
 * direction), logarithmic up to a distance of 128. `relativePositionBucket` repeats its float32
 * steps (logf, floorf): distances 16, 32 and 64 land exactly on a bucket edge (8 + 8·log₁₆(16/8)
 * = 10), where a different rounding would pick the bucket below.
 *
 * The feed-forward network is max(0, up·x) → down (T5) or gelu(gate·x) ⊙ up·x → down (flan-T5,
 * ggml_geglu_split). ggml's CPU GELU reads a float16 table over float16-rounded inputs; `gelu:
 * "ggml-cpu"` (the default) rounds the same way (see tests/reference/gpt2.ts). F16 weights
 * multiply F16-rounded activations on the CPU; `matmul: "ggml-cpu"` (the default) rounds them too
 * (see tests/reference/llama.ts).
 */

import { LlamaError } from "../../src/errors.js";
import { readGguf, type GgufFile } from "../../src/gguf/index.js";
import { geluGgmlCpu, gelu } from "./gpt2.js";
import { checkTokens, float32Key, matVec, rmsNorm, tensorReader, uint32Key, vocabSize, type Matrix } from "./llama.js";

export interface T5Hparams {
  architecture: "t5" | "t5encoder";
  nVocab: number;
  nEmbd: number;
  nHead: number;
  headDim: number;
  /** Encoder blocks. */
  nLayer: number;
  /** Decoder blocks (0 for t5encoder). */
  nDecLayer: number;
  nCtx: number;
  nFf: number;
  nBuckets: number;
  /** RMSNorm epsilon, exactly as stored (a float32). */
  rmsEps: number;
  /** t5.decoder_start_token_id, or null (t5encoder; llama.cpp then starts with BOS). */
  decoderStartToken: number | null;
}

export interface T5ComputeOptions {
  /** "ggml-cpu" (default): GELU through ggml's float16 table; "exact": the tanh formula in float64. */
  gelu?: "ggml-cpu" | "exact";
  /** "ggml-cpu" (default): F16 weights see F16-rounded activations; "exact": no rounding. */
  matmul?: "ggml-cpu" | "exact";
}

/** attention[layer][head][query]: the probabilities over the keys (masked keys 0). */
export type AttentionProbabilities = Float64Array[][][];

export interface T5EncodeResult {
  /** Per token: the encoder output after enc.output_norm (what the decoder's cross-attention reads). */
  output: Float64Array[];
  /** Per encoder layer, [head][query][key]. */
  attention: AttentionProbabilities;
  /** hidden[layer][token]: the residual stream after the layer. */
  hidden: Float64Array[][];
}

export interface T5DecodeResult {
  /** Per decoder position: nVocab logits for the next token. */
  logits: Float64Array[];
  /** Per decoder layer, [head][query][key] over decoder positions (future keys 0). */
  selfAttention: AttentionProbabilities;
  /** Per decoder layer, [head][query][encoder position]. */
  crossAttention: AttentionProbabilities;
  /** hidden[layer][position]: the residual stream after the layer. */
  hidden: Float64Array[][];
}

export interface T5Reference {
  hparams: T5Hparams;
  encode(tokens: readonly number[], opts?: T5ComputeOptions): T5EncodeResult;
  /** Needs a "t5" model; `encoderOutput` is encode(...).output. */
  decode(encoderOutput: readonly Float64Array[], decoderTokens: readonly number[], opts?: T5ComputeOptions): T5DecodeResult;
}

interface Attention {
  q: Matrix;
  k: Matrix;
  v: Matrix;
  o: Matrix;
}

interface FeedForward {
  norm: Float32Array;
  gate: Matrix | null;
  up: Matrix;
  down: Matrix;
}

interface EncoderLayer {
  attnNorm: Float32Array;
  /** ggml shape [nHead, nBuckets]: bucket b, head h at b·nHead + h. */
  relBias: Float32Array;
  self: Attention;
  ffn: FeedForward;
}

interface DecoderLayer extends EncoderLayer {
  crossNorm: Float32Array;
  cross: Attention;
}

/** llama_relative_position_bucket(x, y, nBuckets, bidirectional), float32 steps included. */
export function relativePositionBucket(x: number, y: number, nBuckets: number, bidirectional: boolean): number {
  const f = Math.fround;
  const maxDistance = 128;
  const n = bidirectional ? nBuckets >> 1 : nBuckets;
  const maxExact = n >> 1;
  let relative = x - y;
  let bucket = 0;
  if (bidirectional) {
    bucket += relative > 0 ? n : 0;
    relative = Math.abs(relative);
  } else {
    relative = -Math.min(relative, 0);
  }
  if (relative < maxExact) return bucket + relative;
  // floorf(max_exact + logf(r / max_exact) * (n - max_exact) / log(max_distance / max_exact)):
  // logf and the product in float32, the division and the sum in double, floorf of a float.
  const logf = f(Math.log(f(relative / maxExact)));
  const large = Math.floor(f(maxExact + f(logf * (n - maxExact)) / Math.log(maxDistance / maxExact)));
  return bucket + Math.min(large, n - 1);
}

function readHparams(file: GgufFile): T5Hparams {
  const arch = file.metadata["general.architecture"]?.value;
  if (arch !== "t5" && arch !== "t5encoder") throw new LlamaError("ERR_UNSUPPORTED", `Not a T5 model: architecture ${arch}`);
  const key = (name: string) => `${arch}.${name}`;
  const nEmbd = uint32Key(file, key("embedding_length"));
  const nHead = uint32Key(file, key("attention.head_count"));
  const nLayer = uint32Key(file, key("block_count"));
  const has = (name: string) => file.metadata[key(name)] !== undefined;
  const headDim = has("attention.key_length") ? uint32Key(file, key("attention.key_length")) : nEmbd / nHead;
  if (headDim * nHead !== nEmbd) throw new LlamaError("ERR_UNSUPPORTED", `The reference needs key_length · head_count = embedding_length`);
  return {
    architecture: arch,
    nVocab: vocabSize(file),
    nEmbd,
    nHead,
    headDim,
    nLayer,
    nDecLayer: arch === "t5encoder" ? 0 : has("decoder_block_count") ? uint32Key(file, key("decoder_block_count")) : nLayer,
    nCtx: uint32Key(file, key("context_length")),
    nFf: uint32Key(file, key("feed_forward_length")),
    nBuckets: uint32Key(file, key("attention.relative_buckets_count")),
    rmsEps: float32Key(file, key("attention.layer_norm_rms_epsilon")),
    decoderStartToken: arch === "t5" && has("decoder_start_token_id") ? uint32Key(file, key("decoder_start_token_id")) : null,
  };
}

/** Loads a T5 or T5-encoder GGUF (F32, F16 or BF16 tensors) into a reference model. */
export async function loadT5Reference(path: string): Promise<T5Reference> {
  const file = await readGguf(path, { maxArrayLength: 1 });
  const hp = readHparams(file);
  const { load, matrix, has } = tensorReader(path, file);
  const { nEmbd, nFf, nVocab, nHead, nBuckets } = hp;
  const attention = async (prefix: string, [q, k, v, o]: readonly string[]): Promise<Attention> => ({
    q: await matrix(`${prefix}.${q}.weight`, nEmbd, nEmbd),
    k: await matrix(`${prefix}.${k}.weight`, nEmbd, nEmbd),
    v: await matrix(`${prefix}.${v}.weight`, nEmbd, nEmbd),
    o: await matrix(`${prefix}.${o}.weight`, nEmbd, nEmbd),
  });
  const feedForward = async (prefix: string): Promise<FeedForward> => ({
    norm: await load(`${prefix}.ffn_norm.weight`, [nEmbd]),
    gate: has(`${prefix}.ffn_gate.weight`) ? await matrix(`${prefix}.ffn_gate.weight`, nEmbd, nFf) : null,
    up: await matrix(`${prefix}.ffn_up.weight`, nEmbd, nFf),
    down: await matrix(`${prefix}.ffn_down.weight`, nFf, nEmbd),
  });
  // A layer without attn_rel_b uses layer 0's (t5.cpp: layers[il].attn_rel_b ?: layers[0].attn_rel_b).
  const relBias = async (stack: string, i: number): Promise<Float32Array> => {
    const name = `${stack}.blk.${has(`${stack}.blk.${i}.attn_rel_b.weight`) ? i : 0}.attn_rel_b.weight`;
    return load(name, [nHead, nBuckets]);
  };
  const encoder: EncoderLayer[] = [];
  for (let i = 0; i < hp.nLayer; i++) {
    const blk = `enc.blk.${i}`;
    encoder.push({
      attnNorm: await load(`${blk}.attn_norm.weight`, [nEmbd]),
      relBias: await relBias("enc", i),
      self: await attention(blk, ["attn_q", "attn_k", "attn_v", "attn_o"]),
      ffn: await feedForward(blk),
    });
  }
  const decoder: DecoderLayer[] = [];
  for (let i = 0; i < hp.nDecLayer; i++) {
    const blk = `dec.blk.${i}`;
    decoder.push({
      attnNorm: await load(`${blk}.attn_norm.weight`, [nEmbd]),
      relBias: await relBias("dec", i),
      self: await attention(blk, ["attn_q", "attn_k", "attn_v", "attn_o"]),
      crossNorm: await load(`${blk}.cross_attn_norm.weight`, [nEmbd]),
      cross: await attention(blk, ["cross_attn_q", "cross_attn_k", "cross_attn_v", "cross_attn_o"]),
      ffn: await feedForward(blk),
    });
  }
  const tokenEmbd = await matrix("token_embd.weight", nEmbd, nVocab);
  const encOutputNorm = await load("enc.output_norm.weight", [nEmbd]);
  const decOutputNorm = hp.nDecLayer > 0 ? await load("dec.output_norm.weight", [nEmbd]) : null;
  const output = hp.nDecLayer > 0 && has("output.weight") ? await matrix("output.weight", nEmbd, nVocab) : tokenEmbd;

  const embed = (tokens: readonly number[]) => tokens.map((t) => Float64Array.from(tokenEmbd.data.subarray(t * nEmbd, (t + 1) * nEmbd)));
  const settings = (opts: T5ComputeOptions = {}) => ({
    f16: (opts.matmul ?? "ggml-cpu") === "ggml-cpu",
    act: opts.gelu === "exact" ? gelu : geluGgmlCpu,
  });
  const ffn = (x: Float64Array, w: FeedForward, s: ReturnType<typeof settings>): Float64Array => {
    const n = rmsNorm(x, w.norm, hp.rmsEps);
    const up = matVec(w.up, n, s.f16);
    const gate = w.gate === null ? null : matVec(w.gate, n, s.f16);
    const hidden = up.map((u, i) => (gate === null ? Math.max(0, u) : s.act(gate[i]) * u));
    return matVec(w.down, hidden, s.f16);
  };

  return {
    hparams: hp,
    encode(tokens, opts) {
      checkTokens(nVocab, hp.nCtx, tokens);
      const s = settings(opts);
      const x = embed(tokens);
      const bias = (l: EncoderLayer) => (h: number, q: number, k: number) => l.relBias[relativePositionBucket(k, q, nBuckets, true) * nHead + h];
      const result: T5EncodeResult = { output: [], attention: [], hidden: [] };
      for (const layer of encoder) {
        const normed = x.map((v) => rmsNorm(v, layer.attnNorm, hp.rmsEps));
        const { out, maps } = attend(hp, layer.self, normed, normed, bias(layer), false, s.f16);
        x.forEach((v, i) => addInPlace(v, out[i]));
        x.forEach((v) => addInPlace(v, ffn(v, layer.ffn, s)));
        result.attention.push(maps);
        result.hidden.push(x.map((v) => Float64Array.from(v)));
      }
      result.output = x.map((v) => rmsNorm(v, encOutputNorm, hp.rmsEps));
      return result;
    },
    decode(encoderOutput, decoderTokens, opts) {
      if (decOutputNorm === null) throw new LlamaError("ERR_UNSUPPORTED", "A t5encoder model has no decoder");
      if (encoderOutput.length === 0 || encoderOutput.some((v) => v.length !== nEmbd)) throw new LlamaError("ERR_INVALID_ARGUMENT", `encoderOutput must hold vectors of ${nEmbd} values`);
      checkTokens(nVocab, hp.nCtx, decoderTokens);
      const s = settings(opts);
      const x = embed(decoderTokens);
      const bias = (l: DecoderLayer) => (h: number, q: number, k: number) => l.relBias[relativePositionBucket(k, q, nBuckets, false) * nHead + h];
      const result: T5DecodeResult = { logits: [], selfAttention: [], crossAttention: [], hidden: [] };
      for (const layer of decoder) {
        const normed = x.map((v) => rmsNorm(v, layer.attnNorm, hp.rmsEps));
        const self = attend(hp, layer.self, normed, normed, bias(layer), true, s.f16);
        x.forEach((v, i) => addInPlace(v, self.out[i]));
        const crossIn = x.map((v) => rmsNorm(v, layer.crossNorm, hp.rmsEps));
        const cross = attend(hp, layer.cross, crossIn, encoderOutput, null, false, s.f16);
        x.forEach((v, i) => addInPlace(v, cross.out[i]));
        x.forEach((v) => addInPlace(v, ffn(v, layer.ffn, s)));
        result.selfAttention.push(self.maps);
        result.crossAttention.push(cross.maps);
        result.hidden.push(x.map((v) => Float64Array.from(v)));
      }
      result.logits = x.map((v) => matVec(output, rmsNorm(v, decOutputNorm, hp.rmsEps), s.f16));
      return result;
    },
  };
}

/**
 * Multi-head attention of the `queries` over the `keys` (inputs already normalised): per head,
 * softmax(q·k + bias(head, query, key)) with no 1/√d scaling, causal when asked; then the output
 * projection. Returns the projected output per query and the probabilities [head][query][key].
 */
function attend(
  hp: T5Hparams,
  w: Attention,
  queries: readonly Float64Array[],
  keys: readonly Float64Array[],
  bias: ((head: number, query: number, key: number) => number) | null,
  causal: boolean,
  f16: boolean,
): { out: Float64Array[]; maps: Float64Array[][] } {
  const { nHead, headDim } = hp;
  const q = queries.map((v) => matVec(w.q, v, f16));
  const k = keys.map((v) => matVec(w.k, v, f16));
  const v = keys.map((x) => matVec(w.v, x, f16));
  const merged = queries.map(() => new Float64Array(nHead * headDim));
  const maps: Float64Array[][] = [];
  for (let h = 0; h < nHead; h++) {
    const d0 = h * headDim;
    const rows: Float64Array[] = [];
    for (let i = 0; i < q.length; i++) {
      const row = new Float64Array(k.length);
      const last = causal ? i : k.length - 1;
      let max = -Infinity;
      for (let j = 0; j <= last; j++) {
        let dot = bias === null ? 0 : bias(h, i, j);
        for (let d = 0; d < headDim; d++) dot += q[i][d0 + d] * k[j][d0 + d];
        row[j] = dot;
        max = Math.max(max, dot);
      }
      let sum = 0;
      for (let j = 0; j <= last; j++) sum += row[j] = Math.exp(row[j] - max);
      for (let j = 0; j <= last; j++) {
        row[j] /= sum;
        for (let d = 0; d < headDim; d++) merged[i][d0 + d] += row[j] * v[j][d0 + d];
      }
      rows.push(row);
    }
    maps.push(rows);
  }
  return { out: merged.map((m) => matVec(w.o, m, f16)), maps };
}

function addInPlace(x: Float64Array, y: Float64Array): void {
  for (let i = 0; i < x.length; i++) x[i] += y[i];
}
