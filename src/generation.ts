import { AbortError, LlamaError } from "./errors.js";
import type { NativeGenerateOptions, NativeGenerationDone, NativeLogprobs, NativePromptDone, NativeSession } from "./native.js";

/** One generated token and the text it releases. */
export interface GeneratedToken {
  token: number;
  /**
   * Text that became final with this token. It can be "" when the token holds part of a UTF-8
   * character or the start of a possible stop string; that text comes with a later token.
   */
  text: string;
  /** With `logprobs`: the natural log of the token's probability under the model. */
  logprob?: number;
  /** With `logprobs: n`: the n most likely tokens at this step, most likely first. */
  top?: Array<{ token: number; logprob: number }>;
}

/** Why a generation ended. */
export type FinishReason = "eog" | "length" | "stop" | "aborted";

/** A whole generation, as `generation.collect()` gives it: the text, its tokens and why it ended. */
export interface GenerationResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  /** With the `lookup` option: the draft tokens decoded and those kept (see {@link Generation.lookup}). */
  lookup?: DraftStats;
  /** With the `speculative` option: the draft model's tokens decoded and those kept. */
  speculative?: DraftStats;
}

/** What n-gram lookup or a draft model did in one generation. */
export interface DraftStats {
  /** Draft tokens decoded beside the generated ones. */
  drafted: number;
  /** Draft tokens that sampling confirmed: each saved one decode. */
  accepted: number;
}

/** What `session.prompt()` did: tokens evaluated, tokens reused from the KV cache, and the history's new length. */
export interface PromptResult {
  /** Tokens decoded by this call. */
  evaluated: number;
  /** Tokens of the new history that were already in the KV cache. */
  reused: number;
  /** Tokens the session now holds. */
  length: number;
  /** A prompt with images or audio: the positions each item took, in order. */
  media?: number[];
  /** An encoder-decoder model: the tokens the encoder read, when the input was new (0 or absent: its output was reused). */
  encoded?: number;
}

/** Items buffered before the native loop pauses, waiting for the consumer. */
const HIGH_WATER_MARK = 1024;
const LOW_WATER_MARK = 256;

/**
 * A running generation: an AsyncIterable of tokens. The native loop decodes, samples and checks
 * stop conditions on its own thread and hands tokens over in batches; when the consumer falls
 * behind by HIGH_WATER_MARK tokens, the loop pauses for it.
 *
 * ```ts
 * for await (const { text } of session.generate({ maxTokens: 50 })) process.stdout.write(text);
 * ```
 */
