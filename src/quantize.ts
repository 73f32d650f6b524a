/**
 * Model quantisation through llama.cpp's llama_model_quantize, off the event loop.
 *
 * ```ts
 * const r = await quantize("model-f16.gguf", "model-q4_k_m.gguf", { type: "Q4_K_M", onProgress: (p) => console.log(p) });
 * console.log(`${r.inputBytes} -> ${r.outputBytes} bytes in ${r.seconds.toFixed(1)} s`);
 * ```
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import { defaultThreads } from "./options/context.js";
import { AbortError, LlamaError, invalidArgument } from "./errors.js";
import { readGguf } from "./gguf/index.js";
import { binding } from "./native.js";
import { optionKeys, rejectUnknownKeys } from "./options/suggest.js";


/** The quantisation types llama-napi offers (llama.cpp's llama-quantize names). */
export const QUANT_TYPES = [
  "Q8_0",
  "Q4_0",
  "Q4_1",
  "Q5_0",
  "Q5_1",
  "Q2_K",
  "Q3_K_S",
  "Q3_K_M",
  "Q3_K_L",
  "Q4_K_S",
  "Q4_K_M",
  "Q5_K_S",
  "Q5_K_M",
  "Q6_K",
  "IQ4_NL",
  "IQ4_XS",
  "F16",
  "BF16",
  "F32",
] as const;

/** A quantisation type {@link quantize} can write (one of {@link QUANT_TYPES}). */
export type QuantType = (typeof QUANT_TYPES)[number];

/**
 * Types llama.cpp only makes with an importance matrix (src/llama-quant.cpp,
 * tensor_requires_imatrix). llama-napi takes no imatrix, so these are refused with ERR_UNSUPPORTED.
 */
export const IMATRIX_QUANT_TYPES: readonly string[] = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S"];

/** Options of {@link quantize}. */
export interface QuantizeOptions {
  type: QuantType;
  /** Threads that quantise (default: the cores, at most 16). */
  threads?: number;
  /** Quantise tensors that are already quantised (lower quality than quantising from F16/F32). Default false. */
  allowRequantize?: boolean;
  /** Called with the fraction of tensors done, from 0 to 1. */
  onProgress?: (progress: number) => void;
  /**
   * Stops the quantisation: llama.cpp is stopped before its next tensor (a single tensor is not
   * interrupted), the partial file is deleted and the promise rejects with an AbortError.
   */
  signal?: AbortSignal;
}

/** What {@link quantize} wrote: the files, their sizes and how long it took. */
export interface QuantizeResult {
  /** Absolute paths. */
  input: string;
  output: string;
  type: QuantType;
  inputBytes: number;
  outputBytes: number;
  /** Tensors in the output, and how many of each ggml type (e.g. { F32: 26, Q8_0: 8 }). */
  tensors: number;
  tensorTypes: Record<string, number>;
  seconds: number;
}

function isQuantType(value: unknown): value is QuantType {
  return typeof value === "string" && (QUANT_TYPES as readonly string[]).includes(value);
}

function checkOptions(input: unknown, output: unknown, options: QuantizeOptions): void {
  if (typeof input !== "string" || input === "") invalidArgument("input", "a non-empty path", input);
  if (typeof output !== "string" || output === "") invalidArgument("output", "a non-empty path", output);
  if (typeof options !== "object" || options === null) invalidArgument("options", "an object with a type", options);
  rejectUnknownKeys("quantize options", options, optionKeys<QuantizeOptions>({ type: true, threads: true, allowRequantize: true, onProgress: true, signal: true }));
  const { type, threads, allowRequantize, onProgress, signal } = options;
  if (typeof type === "string" && IMATRIX_QUANT_TYPES.includes(type)) {
    throw new LlamaError(
      "ERR_UNSUPPORTED",
      `Quantisation type ${type} needs an importance matrix (imatrix), which llama-napi does not take; ` +
        "use a K-quant such as Q4_K_M or Q3_K_M instead, or llama.cpp's llama-quantize --imatrix",
    );
  }
  if (!isQuantType(type)) invalidArgument("options.type", `one of ${QUANT_TYPES.join(", ")}`, type);
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= 1024)) {
    invalidArgument("options.threads", "an integer from 1 to 1024", threads);
  }
  if (allowRequantize !== undefined && typeof allowRequantize !== "boolean") {
    invalidArgument("options.allowRequantize", "a boolean", allowRequantize);
  }
  if (onProgress !== undefined && typeof onProgress !== "function") invalidArgument("options.onProgress", "a function", onProgress);
  if (signal !== undefined && !(signal instanceof AbortSignal)) invalidArgument("options.signal", "an AbortSignal", signal);
}

