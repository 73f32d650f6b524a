/**
 * The options of `resolveModelFile()` (and of `llama-napi pull`, whose flags come from here).
 */
import { signalOption } from "./generate.js";
import { boolean, custom, integer, invalidValue, string, type OptionsOf } from "./spec.js";

/** How far a download is, as given to `onProgress`. */
export interface DownloadProgress {
  /** Bytes of the file on disk so far (those of a resumed partial download included). */
  downloadedBytes: number;
  /** The file's size, when the server says it. */
  totalBytes: number | undefined;
  /** Bytes that were already on disk from an earlier, interrupted download (0 for a fresh one). */
  resumedFromBytes: number;
}

export const DOWNLOAD_OPTIONS = {
  /**
   * The folder to download into, as `DIR/FILE.gguf` (default: the cache folder,
   * `LLAMA_NAPI_MODELS` or `~/.cache/llama-napi/models`, as `OWNER/REPO/FILE.gguf` for `hf:` and
   * `HOST/PATH` for URLs).
   */
  directory: string({ flag: { name: "output", aliases: ["-o"], arg: "DIR", help: "download into DIR instead of the cache folder" } }),
  /** Download again even when the file is there already (default false: a file there is used as it is). */
  force: boolean({ default: false, flag: { name: "force", help: "download again even when the file is there already" } }),
  /** Times an interrupted transfer is resumed (with an HTTP Range request) before giving up (default 3). */
  retries: integer({ min: 0, max: 100, default: 3, flag: { name: "retries", arg: "N", help: "times an interrupted transfer is resumed" } }),
  /** Called as bytes arrive (at most about ten times a second, and once at the end). */
  onProgress: custom<(progress: DownloadProgress) => void>({
    expected: "a function",
    parse: (v) => (typeof v === "function" ? (v as (progress: DownloadProgress) => void) : invalidValue("a function")),
  }),
  /** Stops the download (ERR_ABORTED); the partial file is kept, and the next call resumes it. */
  signal: signalOption,
} as const;

/**
 * Options of `resolveModelFile()`.
 * @interface
 */
export type ResolveModelFileOptions = OptionsOf<typeof DOWNLOAD_OPTIONS>;