export class Generation implements AsyncIterable<GeneratedToken> {
  #native: NativeSession | undefined;
  #items: GeneratedToken[] = [];
  #head = 0;
  #done: NativeGenerationDone | undefined;
  #error: LlamaError | undefined;
  #wake: (() => void) | undefined;
  #paused = false;
  #iterated = false;
  #abortRequested = false;
  #settled!: () => void;
  readonly #finished = new Promise<void>((resolve) => (this.#settled = resolve));
  #promptDone!: (result: PromptResult | undefined) => void;
  #promptFailed!: (error: LlamaError) => void;
  #promptSettled = false;
  readonly #prompted = new Promise<PromptResult | undefined>((resolve, reject) => {
    this.#promptDone = (result) => {
      this.#promptSettled = true;
      resolve(result);
    };
    this.#promptFailed = (error) => {
      this.#promptSettled = true;
      reject(error);
    };
  });

  /** @internal Use session.generate(). */
  constructor(
    private readonly options: NativeGenerateOptions,
    signal: AbortSignal | undefined,
  ) {
    // Nobody has to wait for it: its failure is the generation's, seen when iterating.
    this.#prompted.catch(() => {});
    if (options.prompt === undefined) this.#promptDone(undefined);
    if (signal) {
      const onAbort = () => this.#abortWith(new AbortError("The generation was aborted", { cause: signal.reason }));
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener("abort", onAbort, { once: true });
        // A long-lived signal (one per server, say) must not collect a listener per generation.
        void this.#finished.then(() => signal.removeEventListener("abort", onAbort));
      }
    }
  }

  /**
   * With the `prompt` option: resolves once the prompt is in the KV cache, with what `prompt()`
   * would have returned (the first token is sampled in the same decode); rejects when the
   * generation ends before that, with its error (an AbortError when it was aborted). Without
   * `prompt`: resolves with undefined.
   */
  get prompted(): Promise<PromptResult | undefined> {
    return this.#prompted;
  }

  /** Why the generation ended; undefined while it runs. */
  get finishReason(): FinishReason | undefined {
    const r = this.#done?.reason;
    return r === "eog" || r === "length" || r === "stop" || r === "aborted" ? r : undefined;
  }

  /** With the `lookup` option, once the generation has ended: what the drafts did. */
  get lookup(): DraftStats | undefined {
    return this.options.lookup === undefined ? undefined : this.#draftStats();
  }

  /** With the `speculative` option, once the generation has ended: what the draft model did. */
  get speculative(): DraftStats | undefined {
    return this.options.speculative === undefined ? undefined : this.#draftStats();
  }

  #draftStats(): DraftStats | undefined {
    const d = this.#done;
    return d?.drafted === undefined || d.accepted === undefined ? undefined : { drafted: d.drafted, accepted: d.accepted };
  }

  /**
   * @internal Starts the native loop; resolves when it has ended. `encoderPrompt`: an
   * encoder-decoder model's prompt, which goes through `native.prompt()` first (the native
   * generate() takes none there), and the session's length after it.
   */
  async start(native: NativeSession, encoderPrompt?: { tokens: Int32Array; historyLength: () => number }): Promise<void> {
    // Aborted before it started (generate() starts it on a later tick): nothing runs.
    if (this.#abortRequested) this.#done ??= { reason: "aborted" };
    if (this.#error || this.#done) return this.#end();
    this.#native = native;
    if (encoderPrompt) {
      try {
        const r = await native.prompt(encoderPrompt.tokens, false);
        const length = encoderPrompt.historyLength();
        this.#promptDone({ evaluated: r.evaluated, reused: r.reused, length, ...(r.encoded === undefined ? {} : { encoded: r.encoded }) });
      } catch (err) {
        // Stopped by abort(): the generation ends as "aborted", as it does within a native prompt.
        if (this.#abortRequested && err instanceof LlamaError && err.code === "ERR_ABORTED") this.#done ??= { reason: "aborted" };
        else this.#fail(err instanceof LlamaError ? err : new LlamaError("ERR_INTERNAL", String(err)));
      }
      if (this.#error || this.#done) return this.#end();
    }
    try {
      // The encoder's prompt is in: the native generation takes none.
      const { prompt: _encoded, ...withoutPrompt } = this.options;
      native.generate(encoderPrompt ? withoutPrompt : this.options, (tokens, texts, done, logprobs, prompted) => this.#onChunk(tokens, texts, done, logprobs, prompted));
      // Asked while the encoder's prompt ran.
      if (this.#abortRequested) native.abort();
    } catch (err) {
      this.#fail(err instanceof LlamaError ? err : new LlamaError("ERR_INTERNAL", String(err)));
      return this.#end();
    }
    return this.#finished;
  }

  #end(): Promise<void> {
    if (!this.#promptSettled) this.#promptFailed(this.#error ?? this.#done?.error ?? new AbortError("The generation ended before its prompt was evaluated"));
    this.#settled();
    this.#wakeUp();
    return this.#finished;
  }

  /** @internal Ends the generation without starting it (its session went away). */
  cancel(error: LlamaError): void {
    this.#abortWith(error);
    void this.#end();
  }

  /** Stops the generation (within its prompt too); iteration ends after the tokens already produced. */
  abort(): void {
    this.#abortRequested = true;
    this.#native?.abort();
  }

  /** Consumes the generation and returns all of its text and tokens. */
  async collect(): Promise<GenerationResult> {
    const tokens: number[] = [];
    let text = "";
    for await (const item of this) {
      tokens.push(item.token);
      text += item.text;
    }
    const { lookup, speculative } = this;
    return {
      text,
      tokens,
      finishReason: this.finishReason ?? "aborted",
      ...(lookup === undefined ? {} : { lookup }),
      ...(speculative === undefined ? {} : { speculative }),
    };
  }

  /** Consumes the generation and returns its text. */
  async text(): Promise<string> {
    return (await this.collect()).text;
  }

  [Symbol.asyncIterator](): AsyncIterator<GeneratedToken> {
    if (this.#iterated) throw new LlamaError("ERR_STATE", "A generation can be iterated only once");
    this.#iterated = true;
    return {
      next: () => this.#next(),
      return: async () => {
        this.abort();
        this.#items = [];
        this.#head = 0;
        return { done: true, value: undefined };
      },
    };
  }

  async #next(): Promise<IteratorResult<GeneratedToken>> {
    for (;;) {
      if (this.#error) {
        // Stopped by its AbortSignal: the AbortError surfaces once the native loop has ended, so
        // that the session is idle (not ERR_BUSY) for whatever the caller does next. A disposed
        // session or context settles #finished at once.
        if (this.#native && !this.#done) await this.#finished;
        throw this.#error;
      }
      if (this.#head < this.#items.length) {
        const value = this.#items[this.#head++];
        if (this.#head === this.#items.length) {
          this.#items = [];
          this.#head = 0;
        }
        if (this.#paused && this.#items.length - this.#head <= LOW_WATER_MARK) {
          this.#paused = false;
          this.#native?.setPaused(false);
        }
        return { done: false, value };
      }
      if (this.#done) {
        if (this.#done.error) throw this.#done.error;
        return { done: true, value: undefined };
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  #onChunk(
    tokens: Int32Array,
    texts: string[],
    done: NativeGenerationDone | undefined,
    logprobs: NativeLogprobs | undefined,
    prompted: NativePromptDone | undefined,
  ): void {
    // The prompt became the whole history (the native side reports it before any token).
    if (prompted) this.#promptDone({ evaluated: prompted.evaluated, reused: prompted.reused, length: this.options.prompt?.length ?? 0 });
    for (let i = 0; i < tokens.length; i++) {
      const item: GeneratedToken = { token: tokens[i], text: texts[i] };
      if (logprobs) {
        item.logprob = logprobs[0][i];
        const [ids, lps] = logprobs[1][i];
        if (ids.length > 0) item.top = Array.from(ids, (token, k) => ({ token, logprob: lps[k] }));
      }
      this.#items.push(item);
    }
    if (!this.#paused && !done && this.#items.length - this.#head >= HIGH_WATER_MARK) {
      this.#paused = true;
      this.#native?.setPaused(true);
    }
    if (done) {
      this.#done = done;
      void this.#end();
    }
    this.#wakeUp();
  }

  #abortWith(error: LlamaError): void {
    if (this.#done) return;
    this.#error ??= error;
    this.#native?.abort();
    this.#wakeUp();
  }

  #fail(error: LlamaError): void {
    this.#error ??= error;
    this.#done ??= { reason: "error", error };
    this.#wakeUp();
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
