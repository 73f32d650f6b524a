/**
 * The options of `session.generate()` beside sampling: when to stop, what to report, what to do
 * when the session is full. Together with {@link SAMPLING_OPTIONS} they make `GenerateOptions`.
 */
import type { Model } from "../model.js";
import { SAMPLING_OPTIONS } from "./sampling.js";
import { custom, integer, invalidValue, strings, type OptionsOf } from "./spec.js";

function stopStrings(v: unknown): string[] {
  const expected = "a non-empty string or an array of at most 64 non-empty strings";
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.length > 64 || list.some((s) => typeof s !== "string" || s === "")) invalidValue(expected);
  return [...(list as string[])];
}

function abortSignal(v: unknown): AbortSignal {
  const s = v as AbortSignal | null;
  if (s === null || typeof s !== "object" || typeof s.aborted !== "boolean" || typeof s.addEventListener !== "function") {
    invalidValue("an AbortSignal");
  }
  return s;
}

/** Checks an `AbortSignal` option (shared by the tables that take one). */
export const signalOption = custom<AbortSignal>({ expected: "an AbortSignal", parse: abortSignal });

/** Settings of n-gram lookup decoding (the `lookup` option of `generate()`). */
export interface LookupOptions {
  /** The longest n-gram matched (1-16, default 3). */
  ngramSize?: number;
  /** The shortest n-gram matched (default 2, or ngramSize when that is 1). */
  ngramMin?: number;
  /** The longest draft (1-64, default 8). */
  maxDraft?: number;
}

/** Speculative decoding with a draft model (the `speculative` option of `generate()`). */
export interface SpeculativeOptions {
  /** A model that shares the target's vocabulary: a smaller or more quantized one of its family. */
  draft: Model;
  /** The longest draft (1-64, default 8); it halves after a miss and doubles after a full hit. */
  maxDraft?: number;
  /** Stop a draft at a token the draft model gives less than this probability (0-1, default 0). */
  minProbability?: number;
}

function speculative(v: unknown): Required<SpeculativeOptions> {
  const shape = "{ draft: a Model, maxDraft: 1-64, minProbability: 0-1 }";
  if (v === null || typeof v !== "object" || Array.isArray(v)) invalidValue(shape);
  const { draft, maxDraft = 8, minProbability = 0, ...rest } = v as { draft?: unknown; maxDraft?: unknown; minProbability?: unknown };
  if (Object.keys(rest).length > 0) invalidValue(`${shape} (no other fields)`);
  // A Model is checked by the native layer (its type tag); here only its shape.
  const native = (draft as { native?: unknown } | null)?.native;
  if (draft === null || typeof draft !== "object" || native === null || typeof native !== "object") invalidValue("{ draft: a loaded Model }");
  if (!(typeof maxDraft === "number" && Number.isInteger(maxDraft) && maxDraft >= 1 && maxDraft <= 64)) invalidValue("{ maxDraft: an integer from 1 to 64 }");
  if (!(typeof minProbability === "number" && minProbability >= 0 && minProbability <= 1)) invalidValue("{ minProbability: a number from 0 to 1 }");
  return { draft: draft as Model, maxDraft, minProbability };
}

function promptInput(v: unknown): string | ArrayLike<number> {
  if (typeof v === "string") return v;
  if (v === null || typeof v !== "object" || typeof (v as { length?: unknown }).length !== "number") invalidValue("a string or token ids (an Int32Array or an array of integers)");
  return v as ArrayLike<number>;
}

