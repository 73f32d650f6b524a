/**
 * A structure-aware GGUF mutator, beside mutate.ts's byte-level one: it parses a valid file
 * into its parts (metadata entries, tensor table, tensor data), changes one to three things
 * with meaning (a tensor's type, shape, offset or name; a metadata value's type or value; an
 * array's or a string's length; an entry dropped or duplicated; an architecture or tokenizer
 * swapped for another) and writes the file again, with the tensor data laid out to match the
 * new table (so that most mutants still load and reach the decode) or left where it was. Some
 * mutants are then cut at a structure boundary. Mutation `index` of a seed is always the same
 * bytes, so a failing case can be regenerated.
 */
import { ggmlTypeInfo } from "../../src/gguf/types.js";
import { mulberry32 } from "../helpers/math.js";

const T = { U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9, U64: 10, I64: 11, F64: 12 } as const;
const WIDTH: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const NUMERIC = [T.U8, T.I8, T.U16, T.I16, T.U32, T.I32, T.F32, T.BOOL, T.U64, T.I64, T.F64];

/** A metadata value as read; `count` / `length` may lie about the items or bytes that follow. */
type Value =
  | { type: number; num: number }
  | { type: typeof T.STRING; str: Uint8Array; length?: bigint }
  | { type: typeof T.ARRAY; itemType: number; items: Value[]; count?: bigint };

interface Kv {
  key: Uint8Array;
  value: Value;
}
interface Tensor {
  name: Uint8Array;
  dims: bigint[];
  type: number;
  offset: bigint;
  data: Uint8Array;
}
export interface GgufParts {
  version: number;
  kvs: Kv[];
  tensors: Tensor[];
  alignment: number;
  /** Keep the tensor table's offsets (and the original data section) instead of laying the data out again. */
  keepOffsets: boolean;
  data: Uint8Array;
}

const utf8 = new TextEncoder();
const text = new TextDecoder();

/** Parses a valid GGUF file (the fuzz base): throws on anything it does not expect. */
export function parseGguf(file: Uint8Array): GgufParts {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  let pos = 4;
  const u32 = () => ((pos += 4), view.getUint32(pos - 4, true));
  const u64 = () => ((pos += 8), view.getBigUint64(pos - 8, true));
  const bytes = (n: number) => ((pos += n), file.slice(pos - n, pos));
  const str = () => bytes(Number(u64()));
  const value = (type: number): Value => {
    if (type === T.STRING) return { type, str: str() };
    if (type === T.ARRAY) {
      const itemType = u32();
      const n = Number(u64());
      const items: Value[] = [];
      for (let i = 0; i < n; i++) items.push(value(itemType));
      return { type, itemType, items };
    }
    const at = pos;
    pos += WIDTH[type];
    return { type, num: readNumber(view, at, type) };
  };
  const version = u32();
  const nTensors = Number(u64());
  const nKv = Number(u64());
  const kvs: Kv[] = [];
  for (let i = 0; i < nKv; i++) {
    const key = str();
    kvs.push({ key, value: value(u32()) });
  }
  const infos: Array<Omit<Tensor, "data">> = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const dims = Array.from({ length: u32() }, () => u64());
    infos.push({ name, dims, type: u32(), offset: u64() });
  }
  const alignKv = kvs.find((kv) => text.decode(kv.key) === "general.alignment");
  const alignment = alignKv && "num" in alignKv.value ? alignKv.value.num : 32;
  const dataStart = Math.ceil(pos / alignment) * alignment;
  const tensors = infos.map((t) => {
    const start = dataStart + Number(t.offset);
    return { ...t, data: file.slice(start, start + byteSize(t.type, t.dims)) };
  });
  return { version, kvs, tensors, alignment, keepOffsets: false, data: file.slice(dataStart) };
}

function readNumber(view: DataView, at: number, type: number): number {
  switch (type) {
    case T.U8: case T.BOOL: return view.getUint8(at);
    case T.I8: return view.getInt8(at);
    case T.U16: return view.getUint16(at, true);
    case T.I16: return view.getInt16(at, true);
    case T.U32: return view.getUint32(at, true);
    case T.I32: return view.getInt32(at, true);
    case T.F32: return view.getFloat32(at, true);
    case T.U64: return Number(view.getBigUint64(at, true));
    case T.I64: return Number(view.getBigInt64(at, true));
    default: return view.getFloat64(at, true);
  }
}

