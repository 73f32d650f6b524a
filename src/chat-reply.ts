/**
 * What the replies of chat.send() share (ChatReply in src/chat-session.ts, ChatToolReply in
 * src/chat-tool-reply.ts): an AsyncIterable consumed once, a `result` that settles when the turn
 * ends however it is consumed, collect() / text(), and abort(), which ends the reply quietly.
 */
import { LlamaError } from "./errors.js";

/** A reply to one message: `Item`s as they are generated, then a `Result`. */
export abstract class ChatReplyBase<Item, Result> implements AsyncIterable<Item> {
  /** Settles when the turn has ended, however it is consumed. */
  readonly result: Promise<Result>;
  readonly #stopper: AbortController;
  #resolve!: (r: Result) => void;
  #reject!: (e: unknown) => void;
  #iterated = false;
  #quiet = false;

  /** @internal */
  constructor(stopper: AbortController) {
    this.#stopper = stopper;
    this.result = new Promise<Result>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.result.catch(() => undefined); // errors also reach the consumer through iteration
  }

  /** The reply as it is generated; throws ERR_STATE when the reply was consumed already. */
  [Symbol.asyncIterator](): AsyncIterator<Item> {
    if (this.#iterated) throw new LlamaError("ERR_STATE", "A chat reply can be consumed only once");
    this.#iterated = true;
    return this.iterate();
  }

  /** Consumes the reply (unless it is being consumed already) and resolves to the turn's result. */
  async collect(): Promise<Result> {
    if (!this.#iterated) for await (const _ of this);
    return this.result;
  }

  /** Consumes the reply and resolves to its (final) text. */
  abstract text(): Promise<string>;

  /** Stops the reply; what was generated so far joins the history. */
  abort(): void {
    this.#quiet = true;
    this.#stopper.abort();
    if (!this.#iterated) this.collect().catch(() => undefined);
  }

  /** @internal The generation, as the subclass reads it. */
  protected abstract iterate(): AsyncGenerator<Item>;

  /** @internal */
  protected resolve(result: Result): void {
    this.#resolve(result);
  }

  /** @internal */
  protected reject(error: unknown): void {
    this.#reject(error);
  }

  /** @internal abort() was called: an abort ends the reply without an AbortError. */
  protected get quiet(): boolean {
    return this.#quiet;
  }

  /** @internal The controller that stops the generation (reply.abort(), the send's signal). */
  protected get stopper(): AbortController {
    return this.#stopper;
  }
}
