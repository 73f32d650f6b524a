/**
 * GGUF header reader. Only the header region is read, through a window over the file that
 * grows as needed, so inspecting a multi-GB model takes milliseconds. Every inconsistency in
 * the file is reported as a {@link GgufError} naming the byte offset; counts and lengths are
 * checked against the bytes left in the file before anything is allocated for them.
 */

import { open, type FileHandle } from "node:fs/promises";
import { GgufError, LlamaError } from "../errors.js";
import { HOST_IS_LITTLE_ENDIAN, decodeHalfFloats, swapBytes } from "./float16.js";
import {
  GGUF_ALIGNMENT_KEY,
  GGUF_ARRAY_TYPE_ID,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAX_TENSOR_NAME_BYTES,
  GGUF_SCALAR_SIZES,
  GGML_MAX_DIMS,
  GgmlType,
  alignUp,
  ggmlTypeInfo,
  scalarTypeFromId,
  type GgufArrayValue,
  type GgufFile,
  type GgufMetadata,
  type GgufScalarJsTypes,
  type GgufScalarType,
  type GgufTensorInfo,
  type GgufValue,
} from "./types.js";

/** Options of {@link readGguf}. */
export interface ReadGgufOptions {
  /**
   * Arrays with more items than this keep only their first `maxArrayLength` items (and get
   * `truncatedFrom`); the rest is skipped without being decoded. Default: no limit.
   */
  maxArrayLength?: number;
}

/** Longest string the reader accepts (a sanity bound well above any real metadata string). */
const MAX_STRING_BYTES = 256 * 1024 * 1024;
/** Most items an array may have to be decoded (use maxArrayLength to skip longer ones). */
const MAX_DECODED_ARRAY_ITEMS = 1 << 24;
/** Bytes read at first; each further read is twice as large, up to MAX_WINDOW_GROWTH_BYTES. */
const INITIAL_WINDOW_BYTES = 64 * 1024;
const MAX_WINDOW_GROWTH_BYTES = 16 * 1024 * 1024;
const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32

/** Fills `buffer` from the file at `position`; a short file is a GgufError. */
async function readExactly<T extends Uint8Array>(file: FileHandle, buffer: T, position: number): Promise<T> {
  let filled = 0;
  while (filled < buffer.length) {
    const { bytesRead } = await file.read(buffer, filled, buffer.length - filled, position + filled);
    if (bytesRead === 0) throw new GgufError("The file ended while it was being read", position + filled);
    filled += bytesRead;
  }
  return buffer;
}

/** Opens a file for reading, reporting a missing or unreadable file as a LlamaError. */
async function openForReading(path: string): Promise<FileHandle> {
  try {
    return await open(path, "r");
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === "ENOENT";
    throw new LlamaError(
      missing ? "ERR_FILE_NOT_FOUND" : "ERR_FILE_UNREADABLE",
      missing ? `No such file: ${path}` : `Cannot read ${path}: ${(e as Error).message}`,
      { cause: e },
    );
  }
}

/** Thrown (and caught by {@link Cursor.run}) when the window must grow to `end`. */
class NeedMore {
  constructor(readonly end: number) {}
}

/**
 * A read position over a window of the file. Reads past the window throw {@link NeedMore};
 * reads past the end of the file throw a GgufError.
 */
class Cursor {
  private window = Buffer.alloc(0);
  private windowStart = 0;
  /** Absolute file offset of the next byte to read. */
  pos = 0;
  /** Where {@link run} restarts the step when the window has to grow. */
  mark = 0;

  constructor(
    private readonly file: FileHandle,
    readonly fileSize: number,
  ) {}

  /** Runs a synchronous parsing step, growing the window and retrying from `mark` as needed. */
  async run<T>(step: () => T): Promise<T> {
    for (;;) {
      this.mark = this.pos;
      try {
        return step();
      } catch (e) {
        if (!(e instanceof NeedMore)) throw e;
        this.pos = this.mark;
        await this.load(e.end);
      }
    }
  }