/** Bytes of a tensor of this type and shape; 0 for what ggml would refuse anyway. */
function byteSize(type: number, dims: bigint[]): number {
  const info = ggmlTypeInfo(type);
  if (info === undefined || dims.some((d) => d <= 0n || d > 1n << 40n)) return 0;
  const n = dims.reduce((a, d) => a * d, 1n);
  const ne0 = dims[0] ?? 1n;
  if (ne0 % BigInt(info.blockSize) !== 0n || n > 1n << 40n) return 0;
  return Number((n / BigInt(info.blockSize)) * BigInt(info.typeSize));
}

/** Writes the parts as a GGUF file (lies included: counts and lengths are written as given). */
export function writeParts(p: GgufParts): Uint8Array {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const push = (b: Uint8Array) => (chunks.push(b), (size += b.length));
  const num = (n: number | bigint, width: number, type: number = width === 8 ? T.U64 : T.U32) => {
    const b = new Uint8Array(width);
    const v = new DataView(b.buffer);
    switch (type) {
      case T.U8: case T.BOOL: v.setUint8(0, Number(n) & 0xff); break;
      case T.I8: v.setInt8(0, clampInt(Number(n), -128, 127)); break;
      case T.U16: v.setUint16(0, Number(n) & 0xffff, true); break;
      case T.I16: v.setInt16(0, clampInt(Number(n), -32768, 32767), true); break;
      case T.U32: v.setUint32(0, Number(BigInt.asUintN(32, BigInt(Math.trunc(Number.isFinite(Number(n)) ? Number(n) : 0)))), true); break;
      case T.I32: v.setInt32(0, clampInt(Number(n), -(2 ** 31), 2 ** 31 - 1), true); break;
      case T.F32: v.setFloat32(0, Number(n), true); break;
      case T.F64: v.setFloat64(0, Number(n), true); break;
      case T.I64: v.setBigInt64(0, BigInt.asIntN(64, toBig(n)), true); break;
      default: v.setBigUint64(0, BigInt.asUintN(64, toBig(n)), true);
    }
    push(b);
  };
  const str = (s: Uint8Array, length = BigInt(s.length)) => (num(length, 8), push(s));
  const value = (v: Value) => {
    if ("str" in v) str(v.str, v.length);
    else if ("items" in v) {
      num(v.itemType, 4);
      num(v.count ?? BigInt(v.items.length), 8);
      for (const item of v.items) value(item);
    } else num(v.num, WIDTH[v.type] ?? 4, v.type);
  };
  push(utf8.encode("GGUF"));
  num(p.version, 4);
  num(p.tensors.length, 8);
  num(p.kvs.length, 8);
  for (const kv of p.kvs) {
    str(kv.key);
    num(kv.value.type, 4);
    value(kv.value);
  }
  // Lay the data out again (each tensor at the next aligned offset, its bytes cut or padded to
  // its new size) unless the mutation keeps the table's offsets.
  const align = p.alignment > 0 && p.alignment <= 1 << 16 ? p.alignment : 32;
  let next = 0;
  const placed = p.tensors.map((t) => {
    if (p.keepOffsets) return t;
    // A size the table declares but that is too large to write keeps the old bytes (the loader
    // then finds the data past the end of the file).
    const declared = byteSize(t.type, t.dims);
    const want = declared > 0 && declared <= 1 << 26 ? declared : t.data.length;
    const data = new Uint8Array(want);
    data.set(t.data.subarray(0, want));
    const offset = BigInt(next);
    next = Math.ceil((next + want) / align) * align;
    return { ...t, offset, data };
  });
  for (const t of placed) {
    str(t.name);
    num(t.dims.length, 4);
    for (const d of t.dims) num(d, 8);
    num(t.type, 4);
    num(t.offset, 8);
  }
  push(new Uint8Array(Math.ceil(size / align) * align - size));
  if (p.keepOffsets) push(p.data);
  else {
    const data = new Uint8Array(next);
    for (const t of placed) data.set(t.data, Number(t.offset));
    push(data);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) (out.set(c, at), (at += c.length));
  return out;
}

const clampInt = (n: number, lo: number, hi: number) => (Number.isFinite(n) ? Math.max(lo, Math.min(hi, Math.trunc(n))) : 0);
const toBig = (n: number | bigint) => (typeof n === "bigint" ? n : BigInt(Math.trunc(Number.isFinite(n) ? Math.max(-(2 ** 63), Math.min(2 ** 64, n)) : 0)));

