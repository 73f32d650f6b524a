/**
 * Types shared by the GGUF reader and writer: metadata value types, ggml tensor types and the
 * byte-size arithmetic of ggml tensors.
 *
 * Format reference: vendor/llama.cpp/ggml/include/gguf.h; tensor type numbers and block sizes:
 * vendor/llama.cpp/ggml/include/ggml.h and ggml/src/ggml.c (`type_traits`).
 */

/** The scalar types a GGUF metadata value can have (GGUF's `enum gguf_type` without the array). */
export type GgufScalarType = "uint8" | "int8" | "uint16" | "int16" | "uint32" | "int32" | "float32" | "bool" | "string" | "uint64" | "int64" | "float64";

/** Scalar metadata value types, by their GGUF type id (`enum gguf_type`). */
export const GGUF_SCALAR_TYPE_IDS = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const satisfies Record<GgufScalarType, number>;

/** GGUF type id of an array value. */
export const GGUF_ARRAY_TYPE_ID = 9;

/** The type of a GGUF metadata value: a scalar type or "array". */
export type GgufValueType = GgufScalarType | "array";

/** The JavaScript type that holds a value of each scalar GGUF type. */
export interface GgufScalarJsTypes {
  uint8: number;
  int8: number;
  uint16: number;
  int16: number;
  uint32: number;
  int32: number;
  float32: number;
  bool: boolean;
  string: string;
  /** A number when it is a safe integer, a bigint otherwise. */
  uint64: number | bigint;
  /** A number when it is a safe integer, a bigint otherwise. */
  int64: number | bigint;
  float64: number;
}

/** A scalar metadata value with its GGUF type, e.g. `{ type: "uint32", value: 5 }`. */
export type GgufScalarValue = {
  [K in GgufScalarType]: { type: K; value: GgufScalarJsTypes[K] };
}[GgufScalarType];

/**
 * An array metadata value, e.g. `{ type: "array", itemType: "string", value: ["a", "b"] }`.
 * `truncatedFrom` is set only by the reader, when `maxArrayLength` kept just the first items:
 * it is the number of items in the file.
 */
export type GgufArrayValue = {
  [K in GgufScalarType]: {
    type: "array";
    itemType: K;
    value: GgufScalarJsTypes[K][];
    truncatedFrom?: number;
  };
}[GgufScalarType];

/** A metadata value as stored in a GGUF file, keeping its type. */
export type GgufValue = GgufScalarValue | GgufArrayValue;

/** Metadata of a GGUF file, keyed by name, in file order. */
export type GgufMetadata = Record<string, GgufValue>;

/** Byte size of one scalar of each GGUF type, or 0 for strings (length-prefixed). */
export const GGUF_SCALAR_SIZES: Record<GgufScalarType, number> = {
  uint8: 1,
  int8: 1,
  uint16: 2,
  int16: 2,
  uint32: 4,
  int32: 4,
  float32: 4,
  bool: 1,
  string: 0,
  uint64: 8,
  int64: 8,
  float64: 8,
};

const SCALAR_TYPE_BY_ID = new Map<number, GgufScalarType>(
  Object.entries(GGUF_SCALAR_TYPE_IDS).map(([name, id]) => [id, name as GgufScalarType]),
);

/** The scalar type with this GGUF type id, or undefined (also for the array id). */
export function scalarTypeFromId(id: number): GgufScalarType | undefined {
  return SCALAR_TYPE_BY_ID.get(id);
}

/** ggml tensor types (`enum ggml_type`); gaps are types removed from ggml. */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
  Q2_0 = 42,
}

/** How a ggml type packs elements: `blockSize` elements take `typeSize` bytes. */
export interface GgmlTypeInfo {
  name: string;
  blockSize: number;
  typeSize: number;
}

const QK_K = 256;

