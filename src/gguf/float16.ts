/**
 * Conversions between float32 and the 16-bit float formats ggml stores: IEEE half (F16) and
 * bfloat16 (BF16). Encoding rounds to nearest, ties to even, like ggml's CPU conversions.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Raw bits of `x` rounded to float32. */
function float32Bits(x: number): number {
  f32[0] = x;
  return u32[0];
}

/** Shifts `value` right by `shift` bits, rounding to nearest with ties to even. */
function shiftRoundEven(value: number, shift: number): number {
  const kept = value >>> shift;
  const rest = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept;
}

/** IEEE half-precision bits of `x` (overflow gives ±Infinity, NaN stays NaN). */
export function f32ToF16Bits(x: number): number {
  const bits = float32Bits(x);
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa === 0 ? 0 : 0x200 | (mantissa >>> 13));
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Subnormal half (or zero): the value in units of 2^-24 is the full mantissa >> (14 - e).
    if (halfExponent < -10) return sign;
    return sign | shiftRoundEven(mantissa | 0x800000, 14 - halfExponent);
  }
  // A carry out of the mantissa correctly bumps the exponent (up to Infinity).
  return sign | shiftRoundEven((halfExponent << 23) | mantissa, 13);
}

/** The number that IEEE half-precision `bits` encode. */
export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** bfloat16 bits of `x`, as ggml_compute_fp32_to_bf16 computes them (NaN forced quiet). */
export function f32ToBf16Bits(x: number): number {
  const bits = float32Bits(x);
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 64;
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** The number that bfloat16 `bits` encode. */
export function bf16BitsToF32(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0];
}

/** Float32 value of every F16 bit pattern, built on first use. */
let f16Table: Float32Array | undefined;

function f16DecodeTable(): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) f16Table[bits] = f16BitsToF32(bits);
  }
  return f16Table;
}

/** Encodes float32 values as little-endian F16 or BF16 bytes. */
export function encodeHalfFloats(values: Float32Array, format: "f16" | "bf16"): Uint8Array {
  const out = new Uint16Array(values.length);
  const encode = format === "f16" ? f32ToF16Bits : f32ToBf16Bits;
  for (let i = 0; i < values.length; i++) out[i] = encode(values[i]);
  return littleEndianBytes(out);
}

/** Decodes little-endian F16 or BF16 bytes to float32 values. */
export function decodeHalfFloats(bytes: Uint8Array, format: "f16" | "bf16"): Float32Array {
  const count = bytes.length >>> 1;
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (format === "f16") {
    const table = f16DecodeTable();
    for (let i = 0; i < count; i++) out[i] = table[view.getUint16(2 * i, true)];
  } else {
    const outBits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) outBits[i] = view.getUint16(2 * i, true) << 16;
  }
  return out;
}

/** Whether typed arrays store numbers little-endian on this machine. */
export const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The bytes of a typed array in little-endian order (a view when the host is little-endian). */
export function littleEndianBytes(values: Uint16Array | Float32Array): Uint8Array {
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  return HOST_IS_LITTLE_ENDIAN ? bytes : swapBytes(bytes, values.BYTES_PER_ELEMENT);
}

/** A copy of `bytes` with the byte order of each `width`-byte word reversed. */
export function swapBytes(bytes: Uint8Array, width: number): Uint8Array {
  const swapped = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += width) {
    for (let j = 0; j < width; j++) swapped[i + j] = bytes[i + width - 1 - j];
  }
  return swapped;
}
