/**
 * The server's sessions: one context with `sequences: N` holds N sessions; each request borrows
 * one (waiting in line when all are busy), and the context's decode thread batches the tokens of
 * every session that is generating. A request gets the free session whose history shares the
 * longest prefix with its prompt, so that a conversation that goes on reuses its KV cache.
 */
import type { Context } from "../context.js";
import { AbortError, LlamaError, invalidArgument } from "../errors.js";
import type { Session } from "../session.js";
import { unavailable } from "./http.js";

interface Waiter {
  tokens: ArrayLike<number>;
  resolve: (session: Session) => void;
  reject: (error: unknown) => void;
}

export interface SessionPoolOptions {
  /**
   * Requests that may wait for a session at once (default: no limit); one more is refused with
   * a 503 (code "queue_full", Retry-After). 0: a request that finds every session busy is refused.
   */
  maxQueue?: number;
}

export class SessionPool {
  readonly #free: Session[];
  readonly #all: Session[];
  readonly #waiting: Waiter[] = [];
  readonly #maxQueue: number;
  #closed = false;

  constructor(context: Context, size: number, options: SessionPoolOptions = {}) {
    const maxQueue = options.maxQueue ?? Infinity;
    if (maxQueue !== Infinity && (!Number.isInteger(maxQueue) || maxQueue < 0)) invalidArgument("maxQueue", "a non-negative integer or Infinity", maxQueue);
    this.#maxQueue = maxQueue;
    this.#all = Array.from({ length: size }, () => context.createSession());
    this.#free = [...this.#all];
  }

  /** Requests that may wait at once (Infinity: no limit). */
  get maxQueue(): number {
    return this.#maxQueue;
  }

  get size(): number {
    return this.#all.length;
  }

  get busy(): number {
    return this.#all.length - this.#free.length;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  /**
   * A free session (the one whose history best matches `tokens`); waits in line when all are
   * busy, or rejects with a 503 HttpError when `maxQueue` requests wait already. An abort of
   * `signal` takes the request out of the line (an AbortError whose cause is the signal's reason).
   */
  acquire(tokens: ArrayLike<number>, signal?: AbortSignal): Promise<Session> {
    if (this.#closed) return Promise.reject(new AbortError("The server is closing"));
    if (signal?.aborted) return Promise.reject(new AbortError("The request was aborted", { cause: signal.reason }));
    if (this.#free.length > 0) return Promise.resolve(this.#take(tokens));
    if (this.#waiting.length >= this.#maxQueue) {
      return Promise.reject(
        unavailable(`The server is busy: all ${this.#all.length} sessions are generating and ${this.#waiting.length} requests wait (the limit); retry later`, "queue_full", 1),
      );
    }
    return new Promise<Session>((resolve, reject) => {
      const onAbort = () => {
        const at = this.#waiting.indexOf(waiter);
        if (at >= 0) {
          this.#waiting.splice(at, 1);
          reject(new AbortError("The request was aborted while it waited for a session", { cause: signal?.reason }));
        }
      };
      const waiter: Waiter = {
        tokens,
        resolve: (session) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(session);
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      this.#waiting.push(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Gives a session back; the first waiting request gets it. */
  release(session: Session): void {
    if (this.#closed) return;
    if (!this.#all.includes(session) || this.#free.includes(session)) throw new LlamaError("ERR_STATE", "release() of a session that is not borrowed from this pool");
    const next = this.#waiting.shift();
    if (next) next.resolve(session);
    else this.#free.push(session);
  }

  /** Rejects every waiting request; sessions are freed with their context. */
  close(): void {
    this.#closed = true;
    for (const waiter of this.#waiting.splice(0)) waiter.reject(new AbortError("The server is closing"));
  }

  #take(tokens: ArrayLike<number>): Session {
    let best = 0;
    let bestShared = -1;
    for (let i = 0; i < this.#free.length; i++) {
      // An encoder-decoder model's prompt is its encoder's input (its history is the decoder's).
      const session = this.#free[i];
      const shared = commonPrefix(session.context.model.info.decoderStartToken === null ? session.tokens : session.encoderTokens, tokens);
      if (shared > bestShared) {
        best = i;
        bestShared = shared;
      }
    }
    return this.#free.splice(best, 1)[0];
  }
}

function commonPrefix(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}
