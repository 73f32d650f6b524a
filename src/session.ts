import fs from "node:fs";
import path from "node:path";

import type { Context } from "./context.js";
import { AbortError, DisposedError, LlamaError, checkOptions, checkSignal, invalidArgument } from "./errors.js";
import { Generation, type PromptResult } from "./generation.js";
import { isPromptParts, readPromptParts, type PromptPart } from "./media.js";
import type { NativeSession } from "./native.js";
import { GENERATE_OPTIONS, type GenerateOptions, type LookupOptions, type SpeculativeOptions } from "./options/generate.js";
import { readOptions } from "./options/spec.js";
import { optionKeys, rejectUnknownKeys } from "./options/suggest.js";
import { toTokenArray } from "./tokens.js";
import { buildTraceResult, type TraceOptions, type TraceResult } from "./trace.js";

/** Options of `session.prompt()`. */
export interface PromptOptions {
  /**
   * false (default): the input becomes the session's whole history; the longest prefix it
   * shares with the current history is reused from the KV cache and only the rest is evaluated.
   * true: the input is added after the current history.
   */
  append?: boolean;
  /** When the input is text: add the model's BOS/EOS (default: only at the start of a session). */
  addSpecial?: boolean;
  /** When the input is text: parse special-token text such as "<|endoftext|>" (default false). */
  parseSpecial?: boolean;
  signal?: AbortSignal;
}

export type { GenerateOptions, LookupOptions, SpeculativeOptions };

export type { PromptResult };

const PROMPT_KEYS = optionKeys<PromptOptions>({ append: true, addSpecial: true, parseSpecial: true, signal: true });
const TRACE_KEYS = optionKeys<TraceOptions>({
  attention: true,
  hiddenStates: true,
  logitLens: true,
  layers: true,
  topK: true,
  addSpecial: true,
  signal: true,
});

/**
 * A session: one sequence in a context's KV cache, with its own token history and position.
 * Operations on a session run one after another in the order they were called.
 */
export class Session {
  readonly context: Context;
  readonly #native: NativeSession;
  readonly #onDispose: Array<() => void> = [];
  #queue: Promise<unknown> = Promise.resolve();
  #current: Generation | undefined;
  #disposed = false;

