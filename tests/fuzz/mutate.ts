/**
 * Seeded mutations of a valid GGUF file, for fuzzing the model loader: truncations, flipped
 * bytes, huge or off-by-one values at the positions of counts and lengths, and bad type ids.
 * Mutation `i` of a seed is always the same bytes, so a failing case can be regenerated.
 */
import { mulberry32 } from "../helpers/math.js";

/** A field of the GGUF header whose value the mutator likes to corrupt. */
interface Field {
  offset: number;
  size: 4 | 8;
  kind: "count" | "type" | "value";
}

/**
 * Offsets of every count, length, dimension and type id in a GGUF header (tensor count, key
 * count, string lengths, value types, array item types and lengths, n_dims, dims, tensor types
 * and offsets), and of the 32-bit integer metadata values (hyperparameters, token ids). A small walker of its own, so that it does not share bugs with src/gguf/reader.ts.
 */
export function headerFields(file: Uint8Array): Field[] {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const fields: Field[] = [];
  let pos = 8;
  const u64 = (kind: Field["kind"]): number => {
    fields.push({ offset: pos, size: 8, kind });
    const n = Number(view.getBigUint64(pos, true));
    pos += 8;
    return n;
  };
  const u32 = (kind: Field["kind"]): number => {
    fields.push({ offset: pos, size: 4, kind });
    const n = view.getUint32(pos, true);
    pos += 4;
    return n;
  };
  const string = () => {
    const length = u64("count");
    pos += length;
  };
  const SIZES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const value = (type: number) => {
    if (type === 8) string();
    else pos += SIZES[type];
  };
  const nTensors = u64("count");
  const nKv = u64("count");
  for (let i = 0; i < nKv; i++) {
    string();
    const type = u32("type");
    if (type === 4 || type === 5) {
      u32("value");
      continue;
    }
    if (type !== 9) {
      value(type);
      continue;
    }
    const itemType = u32("type");
    const n = u64("count");
    // Long arrays: record the counts of the first items only (the rest are skipped quickly).
    for (let j = 0; j < n; j++) {
      if (itemType === 8 && j >= 16) {
        pos += 8 + Number(view.getBigUint64(pos, true));
      } else {
        value(itemType);
      }
    }
  }
  for (let i = 0; i < nTensors; i++) {
    string();
    const nDims = u32("count");
    for (let d = 0; d < nDims; d++) u64("count");
    u32("type");
    u64("count"); // data offset
  }
  return fields;
}

const HUGE_U64 = [0xffffffffffffffffn, 0x8000000000000000n, 0x7fffffffffffffffn, 0x100000000n, 0xffffffffn, 0x80000000n, 0x7fffffffn];
const HUGE_U32 = [0xffffffff, 0x80000000, 0x7fffffff, 0x10000, 4097, 64, 5];

export interface Mutation {
  /** What was done, e.g. "truncate at 1234" or "count@56 = 18446744073709551615". */
  description: string;
  bytes: Uint8Array;
}

/** Mutation number `index` of `base` for `seed`. `fields` = headerFields(base), `headerEnd` = where tensor data starts. */
export function mutate(base: Uint8Array, fields: Field[], headerEnd: number, seed: number, index: number): Mutation {
  const random = mulberry32(seed * 1_000_003 + index);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const bytes = Uint8Array.from(base);
  const view = new DataView(bytes.buffer);
  const kind = random();
  if (kind < 0.2) {
    // Truncation, mostly inside the header where the parser works.
    const end = random() < 0.8 ? Math.floor(random() * headerEnd) : headerEnd + Math.floor(random() * (base.length - headerEnd));
    return { description: `truncate at ${end}`, bytes: bytes.subarray(0, end) };
  }
  if (kind < 0.45) {
    const n = 1 + Math.floor(random() * 8);
    const flips: string[] = [];
    for (let k = 0; k < n; k++) {
      const at = random() < 0.9 ? Math.floor(random() * headerEnd) : Math.floor(random() * base.length);
      const mask = 1 << Math.floor(random() * 8);
      bytes[at] ^= mask;
      flips.push(`${at}^${mask}`);
    }
    return { description: `flip ${flips.join(",")}`, bytes };
  }
  const wanted: Field["kind"] = kind < 0.75 ? "count" : kind < 0.88 ? "value" : "type";
  const field = pick(fields.filter((f) => f.kind === wanted));
  let shown: string;
  if (field.size === 8) {
    const old = view.getBigUint64(field.offset, true);
    const v = random() < 0.6 ? pick(HUGE_U64) : old + BigInt(pick([1, -1, 2, 7, 1000]));
    view.setBigUint64(field.offset, BigInt.asUintN(64, v), true);
    shown = String(BigInt.asUintN(64, v));
  } else {
    const old = view.getUint32(field.offset, true);
    const v =
      field.kind === "type" && random() < 0.5 ? Math.floor(random() * 48)
      : field.kind === "value" && random() < 0.3 ? 0
      : random() < 0.6 ? pick(HUGE_U32)
      : old + pick([1, -1, 2]);
    view.setUint32(field.offset, v >>> 0, true);
    shown = String(v >>> 0);
  }
  return { description: `${field.kind}@${field.offset} = ${shown}`, bytes };
}
