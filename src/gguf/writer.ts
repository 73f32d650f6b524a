/**
 * GGUF v3 writer. Metadata is given with explicit GGUF types; tensor data can be streamed
 * chunk by chunk, so a large model never has to be held in memory. The file is written to a
 * temporary name next to `path` and renamed into place once complete.
 */

import { randomBytes } from "node:crypto";
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { LlamaError, invalidArgument } from "../errors.js";
import { encodeHalfFloats, littleEndianBytes } from "./float16.js";
import {
  GGUF_ALIGNMENT_KEY,
  GGUF_ARRAY_TYPE_ID,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAX_TENSOR_NAME_BYTES,
  GGUF_SCALAR_SIZES,
  GGUF_SCALAR_TYPE_IDS,
  GGML_MAX_DIMS,
  GgmlType,
  alignUp,
  tensorByteSize,
  type GgufArrayValue,
  type GgufMetadata,
  type GgufScalarJsTypes,
  type GgufScalarType,
  type GgufScalarValue,
  type GgufValue,
} from "./types.js";

/** A piece of tensor data: float32 values (for F32, F16 and BF16 tensors) or raw bytes. */
export type TensorChunk = Float32Array | Uint8Array;
/** Tensor data produced piece by piece. */
export type TensorChunks = Iterable<TensorChunk> | AsyncIterable<TensorChunk>;
/**
 * Tensor data: one chunk holding all of it, an (async) iterable of chunks, or a function
 * returning one (called once, when the tensor is written). Float32 values are converted to
 * the tensor type (F16/BF16 round to nearest even); raw bytes are written as they are. The
 * chunks together must make exactly the tensor's byte size.
 */
export type TensorData = TensorChunk | TensorChunks | (() => TensorChunks);

/** One tensor for {@link writeGguf}: its name, shape, type and data. */
export interface GgufTensorInput {
  name: string;
  /** Dimensions in ggml order: ne0 (the contiguous row length) first. */
  shape: readonly number[];
  type: GgmlType;
  data: TensorData;
}

/** What {@link writeGguf} writes: metadata, tensors and the data alignment. */
export interface WriteGgufInput {
  metadata: GgufMetadata;
  tensors?: readonly GgufTensorInput[];
  /** Data alignment; written as general.alignment when not the default 32. */
  alignment?: number;
}

type ScalarMakers = { [K in GgufScalarType]: (value: GgufScalarJsTypes[K]) => Extract<GgufScalarValue, { type: K }> };

function scalarMaker<K extends GgufScalarType>(type: K) {
  return (value: GgufScalarJsTypes[K]) => ({ type, value }) as Extract<GgufScalarValue, { type: K }>;
}

/**
 * Builds typed metadata values from plain ones: `ggufValue.uint32(5)`,
 * `ggufValue.string("gpt2")`, `ggufValue.array("string", tokens)`.
 */
export const ggufValue = {
  ...(Object.fromEntries(
    Object.keys(GGUF_SCALAR_TYPE_IDS).map((type) => [type, scalarMaker(type as GgufScalarType)]),
  ) as ScalarMakers),
  array<K extends GgufScalarType>(itemType: K, value: GgufScalarJsTypes[K][]): GgufArrayValue {
    return { type: "array", itemType, value } as GgufArrayValue;
  },
};

/** Integer range of each integer type, as bigints so 64-bit bounds are exact. */
const INTEGER_RANGES: Partial<Record<GgufScalarType, readonly [bigint, bigint]>> = {
  uint8: [0n, 0xffn],
  int8: [-0x80n, 0x7fn],
  uint16: [0n, 0xffffn],
  int16: [-0x8000n, 0x7fffn],
  uint32: [0n, 0xffffffffn],
  int32: [-0x80000000n, 0x7fffffffn],
  uint64: [0n, 0xffffffffffffffffn],
  int64: [-0x8000000000000000n, 0x7fffffffffffffffn],
};

/** A growable little-endian byte buffer for the header. */
class ByteBuilder {
  private buffer = Buffer.alloc(64 * 1024);
  length = 0;

