import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { mkdtemp, open, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { GgufError, LlamaError } from "../src/errors.js";
import {
  GgmlType,
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  ggufValue,
  metadataValues,
  readGguf,
  readTensorBytes,
  readTensorFloats,
  tensorByteSize,
  writeGguf,
  type GgufMetadata,
} from "../src/gguf/index.js";

const MODELS = fileURLToPath(new URL("../vendor/llama.cpp/models/", import.meta.url));

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "llama-napi-gguf-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * An independent, minimal GGUF encoder (Buffer pieces, written differently from the module's
 * writer) that records where count-like and type fields are, for targeted mutations.
 */
class RawGguf {
  private parts: Buffer[] = [];
  length = 0;
  readonly countOffsets: number[] = [];
  readonly typeOffsets: number[] = [];

  private push(b: Buffer): this {
    this.parts.push(b);
    this.length += b.length;
    return this;
  }
  raw(b: Buffer | string): this {
    return this.push(Buffer.from(b));
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return this.push(b);
  }
  type(v: number): this {
    this.typeOffsets.push(this.length);
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    return this.push(b);
  }
  count(v: number | bigint): this {
    this.countOffsets.push(this.length);
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)));
    return this.push(b);
  }
  str(s: string): this {
    const b = Buffer.from(s, "utf8");
    return this.count(b.length).push(b);
  }
  padTo(alignment: number): this {
    return this.push(Buffer.alloc((alignment - (this.length % alignment)) % alignment));
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

interface RawTensor {
  name: string;
  shape: number[];
  type: number;
  offset: number;
}

/** A GGUF v3 file with a few keys of different types and three tensors (F32, Q8_0, F16). */
function sampleGguf(opts: { tensors?: RawTensor[]; extraKv?: (g: RawGguf) => void; extraKvCount?: number } = {}) {
  const tensors = opts.tensors ?? [
    { name: "a", shape: [4, 2], type: 0, offset: 0 },
    { name: "b", shape: [32, 2], type: 8, offset: 32 },
    { name: "c", shape: [3], type: 1, offset: 128 },
  ];
  const g = new RawGguf().raw("GGUF").u32(3).count(tensors.length).count(7 + (opts.extraKvCount ?? 0));
  g.str("general.architecture").type(8).str("sample");
  g.str("sample.count").type(4).u32(7);
  g.str("sample.ratio").type(6).raw(Buffer.from(new Float32Array([0.5]).buffer));
  g.str("sample.flag").type(7).raw(Buffer.from([1]));
  g.str("sample.big").type(10).count(2n ** 60n);
  g.str("sample.words").type(9).type(8).count(3).str("alpha").str("beta").str("γάμμα");
  g.str("sample.ids").type(9).type(5).count(3).raw(Buffer.from(new Int32Array([1, -2, 3]).buffer));
  opts.extraKv?.(g);
  for (const t of tensors) {
    g.str(t.name).u32(t.shape.length);
    for (const d of t.shape) g.count(d);
    g.type(t.type).count(t.offset);
  }
  const dataOffset = g.padTo(32).length;
  g.raw(Buffer.from(new Float32Array([0, 1, 2, 3, 4, 5, 6, 7]).buffer));
  g.raw(Buffer.from(Array.from({ length: 68 }, (_, i) => i % 251))).padTo(32);
  g.raw(Buffer.from(new Uint16Array([0x3c00, 0xc000, 0x3800]).buffer)).padTo(32);
  return { bytes: g.bytes(), dataOffset, countOffsets: g.countOffsets, typeOffsets: g.typeOffsets };
}

/** The first `n` bytes of a file. */
async function readStart(path: string, n: number): Promise<Buffer> {
  const file = await open(path, "r");
  try {
    return (await file.read(Buffer.alloc(n), 0, n, 0)).buffer;
  } finally {
    await file.close();
  }
}

let fileCounter = 0;
async function writeTemp(bytes: Uint8Array): Promise<string> {
  const path = join(dir, `f${fileCounter++}.gguf`);
  await writeFile(path, bytes);
  return path;
}

/** The rejection of `p`, failing the test if it resolves. */
async function rejection(p: Promise<unknown>): Promise<GgufError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(GgufError);
  expect((e as GgufError).code).toBe("ERR_GGUF_INVALID");
  return e as GgufError;
}