/** [blockSize, typeSize] of each type, as ggml_blck_size / ggml_type_size report them. */
const TYPE_SIZES: Record<GgmlType, readonly [number, number]> = {
  [GgmlType.F32]: [1, 4],
  [GgmlType.F16]: [1, 2],
  [GgmlType.Q4_0]: [32, 18],
  [GgmlType.Q4_1]: [32, 20],
  [GgmlType.Q5_0]: [32, 22],
  [GgmlType.Q5_1]: [32, 24],
  [GgmlType.Q8_0]: [32, 34],
  [GgmlType.Q8_1]: [32, 36],
  [GgmlType.Q2_K]: [QK_K, 84],
  [GgmlType.Q3_K]: [QK_K, 110],
  [GgmlType.Q4_K]: [QK_K, 144],
  [GgmlType.Q5_K]: [QK_K, 176],
  [GgmlType.Q6_K]: [QK_K, 210],
  [GgmlType.Q8_K]: [QK_K, 292],
  [GgmlType.IQ2_XXS]: [QK_K, 66],
  [GgmlType.IQ2_XS]: [QK_K, 74],
  [GgmlType.IQ3_XXS]: [QK_K, 98],
  [GgmlType.IQ1_S]: [QK_K, 50],
  [GgmlType.IQ4_NL]: [32, 18],
  [GgmlType.IQ3_S]: [QK_K, 110],
  [GgmlType.IQ2_S]: [QK_K, 82],
  [GgmlType.IQ4_XS]: [QK_K, 136],
  [GgmlType.I8]: [1, 1],
  [GgmlType.I16]: [1, 2],
  [GgmlType.I32]: [1, 4],
  [GgmlType.I64]: [1, 8],
  [GgmlType.F64]: [1, 8],
  [GgmlType.IQ1_M]: [QK_K, 56],
  [GgmlType.BF16]: [1, 2],
  [GgmlType.TQ1_0]: [QK_K, 54],
  [GgmlType.TQ2_0]: [QK_K, 66],
  [GgmlType.MXFP4]: [32, 17],
  [GgmlType.NVFP4]: [64, 36],
  [GgmlType.Q1_0]: [128, 18],
  [GgmlType.Q2_0]: [64, 18],
};

/** Block size, bytes per block and name of a ggml type, or undefined for an unknown type id. */
export function ggmlTypeInfo(type: number): GgmlTypeInfo | undefined {
  const sizes = (TYPE_SIZES as Record<number, readonly [number, number]>)[type];
  if (sizes === undefined) return undefined;
  return { name: GgmlType[type], blockSize: sizes[0], typeSize: sizes[1] };
}

/** Number of elements of a tensor of this shape (1 for a scalar of shape []). */
export function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

/**
 * Bytes taken by a tensor of this ggml type and shape (ggml order, ne0 first).
 * Throws a RangeError when the type is unknown, a dimension is not a positive safe integer,
 * the row length is not a multiple of the block size, or the size is not a safe integer.
 */
export function tensorByteSize(type: GgmlType, shape: readonly number[]): number {
  const info = ggmlTypeInfo(type);
  if (info === undefined) throw new RangeError(`unknown ggml type ${type}`);
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d <= 0) throw new RangeError(`dimension ${d} is not a positive integer`);
  }
  const rowLength = shape[0] ?? 1;
  if (rowLength % info.blockSize !== 0) {
    throw new RangeError(
      `row length ${rowLength} is not a multiple of the ${info.name} block size ${info.blockSize}`,
    );
  }
  const elements = elementCount(shape);
  const bytes = (elements / info.blockSize) * info.typeSize;
  if (!Number.isSafeInteger(elements) || !Number.isSafeInteger(bytes)) {
    throw new RangeError(`tensor of shape [${shape.join(", ")}] is too large`);
  }
  return bytes;
}

/** Default alignment of the tensor data section and of each tensor (GGUF_DEFAULT_ALIGNMENT). */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Key whose uint32 value overrides the default alignment. */
export const GGUF_ALIGNMENT_KEY = "general.alignment";

/** Longest tensor name llama.cpp accepts, in bytes (GGML_MAX_NAME - 1). */
export const GGUF_MAX_TENSOR_NAME_BYTES = 63;

/** Most dimensions a ggml tensor can have (GGML_MAX_DIMS). */
export const GGML_MAX_DIMS = 4;

/** Rounds `n` up to a multiple of `alignment`. */
export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/** A tensor as described in a GGUF header. */
export interface GgufTensorInfo {
  name: string;
  /** Dimensions in ggml order: ne0 (the contiguous row length) first. */
  shape: number[];
  type: GgmlType;
  /** Name of the ggml type, e.g. "F32" or "Q4_K". */
  typeName: string;
  /** Absolute offset of the tensor data in the file. */
  offset: number;
  byteSize: number;
}

/** What {@link readGguf} returns: everything in a GGUF file except the tensor data. */
export interface GgufFile {
  version: number;
  alignment: number;
  metadata: GgufMetadata;
  tensors: GgufTensorInfo[];
  /** Absolute offset of the tensor data section. */
  dataOffset: number;
  fileSize: number;
}