  /** Makes room for `n` more bytes and returns the buffer with the offset to write them at. */
  private reserve(n: number): [Buffer, number] {
    if (this.length + n > this.buffer.length) {
      const bigger = Buffer.alloc(Math.max(2 * this.buffer.length, this.length + n));
      this.buffer.copy(bigger, 0, 0, this.length);
      this.buffer = bigger;
    }
    const at = this.length;
    this.length += n;
    return [this.buffer, at];
  }

  u32(v: number): void {
    const [b, at] = this.reserve(4);
    b.writeUInt32LE(v, at);
  }

  i32(v: number): void {
    const [b, at] = this.reserve(4);
    b.writeInt32LE(v, at);
  }

  u64(v: number | bigint): void {
    const [b, at] = this.reserve(8);
    b.writeBigUInt64LE(BigInt(v), at);
  }

  i64(v: number | bigint): void {
    const [b, at] = this.reserve(8);
    b.writeBigInt64LE(BigInt(v), at);
  }

  string(s: string): void {
    const n = Buffer.byteLength(s);
    this.u64(n);
    const [b, at] = this.reserve(n);
    b.write(s, at, n, "utf8");
  }

  scalar(type: GgufScalarType, v: GgufScalarJsTypes[GgufScalarType]): void {
    if (type === "string") return this.string(v as string);
    if (type === "uint64") return this.u64(v as number | bigint);
    if (type === "int64") return this.i64(v as number | bigint);
    const [b, at] = this.reserve(GGUF_SCALAR_SIZES[type]);
    const n = v as number;
    switch (type) {
      case "bool":
        b[at] = v ? 1 : 0;
        break;
      case "uint8":
        b.writeUInt8(n, at);
        break;
      case "int8":
        b.writeInt8(n, at);
        break;
      case "uint16":
        b.writeUInt16LE(n, at);
        break;
      case "int16":
        b.writeInt16LE(n, at);
        break;
      case "uint32":
        b.writeUInt32LE(n, at);
        break;
      case "int32":
        b.writeInt32LE(n, at);
        break;
      case "float32":
        b.writeFloatLE(n, at);
        break;
      case "float64":
        b.writeDoubleLE(n, at);
        break;
    }
  }