export const GENERATE_OPTIONS = {
  /**
   * A prompt evaluated first, as `session.prompt(input)` would: it becomes the history, reusing
   * the prefix it shares with the cache (text gets the model's BOS/EOS, as there). Its tokens
   * share decode batches with the context's other sessions, and the first token is sampled from
   * the decode that ends it: no pass between the two. `generation.prompted` says what it did.
   */
  prompt: custom<string | ArrayLike<number>>({ expected: "a string or token ids", parse: promptInput }),
  /** Stop after this many tokens (default: when the session is full). */
  maxTokens: integer({
    min: 1,
    max: 2 ** 31 - 1,
    flag: { name: "max-tokens", aliases: ["-n"], arg: "N", help: "tokens to generate" },
    field: { name: "max_tokens" },
  }),
  /** Stop when the text contains one of these strings; the stop string itself is not emitted. */
  stop: custom<string | readonly string[], string[]>({
    expected: "a non-empty string or an array of at most 64 non-empty strings",
    parse: stopStrings,
    flag: { name: "stop", arg: "TEXT", help: "stop when TEXT appears (repeatable)", multiple: true },
    field: { name: "stop" },
  }),
  /** Stops the generation; iteration ends after the tokens already produced. */
  signal: signalOption,
  /**
   * Report log-probabilities (from the raw logits, before sampling) of each generated token:
   * `true` for the chosen token only, a number for that many top alternatives too (up to 100).
   */
  logprobs: custom<boolean | number, number | false>({
    expected: "a boolean or an integer from 0 to 100",
    parse: (v) =>
      v === true ? 0 : v === false ? false : typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 100 ? v : invalidValue("a boolean or an integer from 0 to 100"),
  }),
  /**
   * When the session is full, drop the older half of the tokens after the first `keep` and go on
   * (RoPE models only; `true` keeps the BOS token). Without it, a full session ends the generation
   * with ERR_CONTEXT_FULL.
   */
  contextShift: custom<boolean | { keep?: number }, boolean | { keep: number | undefined }>({
    expected: "a boolean or { keep: a non-negative integer }",
    parse(v) {
      if (typeof v === "boolean") return v;
      if (v === null || typeof v !== "object" || Array.isArray(v)) invalidValue("a boolean or { keep }");
      const { keep, ...rest } = v as { keep?: unknown };
      if (Object.keys(rest).length > 0) invalidValue("a boolean or { keep } (no other fields)");
      if (keep !== undefined && !(typeof keep === "number" && Number.isInteger(keep) && keep >= 0)) invalidValue("{ keep: a non-negative integer }");
      return { keep: keep as number | undefined };
    },
  }),
  /**
   * The slow path: called before every sampling step with the next-token logits (a Float32Array
   * over native memory, no copy) and the history. Change the logits in place to steer sampling.
   * The decode thread waits for it, so every session of the context pauses meanwhile.
   */
  logitsProcessor: custom<(logits: Float32Array, tokens: Int32Array) => void>({
    expected: "a function",
    parse: (v) => (typeof v === "function" ? (v as (logits: Float32Array, tokens: Int32Array) => void) : invalidValue("a function")),
  }),
  /**
   * Special tokens whose text is written into the output (llama.cpp's preserved tokens): the
   * markers a chat format's parser reads, like `<|python_tag|>` or `<|channel|>`. Other special
   * (control) tokens stay out of the text. ChatSession and the server pass a chat format's own.
   */
  preservedTokens: strings({ maxItems: 1024 }),
  /**
   * N-gram lookup decoding ("prompt lookup"): where the history's last n tokens occurred before,
   * the tokens that followed are decoded as a draft in the same batch as the next token, and kept
   * as far as sampling confirms them. The output is the same as without it (the sampler sees the
   * same logits in the same order); text that repeats itself (code, quotes, loops) can come faster.
   * `true` for `{ ngramSize: 3, ngramMin: 2, maxDraft: 8 }`: the longest and shortest n-gram
   * matched and the longest draft (it halves after a miss). The result's `lookup` counts drafted
   * and kept tokens.
   */
  lookup: custom<boolean | LookupOptions, false | Required<LookupOptions>>({
    expected: "a boolean or { ngramSize: 1-16, ngramMin: 1-ngramSize, maxDraft: 1-64 }",
    parse(v) {
      if (typeof v === "boolean") return v ? { ngramSize: 3, ngramMin: 2, maxDraft: 8 } : false;
      if (v === null || typeof v !== "object" || Array.isArray(v)) invalidValue("a boolean or { ngramSize, ngramMin, maxDraft }");
      const { ngramSize = 3, maxDraft = 8, ngramMin, ...rest } = v as { ngramSize?: unknown; ngramMin?: unknown; maxDraft?: unknown };
      if (Object.keys(rest).length > 0) invalidValue("{ ngramSize, ngramMin, maxDraft } (no other fields)");
      const inRange = (x: unknown, max: number): x is number => typeof x === "number" && Number.isInteger(x) && x >= 1 && x <= max;
      if (!inRange(ngramSize, 16)) invalidValue("{ ngramSize: an integer from 1 to 16 }");
      const min = ngramMin ?? Math.min(2, ngramSize);
      if (!inRange(min, ngramSize)) invalidValue(`{ ngramMin: an integer from 1 to ngramSize (${ngramSize}) }`);
      if (!inRange(maxDraft, 64)) invalidValue("{ maxDraft: an integer from 1 to 64 }");
      return { ngramSize, ngramMin: min, maxDraft };
    },
  }),
  /**
   * Speculative decoding with a draft model: `draft` proposes up to `maxDraft` tokens greedily,
   * which are decoded in the same batch as the next token and kept as far as sampling confirms
   * them. The output is the same as without it; the speed depends on how often the draft agrees.
   * The draft model must share the target's vocabulary (ERR_INVALID_ARGUMENT otherwise); the
   * context keeps a cache for it, as large as its own, until it is disposed. The result's
   * `speculative` counts drafted and kept tokens. Not with `lookup`.
   */
  speculative: custom<SpeculativeOptions, Required<SpeculativeOptions>>({
    expected: "{ draft: a Model, maxDraft: 1-64, minProbability: 0-1 }",
    parse: speculative,
  }),
  ...SAMPLING_OPTIONS,
} as const;

/**
 * Options of `session.generate()`: when to stop and what to report, and the sampling options.
 * @interface
 */
export type GenerateOptions = OptionsOf<typeof GENERATE_OPTIONS>;