/** Facts about the vocabulary files, established with gguf-py (vendor/llama.cpp/gguf-py). */
const VOCAB_FACTS: Record<string, { version: number; keys: number; arch: string; model: string; nVocab: number; first: string }> = {
  aquila: { version: 2, keys: 18, arch: "llama", model: "gpt2", nVocab: 100008, first: "<|endoftext|>" },
  baichuan: { version: 3, keys: 18, arch: "baichuan", model: "llama", nVocab: 64000, first: "<unk>" },
  "bert-bge": { version: 3, keys: 20, arch: "bert", model: "bert", nVocab: 30522, first: "[PAD]" },
  "command-r": { version: 3, keys: 27, arch: "command-r", model: "gpt2", nVocab: 256000, first: "<PAD>" },
  "deepseek-coder": { version: 3, keys: 25, arch: "llama", model: "gpt2", nVocab: 32256, first: "!" },
  "deepseek-llm": { version: 3, keys: 23, arch: "llama", model: "gpt2", nVocab: 102400, first: "!" },
  falcon: { version: 3, keys: 18, arch: "falcon", model: "gpt2", nVocab: 65024, first: ">>TITLE<<" },
  "gemma-4": { version: 3, keys: 42, arch: "gemma4", model: "gemma4", nVocab: 262144, first: "<pad>" },
  "gpt-2": { version: 3, keys: 16, arch: "gpt2", model: "gpt2", nVocab: 50257, first: "!" },
  "gpt-neox": { version: 3, keys: 17, arch: "gptneox", model: "gpt2", nVocab: 50432, first: "<|endoftext|>" },
  "llama-bpe": { version: 3, keys: 20, arch: "llama", model: "gpt2", nVocab: 128256, first: "!" },
  "llama-spm": { version: 3, keys: 22, arch: "llama", model: "llama", nVocab: 32000, first: "<unk>" },
  mpt: { version: 3, keys: 17, arch: "mpt", model: "gpt2", nVocab: 50432, first: "<|endoftext|>" },
  "nomic-bert-moe": { version: 3, keys: 37, arch: "nomic-bert-moe", model: "t5", nVocab: 250048, first: "<s>" },
  "phi-3": { version: 3, keys: 26, arch: "phi3", model: "llama", nVocab: 32064, first: "<unk>" },
  qwen2: { version: 3, keys: 20, arch: "qwen2", model: "gpt2", nVocab: 151936, first: "!" },
  qwen35: { version: 3, keys: 20, arch: "qwen2", model: "gpt2", nVocab: 151936, first: "!" },
  refact: { version: 3, keys: 18, arch: "refact", model: "gpt2", nVocab: 49216, first: "<|endoftext|>" },
  starcoder: { version: 3, keys: 19, arch: "starcoder2", model: "gpt2", nVocab: 49152, first: "<|endoftext|>" },
};