  bytes(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

/** Throws ERR_INVALID_ARGUMENT unless `v` is a valid value of scalar type `type`. */
function checkScalar(type: GgufScalarType, v: unknown, what: string): void {
  if (type === "string") {
    if (typeof v !== "string") invalidArgument(what, "a string", v);
  } else if (type === "bool") {
    if (typeof v !== "boolean") invalidArgument(what, "a boolean", v);
  } else if (type === "float32" || type === "float64") {
    if (typeof v !== "number") invalidArgument(what, "a number", v);
  } else {
    const [min, max] = INTEGER_RANGES[type] ?? [0n, 0n];
    const isInteger = typeof v === "bigint" || (typeof v === "number" && Number.isSafeInteger(v));
    const wide = type === "uint64" || type === "int64";
    if (!isInteger || (typeof v === "bigint" && !wide) || BigInt(v) < min || BigInt(v) > max) {
      invalidArgument(what, `a ${type} integer in [${min}, ${max}]`, v);
    }
  }
}

function encodeValue(out: ByteBuilder, key: string, entry: GgufValue): void {
  if (entry === null || typeof entry !== "object") invalidArgument(`metadata "${key}"`, "a typed value", entry);
  if (entry.type === "array") {
    if (!(entry.itemType in GGUF_SCALAR_TYPE_IDS)) invalidArgument(`item type of "${key}"`, "a scalar type", entry.itemType);
    if (!Array.isArray(entry.value)) invalidArgument(`metadata "${key}"`, "an array", entry.value);
    if (entry.truncatedFrom !== undefined) {
      throw new LlamaError("ERR_INVALID_ARGUMENT", `metadata "${key}" was truncated when read (maxArrayLength)`);
    }
    out.i32(GGUF_ARRAY_TYPE_ID);
    out.i32(GGUF_SCALAR_TYPE_IDS[entry.itemType]);
    out.u64(entry.value.length);
    for (const item of entry.value) {
      checkScalar(entry.itemType, item, `item of "${key}"`);
      out.scalar(entry.itemType, item);
    }
    return;
  }
  if (!(entry.type in GGUF_SCALAR_TYPE_IDS)) invalidArgument(`type of "${key}"`, "a GGUF value type", entry.type);
  checkScalar(entry.type, entry.value, `metadata "${key}"`);
  out.i32(GGUF_SCALAR_TYPE_IDS[entry.type]);
  out.scalar(entry.type, entry.value);
}

/** The alignment to write, checked against general.alignment in the metadata. */
function resolveAlignment(input: WriteGgufInput): number {
  const entry = input.metadata[GGUF_ALIGNMENT_KEY];
  if (entry !== undefined && entry.type !== "uint32") {
    invalidArgument(GGUF_ALIGNMENT_KEY, "a uint32 value", entry.type);
  }
  const fromMetadata = entry?.value;
  const alignment = input.alignment ?? fromMetadata ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isSafeInteger(alignment) || alignment <= 0 || alignment > 0xffffffff || (alignment & (alignment - 1)) !== 0) {
    invalidArgument("alignment", "a power of two", alignment);
  }
  if (fromMetadata !== undefined && fromMetadata !== alignment) {
    invalidArgument("alignment", `equal to ${GGUF_ALIGNMENT_KEY} (${fromMetadata})`, alignment);
  }
  return alignment;
}

/** A tensor with its place in the data section. */
interface PlannedTensor extends GgufTensorInput {
  byteSize: number;
  offset: number;
}

function planTensors(tensors: readonly GgufTensorInput[], alignment: number): PlannedTensor[] {
  const names = new Set<string>();
  let offset = 0;
  return tensors.map((t) => {
    if (typeof t.name !== "string" || Buffer.byteLength(t.name) > GGUF_MAX_TENSOR_NAME_BYTES) {
      invalidArgument("tensor name", `a string of at most ${GGUF_MAX_TENSOR_NAME_BYTES} bytes`, t.name);
    }
    if (names.has(t.name)) throw new LlamaError("ERR_INVALID_ARGUMENT", `Duplicate tensor name "${t.name}"`);
    names.add(t.name);
    if (!Array.isArray(t.shape) || t.shape.length > GGML_MAX_DIMS) {
      invalidArgument(`shape of tensor "${t.name}"`, `an array of at most ${GGML_MAX_DIMS} dimensions`, t.shape);
    }
    let byteSize: number;
    try {
      byteSize = tensorByteSize(t.type, t.shape);
    } catch (e) {
      throw new LlamaError("ERR_INVALID_ARGUMENT", `Tensor "${t.name}": ${(e as Error).message}`);
    }
    const planned = { ...t, byteSize, offset };
    offset += alignUp(byteSize, alignment);
    return planned;
  });
}

function encodeHeader(metadata: GgufMetadata, tensors: PlannedTensor[], alignment: number): Buffer {
  const out = new ByteBuilder();
  const entries = Object.entries(metadata);
  const writeAlignmentKey = alignment !== GGUF_DEFAULT_ALIGNMENT && metadata[GGUF_ALIGNMENT_KEY] === undefined;
  out.u32(0x46554747); // "GGUF"
  out.u32(3);
  out.u64(tensors.length);
  out.u64(entries.length + (writeAlignmentKey ? 1 : 0));
  for (const [key, entry] of entries) {
    if (key.length === 0) invalidArgument("metadata key", "a non-empty string", key);
    out.string(key);
    encodeValue(out, key, entry);
  }
  if (writeAlignmentKey) {
    out.string(GGUF_ALIGNMENT_KEY);
    encodeValue(out, GGUF_ALIGNMENT_KEY, { type: "uint32", value: alignment });
  }
  for (const t of tensors) {
    out.string(t.name);
    out.u32(t.shape.length);
    for (const d of t.shape) out.i64(d);
    out.i32(t.type);
    out.u64(t.offset);
  }
  return out.bytes();
}

/** Collects small writes into large ones. */
class BufferedFile {
  private readonly buffer = Buffer.alloc(4 * 1024 * 1024);
  private used = 0;
  written = 0;

