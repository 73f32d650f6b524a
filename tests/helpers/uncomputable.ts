/**
 * Models that llama.cpp loads but ggml cannot run, for tests/uncomputable.test.ts: copies of a
 * valid GGUF with some tensors stored in another type (an F16 norm weight, an I32 matrix, ...),
 * and the smallest T5 (encoder-decoder) and T5-encoder models llama.cpp accepts.
 */
import {
  GgmlType,
  ggufValue,
  readGguf,
  readTensorBytes,
  readTensorFloats,
  tensorByteSize,
  writeGguf,
  type GgufMetadata,
  type GgufTensorInput,
} from "../../src/gguf/index.js";
import { randomValues } from "../../src/fixtures/random.js";

const FLOAT_TYPES = new Set<GgmlType>([GgmlType.F32, GgmlType.F16, GgmlType.BF16]);

/**
 * Writes `out`: `src` with the tensors named in `types` stored in the given type (float values
 * converted for F32/F16/BF16, zero bytes for any other type) and `metadata` merged in.
 */
export async function writeRetyped(src: string, out: string, types: Record<string, GgmlType>, metadata: GgufMetadata = {}): Promise<void> {
  const file = await readGguf(src);
  for (const name of Object.keys(types)) {
    if (!file.tensors.some((t) => t.name === name)) throw new Error(`${src} has no tensor ${name}`);
  }
  const tensors: GgufTensorInput[] = file.tensors.map((t) => {
    const type = types[t.name];
    if (type === undefined) return { name: t.name, shape: t.shape, type: t.type, data: () => once(readTensorBytes(src, t)) };
    if (FLOAT_TYPES.has(type)) return { name: t.name, shape: t.shape, type, data: () => once(readTensorFloats(src, t)) };
    return { name: t.name, shape: t.shape, type, data: new Uint8Array(tensorByteSize(type, t.shape)) };
  });
  await writeGguf(out, { metadata: { ...file.metadata, ...metadata }, tensors });
}

async function* once<T>(value: Promise<T>): AsyncGenerator<T> {
  yield await value;
}

/**
 * A T5 vocabulary (llama.cpp's UGM tokenizer, tokenizer.ggml.model "t5"): <pad> 0, </s> 1 (EOS),
 * <unk> 2, then a few SentencePiece pieces. No precompiled_charsmap: llama.cpp then skips the
 * normalisation, which these tests do not need.
 */
function t5Vocab(): { metadata: GgufMetadata; nVocab: number } {
  const pieces = ["▁", "▁Hello", "▁world", "H", "e", "l", "o", "w", "r", "d", "▁a", "a"];
  const tokens = ["<pad>", "</s>", "<unk>", ...pieces];
  return {
    nVocab: tokens.length,
    metadata: {
      "tokenizer.ggml.model": ggufValue.string("t5"),
      "tokenizer.ggml.tokens": ggufValue.array("string", tokens),
      "tokenizer.ggml.scores": ggufValue.array("float32", [0, 0, 0, ...pieces.map((_, i) => -1 - i / 4)]),
      "tokenizer.ggml.token_type": ggufValue.array("int32", [3, 3, 2, ...pieces.map(() => 1)]),
      "tokenizer.ggml.eos_token_id": ggufValue.uint32(1),
      "tokenizer.ggml.unknown_token_id": ggufValue.uint32(2),
      "tokenizer.ggml.padding_token_id": ggufValue.uint32(0),
    },
  };
}

/**
 * The smallest T5 llama.cpp loads (src/models/t5.cpp): one encoder and one decoder block of
 * width 16, two heads, relative position buckets, random F32 weights. With `encoderOnly` it is
 * the "t5encoder" architecture (src/models/t5encoder.cpp: the encoder half, for embeddings).
 */
