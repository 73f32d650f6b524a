import os from "node:os";
import path from "node:path";

import { DisposedError, LlamaError, invalidArgument } from "./errors.js";
import type { Model } from "./model.js";
import { binding, type NativeContext, type NativeContextInfo, type NativeContextStats } from "./native.js";

/** Counters of the context's decode loop. */
export type ContextStats = NativeContextStats;
import { Session } from "./session.js";

export type KvCacheType = "f16" | "f32" | "bf16" | "q8_0" | "q4_0" | "q4_1" | "q5_0" | "q5_1" | "iq4_nl";

export interface ContextOptions {
  /**
   * Tokens each session can hold (default: the model's training context, at most 4096).
   * The KV cache holds `contextSize × sequences` tokens in all.
   */
  contextSize?: number;
  /** Tokens per llama_decode call (default 512). */
  batchSize?: number;
  /** CPU threads for generation (default: the number of available CPUs). */
  threads?: number;
  /** CPU threads for prompt processing (default: `threads`). */
  threadsBatch?: number;
  /** How many sessions the context can hold at once (default 1). */
  sequences?: number;
  /** Type of the KV cache (default "f16"; quantised V caches need flash attention). */
  kvCacheType?: KvCacheType;
  /** Flash attention: "auto" (default), "on" or "off". */
  flashAttention?: "auto" | "on" | "off";
  /** One KV buffer shared by every session instead of one per session (default false). */
  unifiedKvCache?: boolean;
}

/** The default thread count: the CPUs this process may use, capped at 16. */
export function defaultThreads(): number {
  return Math.max(1, Math.min(os.availableParallelism(), 16));
}

/**
 * A context: a KV cache with room for `sequences` sessions, and the native thread that runs
 * every evaluation for it. Sessions of one context that generate at the same time are decoded
 * together in one batch.
 */
export class Context {
  readonly model: Model;
  readonly #native: NativeContext;
  readonly #info: NativeContextInfo;
  readonly #sessions = new Set<Session>();
  readonly #onDispose: Array<() => void> = [];
  #disposed = false;
  #failure: LlamaError | undefined;

  /** @internal Use model.createContext(). */
  static async create(model: Model, options: ContextOptions): Promise<Context> {
    if (options === null || typeof options !== "object") invalidArgument("options", "an object", options);
    const native = new (binding().Context)();
    try {
      await native.init(model.native, {
        ...options,
        threads: options.threads ?? defaultThreads(),
      });
    } catch (err) {
      native.dispose();
      throw err;
    }
    return new Context(model, native);
  }

  private constructor(model: Model, native: NativeContext) {
    this.model = model;
    this.#native = native;
    this.#info = native.info();
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** @internal */
  get native(): NativeContext {
    this.#check();
    return this.#native;
  }

  /** Tokens in the whole KV cache. */
  get contextSize(): number {
    return this.#info.contextSize;
  }

  /** Tokens one session can hold. */
  get sessionCapacity(): number {
    return this.#info.sessionCapacity;
  }

  get sequences(): number {
    return this.#info.sequences;
  }

  get batchSize(): number {
    return this.#info.batchSize;
  }

  get threads(): number {
    return this.#info.threads;
  }

  /** Sessions that can still be created. */
  get freeSequences(): number {
    this.#check();
    return this.#native.info().freeSequences;
  }

  /**
   * Decode counters: llama_decode calls, tokens decoded, the most sessions decoded together in
   * one batch, context shifts.
   */
  stats(): ContextStats {
    this.#check();
    return this.#native.stats();
  }

  /**
   * Applies LoRA adapters (GGUF files made for this model) with their scales; `[]` removes them.
   * Adapters are loaded once per model. Tokens already in sessions' caches were computed without
   * the new adapters: prompt again to re-evaluate them.
   */
  async setLora(adapters: ReadonlyArray<{ path: string; scale?: number }>): Promise<void> {
    this.#check();
    if (!Array.isArray(adapters)) invalidArgument("adapters", "an array of { path, scale }", adapters);
    for (const a of adapters) {
      if (a === null || typeof a !== "object" || typeof a.path !== "string" || a.path === "") {
        invalidArgument("adapters", "an array of { path: string, scale?: number }", a);
      }
      if (a.scale !== undefined && !Number.isFinite(a.scale)) invalidArgument("adapter scale", "a finite number", a.scale);
    }
    await this.#native.setLora(adapters.map((a) => ({ path: path.resolve(a.path), scale: a.scale ?? 1 })));
  }

  /** Creates a session: one sequence of this context's KV cache, with its own history. */
  createSession(): Session {
    this.#check();
    const session = new Session(this, new (binding().Session)(this.#native));
    this.#track(session);
    return session;
  }

  /** @internal Registers a session made by fork(). */
  adopt(session: Session): void {
    this.#track(session);
  }

  /** @internal */
  onDispose(listener: () => void): void {
    this.#onDispose.push(listener);
  }

  /** @internal Why the context stopped working (an RPC server failed), if it did. */
  get failure(): LlamaError | undefined {
    return this.#failure;
  }

  /**
   * @internal An RPC server this context's model uses failed: every pending and later operation
   * fails with `error` (ERR_RPC). The native decode thread may be stuck on the lost connection
   * and is left behind.
   */
  abandon(error: LlamaError): void {
    if (this.#disposed) return;
    this.#failure = error;
    this.#disposed = true;
    for (const session of [...this.#sessions]) session.fail(error);
    this.#native.abandon(error.message);
    for (const listener of this.#onDispose.splice(0)) listener();
  }

  /** Frees the KV cache and stops the context's thread. Sessions of this context stop working. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const session of [...this.#sessions]) session.dispose();
    this.#native.dispose();
    for (const listener of this.#onDispose.splice(0)) listener();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #track(session: Session): void {
    this.#sessions.add(session);
    session.onDispose(() => this.#sessions.delete(session));
  }

  #check(): void {
    if (this.#failure) throw this.#failure;
    if (this.#disposed) throw DisposedError.of("Context");
    if (this.model.disposed) throw new LlamaError("ERR_DISPOSED", "The model of this context has been disposed");
  }
}