  constructor(private readonly file: FileHandle) {}

  async write(bytes: Uint8Array): Promise<void> {
    if (this.used + bytes.length > this.buffer.length) await this.flush();
    if (bytes.length >= this.buffer.length) {
      await this.writeFully(bytes);
    } else {
      this.buffer.set(bytes, this.used);
      this.used += bytes.length;
    }
    this.written += bytes.length;
  }

  async padTo(alignment: number): Promise<void> {
    await this.write(new Uint8Array(alignUp(this.written, alignment) - this.written));
  }

  async flush(): Promise<void> {
    await this.writeFully(this.buffer.subarray(0, this.used));
    this.used = 0;
  }

  private async writeFully(bytes: Uint8Array): Promise<void> {
    for (let done = 0; done < bytes.length; ) {
      done += (await this.file.write(bytes, done, bytes.length - done)).bytesWritten;
    }
  }
}

/** The bytes a chunk stands for in a tensor of type `type`. */
function chunkBytes(chunk: unknown, tensor: PlannedTensor): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (!(chunk instanceof Float32Array)) {
    invalidArgument(`data of tensor "${tensor.name}"`, "made of Float32Array or Uint8Array chunks", chunk);
  }
  switch (tensor.type) {
    case GgmlType.F32:
      return littleEndianBytes(chunk);
    case GgmlType.F16:
      return encodeHalfFloats(chunk, "f16");
    case GgmlType.BF16:
      return encodeHalfFloats(chunk, "bf16");
    default:
      throw new LlamaError(
        "ERR_INVALID_ARGUMENT",
        `Tensor "${tensor.name}" is ${GgmlType[tensor.type]}: give its data as raw bytes, not a Float32Array`,
      );
  }
}

function chunksOf(data: TensorData): TensorChunks {
  if (typeof data === "function") return data();
  if (data instanceof Uint8Array || data instanceof Float32Array) return [data];
  if (data !== null && typeof data === "object" && (Symbol.iterator in data || Symbol.asyncIterator in data)) return data;
  return invalidArgument("tensor data", "a Float32Array, a Uint8Array, an iterable of them or a function", data);
}

/** Streams a tensor's chunks to the file, checking they add up to its byte size. */
async function writeTensorData(out: BufferedFile, tensor: PlannedTensor): Promise<void> {
  let written = 0;
  for await (const chunk of chunksOf(tensor.data)) {
    const bytes = chunkBytes(chunk, tensor);
    written += bytes.length;
    if (written > tensor.byteSize) break;
    await out.write(bytes);
  }
  if (written !== tensor.byteSize) {
    const got = written > tensor.byteSize ? "more" : `only ${written}`;
    throw new LlamaError("ERR_INVALID_ARGUMENT", `Tensor "${tensor.name}" needs ${tensor.byteSize} bytes of data but got ${got}`);
  }
}

/**
 * Writes a GGUF v3 file. Validates everything first (value types and ranges, tensor names,
 * shapes, alignment) and reports problems as LlamaError ERR_INVALID_ARGUMENT; the file at
 * `path` is only replaced once the new one is complete.
 */
export async function writeGguf(path: string, input: WriteGgufInput): Promise<void> {
  if (input === null || typeof input !== "object" || input.metadata === null || typeof input.metadata !== "object") {
    invalidArgument("input", "an object with a metadata record", input);
  }
  const alignment = resolveAlignment(input);
  const tensors = planTensors(input.tensors ?? [], alignment);
  const header = encodeHeader(input.metadata, tensors, alignment);
  const tempPath = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  const file = await open(tempPath, "w");
  try {
    const out = new BufferedFile(file);
    await out.write(header);
    // Like llama.cpp, the data section (and each tensor in it) is padded only when there are tensors.
    for (const tensor of tensors) {
      await out.padTo(alignment);
      await writeTensorData(out, tensor);
    }
    if (tensors.length > 0) await out.padTo(alignment);
    await out.flush();
    await file.close();
    await rename(tempPath, path);
  } catch (e) {
    await file.close().catch(() => undefined);
    await rm(tempPath, { force: true });
    throw e;
  }
}
