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
import { writeRandomT5 } from "../../src/fixtures/t5.js";

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
 * The smallest T5 llama.cpp loads (src/models/t5.cpp): one encoder and one decoder block of
 * width 16, two heads, 8 relative position buckets, a ReLU feed-forward network, random F32
 * weights, and a 15-token UGM vocabulary (<pad>, </s>, <unk> and a few SentencePiece pieces, enough
 * for "Hello world"). With `encoderOnly` it is the "t5encoder" architecture (src/models/t5encoder.cpp:
 * the encoder half, for embeddings). writeRandomT5 (src/fixtures/t5.ts) writes it.
 */
export async function writeTinyT5(path: string, opts: { seed: number; encoderOnly?: boolean }): Promise<void> {
  const pieces = ["▁", "▁Hello", "▁world", "H", "e", "l", "o", "w", "r", "d", "▁a", "a"];
  await writeRandomT5(path, {
    nEmbd: 16, nHead: 2, nLayer: 1, nFf: 32, nCtx: 64, nBuckets: 8,
    seed: opts.seed,
    encoderOnly: opts.encoderOnly ?? false,
    gated: false,
    pieces: pieces.map((piece, i) => [piece, -1 - i / 4] as const),
    name: `tiny-${opts.encoderOnly ? "t5encoder" : "t5"}-seed${opts.seed}`,
  });
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