  /**
   * Reads a window starting at `pos` that reaches at least `end` (which is within the file).
   * Windows grow geometrically up to MAX_WINDOW_GROWTH_BYTES, so a header takes few reads.
   */
  private async load(end: number): Promise<void> {
    const grown = Math.min(2 * this.window.length, MAX_WINDOW_GROWTH_BYTES);
    const length = Math.min(Math.max(end - this.pos, grown, INITIAL_WINDOW_BYTES), this.fileSize - this.pos);
    this.window = await readExactly(this.file, Buffer.allocUnsafe(length), this.pos);
    this.windowStart = this.pos;
  }

  /** Bytes between the read position and the end of the file. */
  get remaining(): number {
    return this.fileSize - this.pos;
  }

  /** Checks that `n` bytes of `what` are in the file, and returns their index in the window. */
  private take(n: number, what: string): number {
    const end = this.pos + n;
    if (end > this.fileSize) {
      throw new GgufError(`${what} needs ${n} bytes but only ${this.remaining} are left in the file`, this.pos);
    }
    if (this.pos < this.windowStart || end > this.windowStart + this.window.length) throw new NeedMore(end);
    const index = this.pos - this.windowStart;
    this.pos = end;
    return index;
  }

  skip(n: number, what: string): void {
    if (n > this.remaining) {
      throw new GgufError(`${what} needs ${n} bytes but only ${this.remaining} are left in the file`, this.pos);
    }
    this.pos += n;
  }

  u32(what: string): number {
    return this.window.readUInt32LE(this.take(4, what));
  }

  i32(what: string): number {
    return this.window.readInt32LE(this.take(4, what));
  }

  u64(what: string): bigint {
    return this.window.readBigUInt64LE(this.take(8, what));
  }

  i64(what: string): bigint {
    return this.window.readBigInt64LE(this.take(8, what));
  }

  /** A length or count stored as uint64, which must not exceed `limit`. */
  count(what: string, limit: number): number {
    const i = this.take(8, what);
    const high = this.window.readUInt32LE(i + 4);
    // Below 2^53 the number is exact; above, only the comparison with `limit` matters.
    const n = high < 0x200000 ? high * 0x100000000 + this.window.readUInt32LE(i) : Infinity;
    if (n > limit) {
      const shown = this.window.readBigUInt64LE(i);
      throw new GgufError(`${what} is ${shown}, more than the rest of the file can hold (at most ${Math.max(limit, 0)})`, this.pos - 8);
    }
    return n;
  }

  /** A length-prefixed UTF-8 string. */
  string(what: string): string {
    const length = this.count(`length of ${what}`, Math.min(this.remaining - 8, MAX_STRING_BYTES));
    const start = this.take(length, what);
    return this.window.toString("utf8", start, start + length);
  }

  /** One scalar of the given type. */
  scalar<K extends GgufScalarType>(type: K, what: string): GgufScalarJsTypes[K];
  scalar(type: GgufScalarType, what: string): GgufScalarJsTypes[GgufScalarType] {
    if (type === "string") return this.string(what);
    const w = this.window;
    const i = this.take(GGUF_SCALAR_SIZES[type], what);
    switch (type) {
      case "uint8":
        return w[i];
      case "int8":
        return w.readInt8(i);
      case "bool":
        return w[i] !== 0;
      case "uint16":
        return w.readUInt16LE(i);
      case "int16":
        return w.readInt16LE(i);
      case "uint32":
        return w.readUInt32LE(i);
      case "int32":
        return w.readInt32LE(i);
      case "float32":
        return w.readFloatLE(i);
      case "float64":
        return w.readDoubleLE(i);
      case "uint64":
        return toSafeNumber(w.readBigUInt64LE(i));
      case "int64":
        return toSafeNumber(w.readBigInt64LE(i));
    }
  }
}

