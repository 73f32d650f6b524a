/**
 * The server's sessions: one context with `sequences: N` holds N sessions; each request borrows
 * one (waiting in line when all are busy), and the context's decode thread batches the tokens of
 * every session that is generating. A request gets the free session whose history shares the
 * longest prefix with its prompt, so that a conversation that goes on reuses its KV cache.
 */
import type { Context } from "../context.js";
import { AbortError } from "../errors.js";
import type { Session } from "../session.js";

interface Waiter {
  tokens: ArrayLike<number>;
  resolve: (session: Session) => void;
  reject: (error: unknown) => void;
}

export class SessionPool {
  readonly #free: Session[];
  readonly #all: Session[];
  readonly #waiting: Waiter[] = [];
  #closed = false;

  constructor(context: Context, size: number) {
    this.#all = Array.from({ length: size }, () => context.createSession());
    this.#free = [...this.#all];
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

  /** A free session (the one whose history best matches `tokens`); waits when all are busy. */
  acquire(tokens: ArrayLike<number>, signal?: AbortSignal): Promise<Session> {
    if (this.#closed) return Promise.reject(new AbortError("The server is closing"));
    if (signal?.aborted) return Promise.reject(new AbortError("The request was aborted"));
    if (this.#free.length > 0) return Promise.resolve(this.#take(tokens));
    return new Promise<Session>((resolve, reject) => {
      const waiter: Waiter = { tokens, resolve, reject };
      this.#waiting.push(waiter);
      signal?.addEventListener(
        "abort",
        () => {
          const at = this.#waiting.indexOf(waiter);
          if (at >= 0) {
            this.#waiting.splice(at, 1);
            reject(new AbortError("The request was aborted while it waited for a session"));
          }
        },
        { once: true },
      );
    });
  }

  /** Gives a session back; the first waiting request gets it. */
  release(session: Session): void {
    if (this.#closed) return;
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
      const shared = commonPrefix(this.#free[i].tokens, tokens);
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