  /** @internal Use context.createSession(). */
  constructor(context: Context, native: NativeSession) {
    this.context = context;
    this.#native = native;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Tokens the session holds (its history). */
  get length(): number {
    this.#check();
    return this.#historyLength();
  }

  /** The session's history: every token it holds, prompts and generated tokens alike. */
  get tokens(): Int32Array {
    this.#check();
    return this.#native.history();
  }

  /**
   * An encoder-decoder model (T5): the encoder's input, set by `prompt()`; `tokens` is then the
   * decoder's history. Empty for other models.
   */
  get encoderTokens(): Int32Array {
    this.#check();
    return this.#native.encoderTokens();
  }

  /** Tokens this session can hold. */
  get capacity(): number {
    return this.context.contextSize;
  }

  /**
   * Evaluates a prompt off the event loop. With `append: false` (the default) the input becomes
   * the whole history and a shared prefix is reused; see PromptOptions.
   *
   * The input is text, token ids, or a list of parts with images and audio (a model with a
   * projector, src/media.ts): `["Describe ", { image: "photo.png" }, " briefly."]`. A media item
   * takes many positions in the history, which hold -1 in `session.tokens`; the same bytes at the
   * same place are reused from the cache, not encoded again.
   *
   * On an encoder-decoder model (T5, `model.info.decoderStartToken !== null`) the input goes to
   * the encoder and the decoder's history starts over from the decoder start token, ready for
   * generate(); with `append: true` the input is added to the decoder's history instead.
   */
  prompt(input: string | ArrayLike<number> | readonly PromptPart[], options: PromptOptions = {}): Promise<PromptResult> {
    this.#check();
    checkOptions("prompt options", options);
    rejectUnknownKeys("prompt options", options, PROMPT_KEYS);
    const append = options.append ?? false;
    if (typeof append !== "boolean") invalidArgument("append", "a boolean", append);
    const { signal } = options;
    checkSignal(signal);
    if (signal?.aborted) return Promise.reject(new AbortError("The prompt was aborted", { cause: signal.reason }));
    return this.#enqueue(async () => {
      let parts = isPromptParts(input) ? await this.#readParts(input) : undefined;
      const text = parts && parts.media.length === 0 ? parts.text : typeof input === "string" ? input : undefined;
      if (text !== undefined) parts = undefined; // text only
      // Text gets the model's BOS/EOS by default only at the start of a session.
      const addSpecial = options.addSpecial ?? (!append || this.#historyLength() === 0);
      const parseSpecial = options.parseSpecial ?? false;
      const tokens = text === undefined ? undefined : this.context.model.tokenize(text, { addSpecial, parseSpecial });
      const onAbort = () => this.#native.abort();
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        if (parts) {
          const r = await this.#native.promptMedia(parts.text, parts.media, append, addSpecial, parseSpecial);
          return { evaluated: r.evaluated, reused: r.reused, length: this.#historyLength(), media: r.media };
        }
        const r = await this.#native.prompt(tokens ?? toTokenArray(input as ArrayLike<number>), append);
        return { evaluated: r.evaluated, reused: r.reused, length: this.#historyLength(), ...(r.encoded === undefined ? {} : { encoded: r.encoded }) };
      } catch (err) {
        if (signal?.aborted && err instanceof LlamaError && err.code === "ERR_ABORTED") {
          throw new AbortError(err.message, { cause: signal.reason });
        }
        throw err;
      } finally {
        signal?.removeEventListener("abort", onAbort);
      }
    });
  }

  /**
   * The next-token logits after the last evaluated token: a Float32Array of length n_vocab that
   * views native memory (no copy). The same array is returned each time; its contents are valid
   * until this session evaluates again, so copy it (`.slice()`) to keep it.
   */
  logits(): Float32Array {
    this.#check();
    return this.#native.logits();
  }

  /** Generates tokens after the session's history. Temperature 0 is greedy. */
  generate(options: GenerateOptions = {}): Generation {
    this.#check();
    const { prompt, maxTokens, stop, signal, logprobs, contextShift, logitsProcessor, preservedTokens, lookup, speculative, ...sampling } = readOptions(GENERATE_OPTIONS, options, "generate options", { defaults: true });
    // Text as prompt() tokenizes it at the start of a history; an encoder-decoder model's prompt
    // goes to its encoder through prompt() (see Generation.start).
    const promptTokens = prompt === undefined ? undefined : typeof prompt === "string" ? this.context.model.tokenize(prompt, { addSpecial: true }) : toTokenArray(prompt);
    const encoderPrompt =
      promptTokens !== undefined && this.context.model.info.decoderStartToken !== null ? { tokens: promptTokens, historyLength: () => this.#historyLength() } : undefined;
    const generation = new Generation(
      {
        ...(promptTokens === undefined ? {} : { prompt: promptTokens }),
        maxTokens,
        stop: stop ?? [],
        sampling,
        logprobs: logprobs === false ? undefined : logprobs,
        contextShift: this.#contextShift(contextShift),
        logitsProcessor,
        ...(preservedTokens === undefined ? {} : { preservedTokens: [...preservedTokens] }),
        ...(lookup === undefined || lookup === false ? {} : { lookup }),
        ...(speculative === undefined ? {} : { speculative: { ...speculative, draft: speculative.draft.native } }),
      },
      signal,
    );
    this.#enqueue(() => {
      this.#current = generation;
      return generation.start(this.#native, encoderPrompt).finally(() => {
        if (this.#current === generation) this.#current = undefined;
      });
    }).catch((err: unknown) => generation.cancel(err instanceof LlamaError ? err : new LlamaError("ERR_INTERNAL", String(err))));
    return generation;
  }