describe("readGguf on llama.cpp's vocabulary files", () => {
  it("matches known facts and the raw header bytes for every ggml-vocab-*.gguf", async () => {
    const files = (await readdir(MODELS)).filter((f) => /^ggml-vocab-.*\.gguf$/.test(f)).sort();
    expect(files.map((f) => f.slice(11, -5))).toEqual(Object.keys(VOCAB_FACTS).sort());
    for (const name of files) {
      const path = join(MODELS, name);
      const facts = VOCAB_FACTS[name.slice(11, -5)];
      const file = await readGguf(path, { maxArrayLength: 2 });
      const raw = await readStart(path, 24);
      expect(raw.toString("latin1", 0, 4)).toBe("GGUF");
      expect(file.version).toBe(raw.readUInt32LE(4));
      expect(file.tensors.length).toBe(Number(raw.readBigUInt64LE(8)));
      expect(Object.keys(file.metadata).length).toBe(Number(raw.readBigUInt64LE(16)));
      const values = metadataValues(file);
      expect({ version: file.version, keys: Object.keys(values).length }).toEqual({ version: facts.version, keys: facts.keys });
      expect([values["general.architecture"], values["tokenizer.ggml.model"]]).toEqual([facts.arch, facts.model]);
      const tokens = file.metadata["tokenizer.ggml.tokens"];
      expect(tokens).toMatchObject({ type: "array", itemType: "string", truncatedFrom: facts.nVocab });
      expect(tokens.value).toEqual([facts.first, expect.any(String)]);
      expect(file.tensors).toEqual([]);
      expect(file.fileSize).toBe((await stat(path)).size);
      expect(file.dataOffset).toBe(file.fileSize); // no tensors: the file ends with the metadata
    }
  });

  it("reads the whole GPT-2 vocabulary with its types", async () => {
    const file = await readGguf(join(MODELS, "ggml-vocab-gpt-2.gguf"));
    const m = file.metadata;
    expect(m["general.architecture"]).toEqual({ type: "string", value: "gpt2" });
    expect(m["gpt2.block_count"]).toEqual({ type: "uint32", value: 12 });
    expect(m["gpt2.attention.layer_norm_epsilon"]).toEqual({ type: "float32", value: Math.fround(1e-5) });
    expect(m["tokenizer.ggml.bos_token_id"]).toEqual({ type: "uint32", value: 50256 });
    const tokens = m["tokenizer.ggml.tokens"].value as string[];
    expect(tokens.length).toBe(50257);
    expect([tokens[0], tokens[15496], tokens[50256]]).toEqual(["!", "Hello", "<|endoftext|>"]);
    const types = m["tokenizer.ggml.token_type"];
    expect(types).toMatchObject({ type: "array", itemType: "int32" });
    expect((types.value as number[]).slice(-2)).toEqual([1, 3]);
    const merges = m["tokenizer.ggml.merges"].value as string[];
    expect([merges.length, merges[0], merges.at(-1)]).toEqual([50000, "Ġ t", "Ġg azed"]);
  });
});