// What the mutator likes to put where.
const TENSOR_TYPES = [1, 30, 8, 2, 12, 14, 24, 25, 26, 27, 28, 9, 15, 16, 34, 39, 20, 23, 0, 3, 6, 7, 10, 11, 13, 17, 18, 19, 21, 22, 29, 35, 40, 41, 42];
const EDGE_NUMBERS = [0, 1, -1, 2, 3, 7, 64, 255, 65535, 2 ** 31 - 1, 2 ** 32 - 1, -(2 ** 31), 2 ** 53, 1e30, -1e-5, NaN, Infinity, -Infinity, 0.5];
const ARCHITECTURES = ["gpt2", "llama", "bert", "t5", "t5encoder", "mamba", "rwkv6", "gemma", "qwen2", "phi3", "falcon", "mpt", "starcoder", "bloom", "gptneox", "nomic-bert", "jina-bert-v2", "gemma3", "deepseek2", "granite", "eagle3", "dflash", "wavtokenizer-dec", "bogus"];
const TOKENIZERS = ["gpt2", "llama", "bert", "t5", "rwkv", "none", "plamo2", "no_vocab", "bogus"];
const EXTRA_KEYS = ["rope.dimension_count", "attention.head_count_kv", "attention.key_length", "attention.value_length", "expert_count", "expert_used_count", "rope.freq_base", "attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon", "attention.causal", "pooling_type", "attention.sliding_window", "logit_scale", "attention.clamp_kqv", "final_logit_softcapping", "embedding_length_per_layer_input", "ssm.conv_kernel", "attention.relative_buckets_count"];

export interface StructureMutation {
  description: string;
  bytes: Uint8Array;
}

/** Mutation number `index` of the parsed base (parseGguf of the fuzz base) for `seed`. */
export function mutateStructure(base: GgufParts, seed: number, index: number): StructureMutation {
  const random = mulberry32(seed * 7_919 + index * 104_729 + 17);
  const int = (n: number) => Math.floor(random() * n);
  const pick = <X>(items: readonly X[]): X => items[int(items.length)];
  const p: GgufParts = { ...base, kvs: base.kvs.map((kv) => ({ ...kv })), tensors: base.tensors.map((t) => ({ ...t, dims: [...t.dims] })) };
  const arch = text.decode((p.kvs.find((kv) => text.decode(kv.key) === "general.architecture")?.value as { str?: Uint8Array })?.str ?? new Uint8Array());
  const done: string[] = [];
  const r = random();
  const n = r < 0.6 ? 1 : r < 0.9 ? 2 : 3;
  for (let m = 0; m < n; m++) done.push(applyOne(p, pick, int, random, arch));
  let bytes = writeParts(p);
  if (random() < 0.08) {
    const end = int(bytes.length);
    bytes = bytes.subarray(0, end);
    done.push(`truncate at ${end}`);
  }
  return { description: done.join("; "), bytes };
}

type Pick = <X>(items: readonly X[]) => X;