export async function writeTinyT5(path: string, opts: { seed: number; encoderOnly?: boolean }): Promise<void> {
  const arch = opts.encoderOnly ? "t5encoder" : "t5";
  const nEmbd = 16, nHead = 2, nFf = 32, nBuckets = 8;
  const vocab = t5Vocab();
  const metadata: GgufMetadata = {
    "general.architecture": ggufValue.string(arch),
    "general.name": ggufValue.string(`tiny-${arch}-seed${opts.seed}`),
    [`${arch}.context_length`]: ggufValue.uint32(64),
    [`${arch}.embedding_length`]: ggufValue.uint32(nEmbd),
    [`${arch}.feed_forward_length`]: ggufValue.uint32(nFf),
    [`${arch}.block_count`]: ggufValue.uint32(1),
    [`${arch}.attention.head_count`]: ggufValue.uint32(nHead),
    [`${arch}.attention.key_length`]: ggufValue.uint32(nEmbd / nHead),
    [`${arch}.attention.value_length`]: ggufValue.uint32(nEmbd / nHead),
    [`${arch}.attention.layer_norm_rms_epsilon`]: ggufValue.float32(1e-6),
    [`${arch}.attention.relative_buckets_count`]: ggufValue.uint32(nBuckets),
    ...(opts.encoderOnly ? {} : { [`${arch}.decoder_start_token_id`]: ggufValue.uint32(0) }),
    ...vocab.metadata,
  };
  const shapes: Array<[string, number[]]> = [["token_embd.weight", [nEmbd, vocab.nVocab]], ["enc.output_norm.weight", [nEmbd]]];
  const block = (prefix: string, parts: string[]) => {
    for (const part of parts) {
      const [name, shape] =
        part === "attn_rel_b" ? [part, [nHead, nBuckets]]
        : part.endsWith("norm") ? [part, [nEmbd]]
        : part === "ffn_up" ? [part, [nEmbd, nFf]]
        : part === "ffn_down" ? [part, [nFf, nEmbd]]
        : [part, [nEmbd, nEmbd]];
      shapes.push([`${prefix}.${name}.weight`, shape]);
    }
  };
  block("enc.blk.0", ["attn_norm", "attn_rel_b", "attn_q", "attn_k", "attn_v", "attn_o", "ffn_norm", "ffn_up", "ffn_down"]);
  if (!opts.encoderOnly) {
    shapes.push(["dec.output_norm.weight", [nEmbd]], ["output.weight", [nEmbd, vocab.nVocab]]);
    block("dec.blk.0", [
      "attn_norm", "attn_rel_b", "attn_q", "attn_k", "attn_v", "attn_o",
      "cross_attn_norm", "cross_attn_q", "cross_attn_k", "cross_attn_v", "cross_attn_o",
      "ffn_norm", "ffn_up", "ffn_down",
    ]);
  }
  const tensors: GgufTensorInput[] = shapes.map(([name, shape]) => ({
    name,
    shape,
    type: GgmlType.F32,
    data: () => randomValues(opts.seed, name, shape.reduce((n, d) => n * d, 1), name.includes("norm") ? { mean: 1, std: 0.1 } : { mean: 0, std: 0.3 }),
  }));
  await writeGguf(path, { metadata, tensors });
}

/**
 * The smallest Mamba (recurrent, no attention: src/models/mamba.cpp) llama.cpp loads: one block of
 * width 16 (inner size 32, state 8, convolution kernel 4), random F32 weights, the vocabulary of
 * `vocabPath` (a GGUF holding tokenizer.* keys, such as writeSmallGpt2Vocab's).
 */
export async function writeTinyMamba(path: string, vocabPath: string, seed: number): Promise<void> {
  const vocab = await readGguf(vocabPath);
  const tokenizer = Object.fromEntries(Object.entries(vocab.metadata).filter(([k]) => k.startsWith("tokenizer.")));
  const nVocab = (vocab.metadata["tokenizer.ggml.tokens"].value as unknown[]).length;
  const nEmbd = 16, dInner = 32, dState = 8, dConv = 4, dtRank = 4;
  const metadata: GgufMetadata = {
    "general.architecture": ggufValue.string("mamba"),
    "general.name": ggufValue.string(`tiny-mamba-seed${seed}`),
    "mamba.context_length": ggufValue.uint32(64),
    "mamba.embedding_length": ggufValue.uint32(nEmbd),
    "mamba.block_count": ggufValue.uint32(1),
    "mamba.feed_forward_length": ggufValue.uint32(0),
    "mamba.attention.head_count": ggufValue.uint32(0),
    "mamba.attention.layer_norm_rms_epsilon": ggufValue.float32(1e-5),
    "mamba.ssm.conv_kernel": ggufValue.uint32(dConv),
    "mamba.ssm.inner_size": ggufValue.uint32(dInner),
    "mamba.ssm.state_size": ggufValue.uint32(dState),
    "mamba.ssm.time_step_rank": ggufValue.uint32(dtRank),
    ...tokenizer,
  };
  const shapes: Array<[string, number[]]> = [
    ["token_embd.weight", [nEmbd, nVocab]],
    ["blk.0.attn_norm.weight", [nEmbd]],
    ["blk.0.ssm_in.weight", [nEmbd, 2 * dInner]],
    ["blk.0.ssm_conv1d.weight", [dConv, dInner]],
    ["blk.0.ssm_conv1d.bias", [dInner]],
    ["blk.0.ssm_x.weight", [dInner, dtRank + 2 * dState]],
    ["blk.0.ssm_dt.weight", [dtRank, dInner]],
    ["blk.0.ssm_dt.bias", [dInner]],
    ["blk.0.ssm_a", [dState, dInner]],
    ["blk.0.ssm_d", [dInner]],
    ["blk.0.ssm_out.weight", [dInner, nEmbd]],
    ["output_norm.weight", [nEmbd]],
  ];
  const tensors: GgufTensorInput[] = shapes.map(([name, shape]) => ({
    name,
    shape,
    type: GgmlType.F32,
    // A must be negative (the state decays); norms near 1.
    data: () => randomValues(seed, name, shape.reduce((n, d) => n * d, 1), name.endsWith("ssm_a") ? { mean: -1, std: 0.1 } : name.includes("norm") ? { mean: 1, std: 0.1 } : { mean: 0, std: 0.3 }),
  }));
  await writeGguf(path, { metadata, tensors });
}
