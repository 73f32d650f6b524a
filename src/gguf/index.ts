/**
 * Pure-TypeScript GGUF support: read a model file's header (metadata and tensor layout) without
 * loading its weights, read single tensors, and write GGUF files with streamed tensor data.
 */

export {
  GgmlType,
  GGUF_DEFAULT_ALIGNMENT,
  alignUp,
  elementCount,
  ggmlTypeInfo,
  tensorByteSize,
  type GgmlTypeInfo,
  type GgufArrayValue,
  type GgufFile,
  type GgufMetadata,
  type GgufScalarJsTypes,
  type GgufScalarType,
  type GgufScalarValue,
  type GgufTensorInfo,
  type GgufValue,
  type GgufValueType,
} from "./types.js";
export { metadataValues, readGguf, readTensorBytes, readTensorFloats, type ReadGgufOptions } from "./reader.js";
export {
  ggufValue,
  writeGguf,
  type GgufTensorInput,
  type TensorChunk,
  type TensorChunks,
  type TensorData,
  type WriteGgufInput,
} from "./writer.js";
export { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "./float16.js";