/** Checks that the output can be written to without touching the input. */
async function checkOutput(input: string, output: string): Promise<void> {
  const dir = path.dirname(output);
  const dirStat = await fs.promises.stat(dir).catch(() => undefined);
  if (!dirStat?.isDirectory()) {
    throw new LlamaError("ERR_FILE_NOT_FOUND", `The output directory ${dir} does not exist; create it first`);
  }
  const [inStat, outStat] = await Promise.all([fs.promises.stat(input), fs.promises.stat(output).catch(() => undefined)]);
  if (outStat?.isDirectory()) invalidArgument("output", "a file path, not a directory", output);
  if (outStat && outStat.dev === inStat.dev && outStat.ino === inStat.ino) {
    invalidArgument("output", "a different file from the input", output);
  }
}

/** Counts the tensors of each ggml type in a GGUF file. */
async function tensorTypeCounts(file: string): Promise<{ tensors: number; tensorTypes: Record<string, number> }> {
  const gguf = await readGguf(file, { maxArrayLength: 0 });
  const tensorTypes: Record<string, number> = {};
  for (const t of gguf.tensors) tensorTypes[t.typeName] = (tensorTypes[t.typeName] ?? 0) + 1;
  return { tensors: gguf.tensors.length, tensorTypes };
}

/**
 * Quantises a GGUF model to `options.type` with llama.cpp (the same tensor-type choices as
 * llama.cpp's llama-quantize). Runs off the event loop. The output is written to a temporary
 * file next to it and renamed when complete, so a failed or aborted run never leaves a partial
 * `output` behind (an existing `output` is replaced only on success).
 *
 * Errors: ERR_FILE_NOT_FOUND / ERR_GGUF_INVALID for a missing or malformed input,
 * ERR_UNSUPPORTED for types that need an importance matrix, ERR_QUANTIZE (with llama.cpp's
 * reason) when llama.cpp fails, ERR_ABORTED when `signal` aborts.
 */
export async function quantize(input: string, output: string, options: QuantizeOptions): Promise<QuantizeResult> {
  checkOptions(input, output, options);
  const { type, signal, onProgress } = options;
  if (signal?.aborted) throw new AbortError("Quantisation was aborted before it started", { cause: signal.reason });
  const inputPath = path.resolve(input);
  const outputPath = path.resolve(output);
  const header = await readGguf(inputPath, { maxArrayLength: 0 });
  if (header.tensors.length === 0) {
    throw new LlamaError("ERR_QUANTIZE", `${inputPath} has no tensors (a vocabulary-only file?): there is nothing to quantise`);
  }
  await checkOutput(inputPath, outputPath);
  if (signal?.aborted) throw new AbortError("Quantisation was aborted before it started", { cause: signal.reason });
  const started = performance.now();
  const temp = path.join(path.dirname(outputPath), `.${path.basename(outputPath)}.${process.pid}-${crypto.randomBytes(4).toString("hex")}.tmp`);
  const job = binding().quantize(
    inputPath,
    temp,
    { type, threads: options.threads ?? defaultThreads(), allowRequantize: options.allowRequantize ?? false },
    onProgress,
  );
  const onAbort = () => job.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await job.promise;
    if (signal?.aborted) throw new AbortError(`Quantising ${inputPath} was aborted`, { cause: signal.reason });
    await fs.promises.rename(temp, outputPath);
  } catch (err) {
    await fs.promises.rm(temp, { force: true });
    if (err instanceof AbortError && signal?.aborted) throw new AbortError(err.message, { cause: signal.reason });
    throw err;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  const seconds = (performance.now() - started) / 1000;
  const [inStat, outStat, counts] = await Promise.all([
    fs.promises.stat(inputPath),
    fs.promises.stat(outputPath),
    tensorTypeCounts(outputPath),
  ]);
  return { input: inputPath, output: outputPath, type, inputBytes: inStat.size, outputBytes: outStat.size, ...counts, seconds };
}
