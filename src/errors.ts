/**
 * Errors thrown by llama-napi. Every error is a {@link LlamaError} with a stable string `code`
 * that programs can switch on; the message says what was wrong and what to do about it.
 */

export type LlamaErrorCode =
  | "ERR_INVALID_ARGUMENT"
  | "ERR_FILE_NOT_FOUND"
  | "ERR_FILE_UNREADABLE"
  | "ERR_GGUF_INVALID"
  | "ERR_MODEL_LOAD"
  | "ERR_CONTEXT_CREATE"
  | "ERR_CONTEXT_FULL"
  | "ERR_DECODE"
  | "ERR_DISPOSED"
  | "ERR_ABORTED"
  | "ERR_BUSY"
  | "ERR_NO_SEQUENCE"
  | "ERR_TOKEN_INVALID"
  | "ERR_STATE"
  | "ERR_GRAMMAR_INVALID"
  | "ERR_TEMPLATE_INVALID"
  | "ERR_TOOL_CALL"
  | "ERR_MEDIA_INVALID"
  | "ERR_QUANTIZE"
  | "ERR_UNSUPPORTED"
  | "ERR_RPC"
  | "ERR_NATIVE_LOAD"
  | "ERR_DOWNLOAD"
  | "ERR_CHECKSUM"
  | "ERR_INTERNAL";

/** The error every llama-napi call throws or rejects with; switch on its stable {@link LlamaError.code | code}. */
export class LlamaError extends Error {
  override name = "LlamaError";
  readonly code: LlamaErrorCode;

  constructor(code: LlamaErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** The file is not a valid GGUF: wrong magic, bad version, truncated or inconsistent. */
export class GgufError extends LlamaError {
  override name = "GgufError";
  /** Byte offset in the file where the problem was found, when known. */
  readonly offset: number | undefined;

  constructor(message: string, offset?: number) {
    super("ERR_GGUF_INVALID", offset === undefined ? message : `${message} (at byte offset ${offset})`);
    this.offset = offset;
  }
}

/** An operation was stopped by its AbortSignal. */
export class AbortError extends LlamaError {
  override name = "AbortError";

  constructor(message = "The operation was aborted", options?: { cause?: unknown }) {
    super("ERR_ABORTED", message, options);
  }
}

/** A method was called on an object after its dispose(). */
export class DisposedError extends LlamaError {
  override name = "DisposedError";

  constructor(message: string) {
    super("ERR_DISPOSED", message);
  }

  static of(what: string): DisposedError {
    return new DisposedError(`This ${what} has been disposed; create a new one to continue`);
  }
}

/** A session would grow past the tokens its context can hold. */
export class ContextFullError extends LlamaError {
  override name = "ContextFullError";

  constructor(message: string) {
    super("ERR_CONTEXT_FULL", message);
  }
}

/** Throws ERR_INVALID_ARGUMENT with a message naming the argument. */
export function invalidArgument(name: string, expected: string, got: unknown): never {
  throw new LlamaError("ERR_INVALID_ARGUMENT", `${name} must be ${expected}; got ${describe(got)}`);
}

/** Throws ERR_INVALID_ARGUMENT unless `options` is undefined or an object (not null, not an array). */
export function checkOptions(name: string, options: unknown): void {
  if (options !== undefined && (options === null || typeof options !== "object" || Array.isArray(options))) {
    invalidArgument(name, "an object", options);
  }
}

/** Throws ERR_INVALID_ARGUMENT unless `signal` is undefined or an AbortSignal. */
export function checkSignal(signal: unknown): void {
  if (signal === undefined) return;
  const s = signal as AbortSignal | null;
  if (s === null || typeof s !== "object" || typeof s.aborted !== "boolean" || typeof s.addEventListener !== "function") {
    invalidArgument("signal", "an AbortSignal", signal);
  }
}

export function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "string") return value.length > 60 ? `a string of length ${value.length}` : JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value);
  if (typeof value === "undefined") return "undefined";
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
  return typeof value === "function" ? "a function" : `an object`;
}

/** Makes the error class that belongs to a code (used for errors raised by the native layer). */
export function createError(code: string, message: string): LlamaError {
  switch (code) {
    case "ERR_GGUF_INVALID":
      return new GgufError(message);
    case "ERR_ABORTED":
      return new AbortError(message);
    case "ERR_DISPOSED":
      return new DisposedError(message);
    case "ERR_CONTEXT_FULL":
      return new ContextFullError(message);
    default:
      return new LlamaError(isErrorCode(code) ? code : "ERR_INTERNAL", message);
  }
}

const ERROR_CODES: ReadonlySet<string> = new Set<LlamaErrorCode>([
  "ERR_INVALID_ARGUMENT", "ERR_FILE_NOT_FOUND", "ERR_FILE_UNREADABLE", "ERR_GGUF_INVALID", "ERR_MODEL_LOAD",
  "ERR_CONTEXT_CREATE", "ERR_CONTEXT_FULL", "ERR_DECODE", "ERR_DISPOSED", "ERR_ABORTED", "ERR_BUSY",
  "ERR_NO_SEQUENCE", "ERR_TOKEN_INVALID", "ERR_STATE", "ERR_GRAMMAR_INVALID", "ERR_TEMPLATE_INVALID", "ERR_TOOL_CALL", "ERR_MEDIA_INVALID", "ERR_QUANTIZE", "ERR_UNSUPPORTED",
  "ERR_RPC", "ERR_NATIVE_LOAD", "ERR_DOWNLOAD", "ERR_CHECKSUM", "ERR_INTERNAL",
]);

function isErrorCode(code: string): code is LlamaErrorCode {
  return ERROR_CODES.has(code);
}