  /**
   * Evaluates `input` after the history, like `prompt(input, { append: true })`, and captures
   * what happens inside the model: attention probabilities per layer and head, the residual
   * stream after each layer, the logit lens, and the next-token distribution. Capture runs in a
   * separate context with flash attention off; the session's cache is carried over both ways, so
   * the attention of new tokens covers the whole cached history. Without trace() nothing of this
   * costs anything.
   */
  trace(input: string | ArrayLike<number>, options: TraceOptions = {}): Promise<TraceResult> {
    this.#check();
    checkOptions("trace options", options);
    rejectUnknownKeys("trace options", options, TRACE_KEYS);
    const topK = options.topK ?? 10;
    if (!Number.isInteger(topK) || topK < 1) invalidArgument("topK", "a positive integer", topK);
    const lensK = options.logitLens === true ? 5 : options.logitLens === false || options.logitLens === undefined ? 0 : options.logitLens;
    if (!Number.isInteger(lensK) || lensK < 0 || lensK > 100) invalidArgument("logitLens", "a boolean or an integer from 0 to 100", options.logitLens);
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(new AbortError("The trace was aborted", { cause: signal.reason }));
    return this.#enqueue(async () => {
      const tokens =
        typeof input === "string"
          ? this.context.model.tokenize(input, {
              addSpecial: (options.addSpecial ?? true) && this.#native.history().length === 0,
            })
          : toTokenArray(input);
      const raw = await this.#native.trace(tokens, {
        attention: options.attention ?? true,
        hiddenStates: options.hiddenStates ?? true,
        logitLens: lensK,
        layers: options.layers === undefined ? undefined : [...options.layers],
      });
      if (signal?.aborted) throw new AbortError("The trace was aborted", { cause: signal.reason });
      return buildTraceResult(raw, this.context.model, topK, lensK);
    });
  }

  /** Drops the last `count` tokens of the history. */
  rewind(count: number): void {
    this.#check();
    const length = this.#native.history().length;
    if (!Number.isInteger(count) || count < 0 || count > length) {
      invalidArgument("count", `an integer from 0 to ${length}`, count);
    }
    this.#native.truncate(length - count);
  }

  /** Keeps the first `length` tokens of the history and drops the rest. */
  truncate(length: number): void {
    this.#check();
    const current = this.#native.history().length;
    if (!Number.isInteger(length) || length < 0 || length > current) {
      invalidArgument("length", `an integer from 0 to ${current}`, length);
    }
    this.#native.truncate(length);
  }

  /** A new session of the same context holding this session's history and KV cache (no re-evaluation). */
  fork(): Promise<Session> {
    this.#check();
    return this.#enqueue(async () => {
      const child = this.context.createSession();
      try {
        await this.#native.fork(child.#native);
      } catch (err) {
        child.dispose();
        throw err;
      }
      return child;
    });
  }

  /** The session's state (history, KV cache and current logits) as a Buffer. */
  saveState(): Promise<Buffer> {
    this.#check();
    return this.#enqueue(() => this.#native.saveState());
  }

  /** Restores a state from saveState(); the session then continues as the saved one would. */
  loadState(data: Uint8Array): Promise<void> {
    this.#check();
    if (!(data instanceof Uint8Array)) invalidArgument("data", "a Buffer or Uint8Array", data);
    return this.#enqueue(() => this.#native.loadState(data));
  }

  /** Saves the state to a file atomically (a temporary file is written, then renamed). */
  async saveStateFile(filePath: string): Promise<void> {
    if (typeof filePath !== "string" || filePath === "" || filePath.includes("\0")) {
      invalidArgument("filePath", "a non-empty string without NUL characters", filePath);
    }
    const data = await this.saveState();
    const target = path.resolve(filePath);
    const temp = `${target}.${process.pid}.${Date.now()}.tmp`;
    try {
      await fs.promises.writeFile(temp, data, { flush: true });
      await fs.promises.rename(temp, target);
    } catch (err) {
      await fs.promises.rm(temp, { force: true });
      throw new LlamaError("ERR_STATE", `Could not write the state file ${target}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Restores the state from a file written by saveStateFile(). */
  async loadStateFile(filePath: string): Promise<void> {
    if (typeof filePath !== "string" || filePath === "" || filePath.includes("\0")) {
      invalidArgument("filePath", "a non-empty string without NUL characters", filePath);
    }
    let data: Buffer;
    try {
      // Only a regular file: reading a FIFO with no writer would wait forever.
      const stat = await fs.promises.stat(filePath);
      if (!stat.isFile()) throw Object.assign(new Error(`${filePath} is not a regular file`), { code: "ENOTFILE" });
      data = await fs.promises.readFile(filePath);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code === "ENOENT" ? "ERR_FILE_NOT_FOUND" : "ERR_FILE_UNREADABLE";
      throw new LlamaError(code, `Could not read the state file ${filePath}: ${(err as Error).message}`, { cause: err });
    }
    await this.loadState(data);
  }

  /** @internal */
  onDispose(listener: () => void): void {
    this.#onDispose.push(listener);
  }

  /** @internal The context failed (RPC): end what is running with `error`; later calls throw it. */
  fail(error: LlamaError): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#current?.cancel(error);
    for (const listener of this.#onDispose.splice(0)) listener();
  }

  /** Frees the session's sequence (a running generation or prompt is aborted). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#current?.cancel(DisposedError.of("Session"));
    this.#native.dispose();
    for (const listener of this.#onDispose.splice(0)) listener();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #contextShift(option: boolean | { keep: number | undefined } | undefined): { keep?: number } | undefined {
    if (option === undefined || option === false) return undefined;
    if (option === true) return { keep: this.context.model.specialTokens.addBos ? 1 : 0 };
    return option.keep === undefined ? {} : { keep: option.keep };
  }

  async #readParts(parts: readonly PromptPart[]): Promise<{ text: string; media: Uint8Array[] }> {
    const projector = this.context.model.info.projector;
    if (projector === null && parts.some((p) => p !== null && typeof p === "object" && ("image" in p || "audio" in p))) {
      throw new LlamaError("ERR_STATE", "This model has no projector for images or audio: load one with model.loadProjector(path) or loadModel(path, { projector })");
    }
    return readPromptParts(parts, projector ?? { image: false, audio: false });
  }

  /** The history's length, without copying the history (the session is idle). */
  #historyLength(): number {
    return this.#native.info().length ?? this.#native.history().length;
  }

  #enqueue<T>(operation: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(() => {
      this.#check();
      return operation();
    });
    this.#queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  #check(): void {
    if (this.context.failure) throw this.context.failure;
    if (this.#disposed) throw DisposedError.of("Session");
    if (this.context.disposed) throw new LlamaError("ERR_DISPOSED", "The context of this session has been disposed");
  }
}