function applyOne(p: GgufParts, pick: Pick, int: (n: number) => number, random: () => number, arch: string): string {
  const kind = random();
  const tensor = p.tensors.length > 0 ? pick(p.tensors) : undefined;
  const tname = tensor ? text.decode(tensor.name) : "";
  if (tensor && kind < 0.35) {
    // Tensor type: the data re-laid out to match (most still load, and reach the decode). Mostly
    // a type whose block fits the row, which ggml's reader accepts.
    const fits = TENSOR_TYPES.filter((t) => (tensor.dims[0] ?? 1n) % BigInt(ggmlTypeInfo(t)?.blockSize ?? 1) === 0n);
    const type = random() < 0.8 ? pick(fits) : random() < 0.9 ? pick(TENSOR_TYPES) : int(48);
    tensor.type = type;
    return `tensor ${tname} type = ${type}`;
  }
  if (tensor && kind < 0.43) {
    const d = int(tensor.dims.length + 1);
    const how = int(6);
    if (how === 0 && tensor.dims.length < 4) tensor.dims.push(1n);
    else if (how === 1 && tensor.dims.length > 1) tensor.dims.pop();
    else if (how === 2 && tensor.dims.length > 1) [tensor.dims[0], tensor.dims[1]] = [tensor.dims[1], tensor.dims[0]];
    else if (d < tensor.dims.length) tensor.dims[d] = pick([0n, 1n, tensor.dims[d] + 1n, tensor.dims[d] - 1n, tensor.dims[d] * 2n, tensor.dims[d] / 2n, 1n << 31n]);
    return `tensor ${tname} shape = [${tensor.dims.join(",")}]`;
  }
  if (tensor && kind < 0.47) {
    p.keepOffsets = true;
    const other = pick(p.tensors);
    tensor.offset = pick([tensor.offset + 1n, tensor.offset + BigInt(p.alignment), other.offset, 0n, BigInt(p.data.length), 1n << 40n]);
    return `tensor ${tname} offset = ${tensor.offset} (data kept in place)`;
  }
  if (tensor && kind < 0.5) {
    const how = int(3);
    if (how === 0) tensor.name = pick(p.tensors).name;
    else if (how === 1) p.tensors.splice(p.tensors.indexOf(tensor), 1);
    else p.tensors.push({ ...tensor, dims: [...tensor.dims] });
    return `tensor ${tname} ${["renamed to another's name", "dropped", "duplicated"][how]}`;
  }
  const kv = pick(p.kvs);
  const key = text.decode(kv.key);
  const v = kv.value;
  if (kind < 0.7 && "num" in v) {
    kv.value = { type: v.type, num: pick(EDGE_NUMBERS) };
    return `${key} = ${(kv.value as { num: number }).num}`;
  }
  if (kind < 0.78) {
    // Value type: numbers converted between types, strings and numbers swapped, a scalar in an array.
    const to = pick([...NUMERIC, T.STRING, T.ARRAY]);
    const asNumber = "num" in v ? v.num : "str" in v ? Number(text.decode(v.str)) || v.str.length : v.items.length;
    kv.value = to === T.STRING ? { type: T.STRING, str: utf8.encode(String(asNumber)) }
      : to === T.ARRAY ? { type: T.ARRAY, itemType: "items" in v ? pick(NUMERIC) : v.type, items: "items" in v ? v.items.filter((i) => "num" in i) : [v] }
      : { type: to, num: asNumber };
    return `${key} retyped to ${to}`;
  }
  if (kind < 0.88 && "items" in v) {
    const how = int(5);
    const items = [...v.items];
    if (how === 0) kv.value = { ...v, items, count: BigInt(items.length) + pick([1n, -1n, 1000n, 1n << 62n]) };
    else if (how === 1) kv.value = { ...v, items: items.slice(0, int(items.length + 1)) };
    else if (how === 2 && items.length > 1) {
      const i = int(items.length);
      items[i] = items[int(items.length)];
      kv.value = { ...v, items };
    } else if (how === 3 && items.length > 0 && "str" in items[0]) {
      const i = int(items.length);
      items[i] = { type: T.STRING, str: pick([new Uint8Array(), new Uint8Array([0xff, 0xfe]), utf8.encode("<0x0A>"), utf8.encode("▁"), new Uint8Array([0])]) };
      kv.value = { ...v, items };
    } else {
      const itemType = pick(NUMERIC);
      kv.value = { type: T.ARRAY, itemType, items: items.map((i) => ({ type: itemType, num: "num" in i ? i.num : 0 })) };
    }
    return `${key} array ${["count lies", "truncated", "item duplicated", "item replaced", "items retyped"][how]}`;
  }
  if (kind < 0.95 && "str" in v) {
    if (random() < 0.3) {
      kv.value = { ...v, length: BigInt(v.str.length) + pick([1n, 7n, 1n << 40n]) };
      return `${key} string length lies`;
    }
    const options = key === "general.architecture" ? ARCHITECTURES : key === "tokenizer.ggml.model" ? TOKENIZERS : ["", "x", "default", "llama3", "gpt-2", "qwen2", "bogus\u0000"];
    kv.value = { type: T.STRING, str: utf8.encode(pick(options)) };
    return `${key} = "${text.decode(kv.value.str)}"`;
  }
  const how = int(3);
  if (how === 0) p.kvs.splice(p.kvs.indexOf(kv), 1);
  else if (how === 1) p.kvs.push({ ...kv });
  else {
    const added = `${arch}.${pick(EXTRA_KEYS)}`;
    p.kvs.push({ key: utf8.encode(added), value: { type: pick([T.U32, T.F32, T.I32, T.BOOL]), num: pick(EDGE_NUMBERS) } });
    return `added ${added}`;
  }
  return `${key} ${how === 0 ? "dropped" : "duplicated"}`;
}