describe("readGguf on hand-built files", () => {
  it("reads metadata and tensor infos of an independently encoded file", async () => {
    const { bytes, dataOffset } = sampleGguf();
    const path = await writeTemp(bytes);
    const file = await readGguf(path);
    expect(file).toMatchObject({ version: 3, alignment: 32, dataOffset, fileSize: bytes.length });
    expect(file.metadata).toEqual({
      "general.architecture": { type: "string", value: "sample" },
      "sample.count": { type: "uint32", value: 7 },
      "sample.ratio": { type: "float32", value: 0.5 },
      "sample.flag": { type: "bool", value: true },
      "sample.big": { type: "uint64", value: 2n ** 60n },
      "sample.words": { type: "array", itemType: "string", value: ["alpha", "beta", "γάμμα"] },
      "sample.ids": { type: "array", itemType: "int32", value: [1, -2, 3] },
    });
    expect(file.tensors).toEqual([
      { name: "a", shape: [4, 2], type: GgmlType.F32, typeName: "F32", offset: dataOffset, byteSize: 32 },
      { name: "b", shape: [32, 2], type: GgmlType.Q8_0, typeName: "Q8_0", offset: dataOffset + 32, byteSize: 68 },
      { name: "c", shape: [3], type: GgmlType.F16, typeName: "F16", offset: dataOffset + 128, byteSize: 6 },
    ]);
    expect(Array.from(await readTensorFloats(path, file.tensors[0]))).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(Array.from(await readTensorFloats(path, file.tensors[2]))).toEqual([1, -2, 0.5]);
    expect(Array.from(await readTensorBytes(path, file.tensors[1]))).toEqual(Array.from({ length: 68 }, (_, i) => i % 251));
    const truncated = await readGguf(path, { maxArrayLength: 1 });
    expect(truncated.metadata["sample.words"]).toEqual({ type: "array", itemType: "string", value: ["alpha"], truncatedFrom: 3 });
    expect(truncated.tensors).toEqual(file.tensors);
  });

  /** Bytes of the sample with `patch` applied, and what the reader must say about them. */
  const patched = (patch: (b: Buffer, s: ReturnType<typeof sampleGguf>) => void) => {
    const sample = sampleGguf();
    const b = Buffer.from(sample.bytes);
    patch(b, sample);
    return b;
  };
  const tensorsAt = (tensors: RawTensor[]) => sampleGguf({ tensors }).bytes;
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ["empty file", Buffer.alloc(0), /magic/],
    ["wrong magic", patched((b) => b.write("GGML", 0)), /magic "GGUF"/],
    ["version 1", patched((b) => b.writeUInt32LE(1, 4)), /version 1 is no longer supported/],
    ["version 4", patched((b) => b.writeUInt32LE(4, 4)), /Unsupported GGUF version 4/],
    ["big-endian", patched((b) => b.writeUInt32BE(3, 4)), /big-endian/],
    ["huge tensor count", patched((b) => b.writeBigUInt64LE(2n ** 62n, 8)), /tensor count is 4611686018427387904/],
    ["huge key count", patched((b) => b.writeBigUInt64LE(2n ** 64n - 1n, 16)), /metadata key count/],
    ["string past the end", patched((b, s) => b.writeBigUInt64LE(1000000n, s.countOffsets[2])), /more than the rest of the file/],
    ["huge array length", patched((b) => b.writeBigUInt64LE(2n ** 40n, b.indexOf("sample.words") + 20)), /length of array "sample.words" is 1099511627776/],
    ["unknown value type", patched((b, s) => b.writeInt32LE(13, s.typeOffsets[1])), /value type of "sample.count" is 13/],
    ["nested array", patched((b, s) => b.writeInt32LE(9, s.typeOffsets[6])), /nested arrays/],
    ["unknown tensor type", patched((b, s) => b.writeInt32LE(4, s.typeOffsets.at(-1)!)), /unknown ggml type 4/],
    ["truncated", sampleGguf().bytes.subarray(0, 200), /needs \d+ bytes but only|more than the rest of the file/],
    ["duplicate key", sampleGguf({ extraKvCount: 1, extraKv: (g) => g.str("sample.count").type(4).u32(8) }).bytes, /Duplicate metadata key "sample.count"/],
    ["duplicate tensor", tensorsAt([{ name: "a", shape: [8], type: 0, offset: 0 }, { name: "a", shape: [8], type: 0, offset: 32 }]), /Duplicate tensor name "a"/],
    ["a 64-byte tensor name", tensorsAt([{ name: "n".repeat(64), shape: [8], type: 0, offset: 0 }]), /longer than 63 bytes/],
    ["empty key", sampleGguf({ extraKvCount: 1, extraKv: (g) => g.str("").type(4).u32(8) }).bytes, /entry 7 has an empty key/],
    ["5 dimensions", tensorsAt([{ name: "a", shape: [1, 1, 1, 1, 1], type: 0, offset: 0 }]), /5 dimensions/],
    ["zero dimension", tensorsAt([{ name: "a", shape: [4, 0], type: 0, offset: 0 }]), /dimension 1 of size 0/],
    ["negative dimension", tensorsAt([{ name: "a", shape: [-4], type: 0, offset: 0 }]), /dimension 0 of size -4/],
    ["element overflow", tensorsAt([{ name: "a", shape: [2 ** 30, 2 ** 30, 2 ** 30], type: 0, offset: 0 }]), /too many elements/],
    ["partial block", tensorsAt([{ name: "a", shape: [16], type: 8, offset: 0 }]), /not a multiple of the block size 32/],
    ["unaligned offset", tensorsAt([{ name: "a", shape: [4], type: 0, offset: 4 }]), /not a multiple of the alignment 32/],
    ["tensor past the end", tensorsAt([{ name: "a", shape: [4096], type: 0, offset: 0 }]), /past the end/],
    ["offset past the end", tensorsAt([{ name: "a", shape: [4], type: 0, offset: 2 ** 40 }]), /past the end/],
    ["overlapping tensors", tensorsAt([{ name: "a", shape: [16], type: 0, offset: 0 }, { name: "b", shape: [8], type: 0, offset: 32 }]), /"a" and "b" overlap/],
    ["bad alignment type", sampleGguf({ extraKvCount: 1, extraKv: (g) => g.str("general.alignment").type(5).u32(32) }).bytes, /must be a uint32/],
    ["alignment not a power of 2", sampleGguf({ extraKvCount: 1, extraKv: (g) => g.str("general.alignment").type(4).u32(48) }).bytes, /48, not a power of two/],
  ];
  it.each(cases)("rejects %s with a GgufError naming the problem", async (_, bytes, message) => {
    const e = await rejection(readGguf(await writeTemp(bytes)));
    expect(e.message).toMatch(message);
    if (bytes.length > 4) expect(e.offset).toBeTypeOf("number");
  });

  it("reports a missing file as ERR_FILE_NOT_FOUND", async () => {
    await expect(readGguf(join(dir, "nope.gguf"))).rejects.toMatchObject({ code: "ERR_FILE_NOT_FOUND" });
  });

  it("survives 1000 seeded mutations: each resolves or rejects with a GgufError, quickly", async () => {
    const sample = sampleGguf();
    let state = 12345;
    const rand = (n: number) => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return Math.floor((state / 2 ** 32) * n);
    };
    const huge = [2n ** 64n - 1n, 2n ** 63n, 2n ** 32n + 1n, 2n ** 40n, 1000n, 2n ** 53n];
    const outcomes = { ok: 0, rejected: 0 };
    const started = performance.now();
    for (let i = 0; i < 1000; i++) {
      let bytes = Buffer.from(sample.bytes);
      const kind = i % 4;
      if (kind === 0) bytes = bytes.subarray(0, rand(bytes.length));
      if (kind === 1) for (let k = 0; k <= rand(4); k++) bytes[rand(bytes.length)] ^= 1 + rand(255);
      if (kind === 2) bytes.writeBigUInt64LE(huge[rand(huge.length)], sample.countOffsets[rand(sample.countOffsets.length)]);
      if (kind === 3) bytes.writeInt32LE([-1, 9, 13, 31, 43, 2 ** 31 - 1][rand(6)], sample.typeOffsets[rand(sample.typeOffsets.length)]);
      const path = await writeTemp(bytes);
      const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`mutation ${i} hung`)), 2000).unref());
      const result = await Promise.race([readGguf(path), timeout]).then(
        () => "ok" as const,
        (e: unknown) => e,
      );
      if (result === "ok") outcomes.ok++;
      else if (result instanceof GgufError) outcomes.rejected++;
      else throw new Error(`mutation ${i} (kind ${kind}) threw ${String(result)}`);
      await rm(path);
    }
    expect(outcomes.ok + outcomes.rejected).toBe(1000);
    expect(outcomes.rejected).toBeGreaterThan(500);
    expect(performance.now() - started).toBeLessThan(20000);
  });
});