/** A bigint as a number when that is exact, else unchanged. */
function toSafeNumber(n: bigint): number | bigint {
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

/** The scalar type that value type `id` (read at `at`) names. */
function toScalarType(id: number, what: string, at: number): GgufScalarType {
  const type = scalarTypeFromId(id);
  if (type === undefined) {
    const why = id === GGUF_ARRAY_TYPE_ID ? "nested arrays are not supported" : "unknown value type";
    throw new GgufError(`${what} is ${id}: ${why}`, at);
  }
  return type;
}

interface Header {
  version: number;
  tensorCount: number;
  kvCount: number;
}

function readHeader(cur: Cursor): Header {
  if (cur.fileSize < 4 || cur.u32("magic") !== GGUF_MAGIC) {
    throw new GgufError('Not a GGUF file: it does not start with the magic "GGUF"', 0);
  }
  const version = cur.u32("version");
  if (version === 1) {
    throw new GgufError("GGUF version 1 is no longer supported; convert the model again with a recent llama.cpp", 4);
  }
  if (version !== 2 && version !== 3) {
    const hint = (version & 0xffff) === 0 ? " (is it a big-endian file?)" : "";
    throw new GgufError(`Unsupported GGUF version ${version}${hint}; versions 2 and 3 are supported`, 4);
  }
  // Each tensor info takes at least 24 bytes, each key-value pair at least 14.
  const tensorCount = cur.count("tensor count", Math.floor((cur.remaining - 8) / 24));
  const kvCount = cur.count("metadata key count", Math.floor((cur.remaining - 8) / 14));
  return { version, tensorCount, kvCount };
}

/** A metadata key and the shape of its value, read before the value itself. */
type EntryHead =
  | { key: string; keyOffset: number; type: GgufScalarType }
  | { key: string; keyOffset: number; type: "array"; itemType: GgufScalarType; length: number };

function readEntryHead(cur: Cursor, index: number): EntryHead {
  const keyOffset = cur.pos;
  const key = cur.string(`key of metadata entry ${index}`);
  if (key.length === 0) throw new GgufError(`Metadata entry ${index} has an empty key`, keyOffset);
  const typeAt = cur.pos;
  const typeId = cur.i32(`value type of "${key}"`);
  if (typeId !== GGUF_ARRAY_TYPE_ID) return { key, keyOffset, type: toScalarType(typeId, `value type of "${key}"`, typeAt) };
  const itemTypeAt = cur.pos;
  const itemType = toScalarType(cur.i32(`item type of "${key}"`), `item type of array "${key}"`, itemTypeAt);
  const minItemBytes = itemType === "string" ? 8 : GGUF_SCALAR_SIZES[itemType];
  const length = cur.count(`length of array "${key}"`, Math.floor(cur.remaining / minItemBytes));
  return { key, keyOffset, type: "array", itemType, length };
}

/** Reads an array's items, one window-sized run at a time; items past `keep` are skipped. */
async function readArrayItems(cur: Cursor, head: EntryHead & { type: "array" }, keep: number): Promise<unknown[]> {
  const { key, itemType, length } = head;
  const decoded = Math.min(length, keep);
  if (decoded > MAX_DECODED_ARRAY_ITEMS) {
    throw new GgufError(
      `Array "${key}" has ${length} items, more than the ${MAX_DECODED_ARRAY_ITEMS} the reader decodes (set maxArrayLength)`,
      cur.pos,
    );
  }
  const items: unknown[] = [];
  const what = `item of array "${key}"`;
  await cur.run(() => {
    for (; items.length < decoded; cur.mark = cur.pos) items.push(cur.scalar(itemType, what));
  });
  if (itemType !== "string") {
    cur.skip((length - decoded) * GGUF_SCALAR_SIZES[itemType], `rest of array "${key}"`);
    return items;
  }
  let skipped = decoded;
  await cur.run(() => {
    for (; skipped < length; skipped++, cur.mark = cur.pos) {
      cur.skip(cur.count(`length of ${what}`, cur.remaining - 8), what);
    }
  });
  return items;
}

/** Metadata, and the file offset of each key. */
interface MetadataRead {
  metadata: GgufMetadata;
  keyOffsets: Map<string, number>;
}

async function readMetadata(cur: Cursor, count: number, keep: number): Promise<MetadataRead> {
  // No prototype: keys come from the file, and must not collide with Object.prototype's.
  const metadata: GgufMetadata = Object.create(null);
  const keyOffsets = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const head = await cur.run(() => readEntryHead(cur, i));
    if (keyOffsets.has(head.key)) throw new GgufError(`Duplicate metadata key "${head.key}"`, head.keyOffset);
    keyOffsets.set(head.key, head.keyOffset);
    let value: GgufValue;
    if (head.type === "array") {
      const items = await readArrayItems(cur, head, keep);
      value = { type: "array", itemType: head.itemType, value: items } as GgufArrayValue;
      if (items.length < head.length) value.truncatedFrom = head.length;
    } else {
      const type = head.type;
      value = { type, value: await cur.run(() => cur.scalar(type, `value of "${head.key}"`)) } as GgufValue;
    }
    metadata[head.key] = value;
  }
  return { metadata, keyOffsets };
}

