import path from "node:path";

import { DisposedError, LlamaError, invalidArgument } from "./errors.js";
import type { Model } from "./model.js";
import { binding, type NativeContext, type NativeContextInfo, type NativeContextOptions, type NativeContextStats } from "./native.js";

import { CONTEXT_OPTIONS, type ContextOptions } from "./options/context.js";
import { readOptions, type ParsedOptions } from "./options/spec.js";
import { Session } from "./session.js";

export { defaultThreads, type ContextOptions, type KvCacheType } from "./options/context.js";

/**
 * Counters of the context's decode loop.
 * @interface
 */
export type ContextStats = NativeContextStats;

/** @internal Makes and initialises a native context (freed again if that fails). */
export async function createNativeContext(model: Model, options: NativeContextOptions): Promise<NativeContext> {
  const native = new (binding().Context)();
  try {
    await native.init(model.native, options);
  } catch (err) {
    native.dispose();
    throw err;
  }
  return native;
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
    const settings = readOptions(CONTEXT_OPTIONS, options, "context options", {
      defaults: true,
      scope: { trainingContext: model.info.trainContextSize },
    }) as Required<ParsedOptions<typeof CONTEXT_OPTIONS>>;
    return new Context(model, await createNativeContext(model, { ...settings, embeddings: false }));
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

  /** Tokens one session can hold: the `contextSize` it was created with. */
  get contextSize(): number {
    return this.#info.sessionCapacity;
  }

  /** Tokens in the whole KV cache: `contextSize × sequences`. */
  get kvCacheSize(): number {
    return this.#info.contextSize;
  }

  /** How many sessions the context can hold at once. */
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