describe("writeGguf", () => {
  const metadata: GgufMetadata = {
    "general.architecture": ggufValue.string("round-trip"),
    "t.u8": ggufValue.uint8(255),
    "t.i8": ggufValue.int8(-128),
    "t.u16": ggufValue.uint16(65535),
    "t.i16": ggufValue.int16(-32768),
    "t.u32": ggufValue.uint32(4294967295),
    "t.i32": ggufValue.int32(-2147483648),
    "t.f32": ggufValue.float32(Math.fround(0.1)),
    "t.f64": ggufValue.float64(0.1),
    "t.bool": ggufValue.bool(false),
    "t.str": ggufValue.string("ünïcødé ✓ \u0000 end"),
    "t.u64.small": ggufValue.uint64(2 ** 53 - 1),
    "t.u64.big": ggufValue.uint64(2n ** 64n - 1n),
    "t.i64.big": ggufValue.int64(-(2n ** 63n)),
    "t.arr.empty": ggufValue.array("float32", []),
    "t.arr.str": ggufValue.array("string", ["", "a", "日本"]),
    "t.arr.bool": ggufValue.array("bool", [true, false]),
    "t.arr.i64": ggufValue.array("int64", [-1, 2n ** 62n]),
  };

  it("round-trips metadata and tensor bytes exactly, with streamed data", async () => {
    const path = join(dir, "rt.gguf");
    const f32 = Float32Array.from({ length: 96 }, (_, i) => Math.fround(Math.sin(i) * 100));
    const q8 = Uint8Array.from({ length: 3 * 34 }, (_, i) => (i * 7) % 256);
    async function* asyncChunks() {
      yield new Float32Array([1, 2]);
      yield new Uint8Array([0x00, 0x3c]); // raw F16 bytes of 1.0
    }
    await writeGguf(path, {
      metadata,
      tensors: [
        { name: "w.f32", shape: [32, 3], type: GgmlType.F32, data: () => [f32.subarray(0, 10), f32.subarray(10)] },
        { name: "w.q8", shape: [96], type: GgmlType.Q8_0, data: q8 },
        { name: "w.f16", shape: [3], type: GgmlType.F16, data: asyncChunks() },
        { name: "w.bf16", shape: [2, 1, 1, 1], type: GgmlType.BF16, data: [new Float32Array([1.5, -2])] },
        { name: "w.i32", shape: [5], type: GgmlType.I32, data: new Uint8Array(new Int32Array([1, 2, 3, 4, 5]).buffer) },
      ],
    });
    const file = await readGguf(path);
    expect(file.metadata).toEqual(metadata);
    expect(file.version).toBe(3);
    expect(file.alignment).toBe(32);
    expect(file.tensors.map((t) => [t.name, t.typeName, t.byteSize, (t.offset - file.dataOffset) % 32])).toEqual([
      ["w.f32", "F32", 384, 0],
      ["w.q8", "Q8_0", 102, 0],
      ["w.f16", "F16", 6, 0],
      ["w.bf16", "BF16", 4, 0],
      ["w.i32", "I32", 20, 0],
    ]);
    expect(file.dataOffset % 32).toBe(0);
    expect(file.fileSize % 32).toBe(0);
    const [tf32, tq8, tf16, tbf16, ti32] = file.tensors;
    expect(await readTensorFloats(path, tf32)).toEqual(f32);
    expect(await readTensorBytes(path, tq8)).toEqual(q8);
    expect(Array.from(await readTensorFloats(path, tf16))).toEqual([1, 2, 1]);
    expect(Array.from(await readTensorBytes(path, tbf16))).toEqual([0xc0, 0x3f, 0x00, 0xc0]);
    expect(Array.from(new Int32Array((await readTensorBytes(path, ti32)).slice().buffer))).toEqual([1, 2, 3, 4, 5]);
    expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("rewrites a vocabulary file byte for byte", async () => {
    const original = join(MODELS, "ggml-vocab-gpt-2.gguf");
    const copy = join(dir, "vocab-copy.gguf");
    await writeGguf(copy, { metadata: (await readGguf(original)).metadata });
    expect((await readFile(copy)).equals(await readFile(original))).toBe(true);
  });

  it("writes general.alignment for a non-default alignment and aligns every tensor to it", async () => {
    const path = join(dir, "aligned.gguf");
    const tensors = [3, 5, 70].map((n, i) => ({ name: `t${i}`, shape: [n], type: GgmlType.F32, data: new Float32Array(n).fill(i) }));
    await writeGguf(path, { metadata: { "general.name": ggufValue.string("x") }, tensors, alignment: 256 });
    const file = await readGguf(path);
    expect(file.alignment).toBe(256);
    expect(file.metadata["general.alignment"]).toEqual({ type: "uint32", value: 256 });
    for (const t of file.tensors) expect(t.offset % 256).toBe(0);
    expect(file.tensors.map((t) => t.offset - file.dataOffset)).toEqual([0, 256, 512]);
    expect(file.fileSize).toBe(file.dataOffset + 1024);
  });

  const invalid: Array<[string, Parameters<typeof writeGguf>[1], RegExp]> = [
    ["uint8 out of range", { metadata: { k: ggufValue.uint8(256) } }, /uint8 integer/],
    ["non-integer int32", { metadata: { k: ggufValue.int32(1.5) } }, /int32 integer/],
    ["bigint uint32", { metadata: { k: { type: "uint32", value: 1n as unknown as number } } }, /uint32 integer/],
    ["uint64 above 2^64", { metadata: { k: ggufValue.uint64(2n ** 64n) } }, /uint64 integer/],
    ["wrong item type", { metadata: { k: ggufValue.array("string", ["a", 1 as unknown as string]) } }, /item of "k" must be a string/],
    ["truncated array", { metadata: { k: { type: "array", itemType: "uint8", value: [1], truncatedFrom: 9 } } }, /truncated/],
    ["alignment 48", { metadata: {}, alignment: 48 }, /power of two/],
    ["conflicting alignment", { metadata: { "general.alignment": ggufValue.uint32(64) }, alignment: 32 }, /equal to general.alignment/],
    ["duplicate tensor", { metadata: {}, tensors: [0, 1].map(() => ({ name: "t", shape: [1], type: GgmlType.F32, data: new Float32Array(1) })) }, /Duplicate tensor name/],
    ["partial block", { metadata: {}, tensors: [{ name: "t", shape: [16], type: GgmlType.Q4_0, data: new Uint8Array(9) }] }, /multiple of the Q4_0 block size/],
    ["floats for Q8_0", { metadata: {}, tensors: [{ name: "t", shape: [32], type: GgmlType.Q8_0, data: new Float32Array(32) }] }, /raw bytes/],
    ["short data", { metadata: {}, tensors: [{ name: "t", shape: [4], type: GgmlType.F32, data: new Float32Array(3) }] }, /needs 16 bytes of data but got only 12/],
    ["long data", { metadata: {}, tensors: [{ name: "t", shape: [4], type: GgmlType.F32, data: [new Float32Array(4), new Uint8Array(1)] }] }, /got more/],
  ];
  it.each(invalid)("rejects %s with ERR_INVALID_ARGUMENT and leaves no file behind", async (_, input, message) => {
    const path = join(dir, "invalid.gguf");
    const e = await writeGguf(path, input).then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(LlamaError);
    expect((e as LlamaError).code).toBe("ERR_INVALID_ARGUMENT");
    expect((e as LlamaError).message).toMatch(message);
    expect((await readdir(dir)).filter((f) => f.startsWith("invalid.gguf"))).toEqual([]);
  });
});

describe("tensor sizes and 16-bit floats", () => {
  it("computes byte sizes from block sizes", () => {
    expect(tensorByteSize(GgmlType.F32, [768, 50257])).toBe(768 * 50257 * 4);
    expect(tensorByteSize(GgmlType.Q4_0, [64, 3])).toBe(2 * 3 * 18);
    expect(tensorByteSize(GgmlType.Q4_K, [512, 2])).toBe(2 * 2 * 144);
    expect(tensorByteSize(GgmlType.MXFP4, [32])).toBe(17);
    expect(() => tensorByteSize(GgmlType.Q6_K, [128])).toThrow(/block size 256/);
  });

  it("converts every finite F16 value to float32 and back exactly", () => {
    const mismatches: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      if ((bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0) continue; // NaN payloads
      if (f32ToF16Bits(f16BitsToF32(bits)) !== bits) mismatches.push(bits);
    }
    expect(mismatches).toEqual([]);
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
  });

  it("rounds float32 to the nearest F16 and BF16, ties to even", () => {
    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // halfway to 2^16 rounds to even: Infinity
    expect(f32ToF16Bits(2 ** -25)).toBe(0); // halfway to the smallest subnormal
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie, 1.0 is even
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    // Property check on random float32 values: the result is a nearest representable value.
    const nearest = (x: number, bits: number, decode: (b: number) => number) =>
      Math.abs(decode(bits) - x) <= Math.min(Math.abs(decode(bits + 1) - x), Math.abs(decode(bits - 1) - x));
    let seed = 7;
    const f32 = new Float32Array(1);
    const u32 = new Uint32Array(f32.buffer);
    const failures: number[] = [];
    for (let i = 0; i < 20000; i++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      u32[0] = (seed & 0x807fffff) | ((103 + (seed % 39)) << 23); // from F16 subnormals up to 2^15
      const x = f32[0];
      if (!nearest(x, f32ToF16Bits(x), f16BitsToF32) || !nearest(x, f32ToBf16Bits(x), bf16BitsToF32)) failures.push(x);
    }
    expect(failures).toEqual([]);
  });
});