/** The data alignment the metadata asks for (general.alignment, a power of two). */
function alignmentOf({ metadata, keyOffsets }: MetadataRead): number {
  if (!keyOffsets.has(GGUF_ALIGNMENT_KEY)) return GGUF_DEFAULT_ALIGNMENT;
  const entry = metadata[GGUF_ALIGNMENT_KEY];
  const at = keyOffsets.get(GGUF_ALIGNMENT_KEY);
  if (entry.type !== "uint32") {
    throw new GgufError(`"${GGUF_ALIGNMENT_KEY}" must be a uint32 but is a ${entry.type}`, at);
  }
  const a = entry.value;
  if (a === 0 || (a & (a - 1)) !== 0) throw new GgufError(`"${GGUF_ALIGNMENT_KEY}" is ${a}, not a power of two`, at);
  return a;
}

/** A tensor info as stored: its offset is still relative to the data section. */
type RawTensorInfo = GgufTensorInfo & { at: number };

function readTensorInfo(cur: Cursor, index: number, names: Set<string>): RawTensorInfo {
  const at = cur.pos;
  const name = cur.string(`name of tensor ${index}`);
  if (Buffer.byteLength(name) > GGUF_MAX_TENSOR_NAME_BYTES) {
    throw new GgufError(`Tensor name "${name}" is longer than ${GGUF_MAX_TENSOR_NAME_BYTES} bytes`, at);
  }
  if (names.has(name)) throw new GgufError(`Duplicate tensor name "${name}"`, at);
  const dimsAt = cur.pos;
  const nDims = cur.u32(`dimension count of tensor "${name}"`);
  if (nDims > GGML_MAX_DIMS) {
    throw new GgufError(`Tensor "${name}" has ${nDims} dimensions; at most ${GGML_MAX_DIMS} are allowed`, dimsAt);
  }
  const shape: number[] = [];
  let elements = 1;
  for (let d = 0; d < nDims; d++) {
    const dimAt = cur.pos;
    const dim = cur.i64(`dimension ${d} of tensor "${name}"`);
    if (dim <= 0n) throw new GgufError(`Tensor "${name}" has dimension ${d} of size ${dim}; it must be positive`, dimAt);
    elements *= Number(dim);
    if (!Number.isSafeInteger(elements)) {
      throw new GgufError(`Tensor "${name}" has too many elements (more than 2^53)`, dimAt);
    }
    shape.push(Number(dim));
  }
  const typeAt = cur.pos;
  const type = cur.i32(`type of tensor "${name}"`);
  const info = ggmlTypeInfo(type);
  if (info === undefined) throw new GgufError(`Tensor "${name}" has unknown ggml type ${type}`, typeAt);
  const rowLength = shape[0] ?? 1;
  if (rowLength % info.blockSize !== 0) {
    throw new GgufError(
      `Tensor "${name}" of type ${info.name} has rows of ${rowLength} elements, not a multiple of the block size ${info.blockSize}`,
      typeAt,
    );
  }
  const offsetAt = cur.pos;
  const offset = cur.u64(`data offset of tensor "${name}"`);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new GgufError(`Tensor "${name}" has data offset ${offset}, past any possible file end`, offsetAt);
  }
  names.add(name);
  const byteSize = (elements / info.blockSize) * info.typeSize;
  return { name, shape, type: type as GgmlType, typeName: info.name, offset: Number(offset), byteSize, at: offsetAt };
}

async function readTensorInfos(cur: Cursor, count: number): Promise<RawTensorInfo[]> {
  const tensors: RawTensorInfo[] = [];
  const names = new Set<string>();
  await cur.run(() => {
    for (; tensors.length < count; cur.mark = cur.pos) tensors.push(readTensorInfo(cur, tensors.length, names));
  });
  return tensors;
}

/** Makes tensor offsets absolute and checks they are aligned, inside the file and disjoint. */
function placeTensors(raw: RawTensorInfo[], dataOffset: number, alignment: number, fileSize: number): GgufTensorInfo[] {
  const tensors = raw.map(({ at, ...t }) => {
    if (t.offset % alignment !== 0) {
      throw new GgufError(`Tensor "${t.name}" has data offset ${t.offset}, not a multiple of the alignment ${alignment}`, at);
    }
    const end = dataOffset + t.offset + t.byteSize;
    if (end > fileSize) {
      throw new GgufError(
        `Tensor "${t.name}" (${t.byteSize} bytes at data offset ${t.offset}) ends at byte ${end}, past the end of the ${fileSize}-byte file`,
        at,
      );
    }
    return { ...t, offset: dataOffset + t.offset };
  });
  const byOffset = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const [prev, next] = [byOffset[i - 1], byOffset[i]];
    if (prev.offset + prev.byteSize > next.offset) {
      throw new GgufError(`Tensors "${prev.name}" and "${next.name}" overlap`, next.offset);
    }
  }
  return tensors;
}

/**
 * Reads the header of a GGUF file (v2 or v3): metadata with types, tensor infos with absolute
 * offsets and byte sizes. Rejects with a GgufError for any malformed or inconsistent header.
 */
export async function readGguf(path: string, opts: ReadGgufOptions = {}): Promise<GgufFile> {
  const keep = opts.maxArrayLength ?? Infinity;
  const file = await openForReading(path);
  try {
    const cur = new Cursor(file, (await file.stat()).size);
    const { version, tensorCount, kvCount } = await cur.run(() => readHeader(cur));
    const read = await readMetadata(cur, kvCount, keep);
    const metadata = read.metadata;
    const alignment = alignmentOf(read);
    const raw = await readTensorInfos(cur, tensorCount);
    const dataOffset = tensorCount > 0 ? alignUp(cur.pos, alignment) : cur.pos;
    if (dataOffset > cur.fileSize) {
      throw new GgufError(`The tensor data section would start past the end of the file`, cur.pos);
    }
    const tensors = placeTensors(raw, dataOffset, alignment, cur.fileSize);
    return { version, alignment, metadata, tensors, dataOffset, fileSize: cur.fileSize };
  } finally {
    await file.close();
  }
}

/** The metadata as plain values (`{ "gpt2.block_count": 12, ... }`), dropping the types. */
export function metadataValues(file: Pick<GgufFile, "metadata">): Record<string, unknown> {
  return Object.fromEntries(Object.entries(file.metadata).map(([key, entry]) => [key, entry.value]));
}

/** The raw bytes of a tensor's data (`tensor` as {@link readGguf} returned it for this file). */
export async function readTensorBytes(path: string, tensor: GgufTensorInfo): Promise<Uint8Array> {
  return readRange(path, new Uint8Array(tensor.byteSize), tensor.offset);
}

async function readRange<T extends Uint8Array>(path: string, buffer: T, position: number): Promise<T> {
  const file = await openForReading(path);
  try {
    return await readExactly(file, buffer, position);
  } finally {
    await file.close();
  }
}

/** A tensor's data as float32 values; for F32, F16 and BF16 tensors only. */
export async function readTensorFloats(path: string, tensor: GgufTensorInfo): Promise<Float32Array> {
  switch (tensor.type) {
    case GgmlType.F32: {
      const values = new Float32Array(tensor.byteSize / 4);
      const bytes = await readRange(path, new Uint8Array(values.buffer), tensor.offset);
      return HOST_IS_LITTLE_ENDIAN ? values : new Float32Array(swapBytes(bytes, 4).buffer);
    }
    case GgmlType.F16:
      return decodeHalfFloats(await readTensorBytes(path, tensor), "f16");
    case GgmlType.BF16:
      return decodeHalfFloats(await readTensorBytes(path, tensor), "bf16");
    default:
      throw new LlamaError(
        "ERR_UNSUPPORTED",
        `Tensor "${tensor.name}" is ${tensor.typeName}; only F32, F16 and BF16 tensors can be decoded to floats`,
      );
  }
}
