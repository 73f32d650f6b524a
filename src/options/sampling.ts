/**
 * The sampling options: how the next token is chosen. This table is the one place that says what
 * each option is; `SamplingOptions`, its validation and defaults, the `generate` / `serve` CLI
 * flags and the server's request fields come from it. native/Sampler.cc reads every entry (and
 * refuses an object holding a name it did not read), so a new option is one entry here plus its
 * use there. Defaults follow llama.cpp's common sampler.
 */
import { boolean, custom, integer, invalidValue, number, object, string, strings, type OptionsOf } from "./spec.js";

/** The samplers whose order can be changed with `samplerOrder`. */
export const SAMPLER_NAMES = ["penalties", "dry", "topNSigma", "topK", "typicalP", "topP", "minP", "xtc", "temperature"] as const;

/** The name of a sampler in `samplerOrder`. */
export type SamplerName = (typeof SAMPLER_NAMES)[number];

/** Biases as the API takes them: a Map, an object or [token, bias] pairs. */
export type LogitBias = ReadonlyMap<number, number> | Readonly<Record<number, number>> | ReadonlyArray<readonly [number, number]>;

const MAX = 1e30;

/** What starts a lazy grammar (see `grammarTriggers`). */
export interface GrammarTrigger {
  type: "word" | "pattern" | "patternFull" | "token";
  value: string;
}

const TRIGGERS_EXPECTED = 'an array of { type: "word" | "pattern" | "patternFull" | "token", value: string }';

function grammarTriggers(v: unknown): GrammarTrigger[] {
  if (!Array.isArray(v) || v.length > 1024) return invalidValue(TRIGGERS_EXPECTED);
  return v.map((t: unknown) => {
    if (t === null || typeof t !== "object") return invalidValue(TRIGGERS_EXPECTED);
    const { type, value, ...rest } = t as Record<string, unknown>;
    if (Object.keys(rest).length > 0 || typeof value !== "string") return invalidValue(TRIGGERS_EXPECTED);
    if (type !== "word" && type !== "pattern" && type !== "patternFull" && type !== "token") return invalidValue(TRIGGERS_EXPECTED);
    return { type, value };
  });
}

function biasPairs(bias: unknown): Array<[number, number]> {
  const expected = "a Map, an object or an array of [token, bias] pairs";
  let pairs: unknown[];
  if (bias instanceof Map) pairs = [...bias.entries()];
  else if (Array.isArray(bias)) pairs = bias;
  else if (bias !== null && typeof bias === "object") pairs = Object.entries(bias).map(([t, b]) => [Number(t), b]);
  else return invalidValue(expected);
  return pairs.map((pair) => {
    if (!Array.isArray(pair) || pair.length !== 2) invalidValue(expected);
    const [token, value] = pair as [unknown, unknown];
    // Token ids are checked against the vocabulary natively (ERR_TOKEN_INVALID).
    if (typeof token !== "number") invalidValue(`${expected}, with number token ids`);
    if (typeof value !== "number" || Number.isNaN(value)) invalidValue(`${expected}, with number biases (-Infinity bans)`);
    return [token, value];
  });
}

function schemaText(schema: unknown): string {
  if (typeof schema === "string") return schema;
  if (schema === null || typeof schema !== "object") invalidValue("a JSON Schema object or its JSON text");
  try {
    return JSON.stringify(schema);
  } catch (err) {
    // Circular objects and bigints have no JSON form.
    return invalidValue(`an object that converts to JSON (${(err as Error).message})`);
  }
}

// The server's spellings of what it shares with OpenAI's API.
function openAiBias(value: unknown): Array<[number, number]> {
  const expected = "an object mapping token ids to numbers from -100 to 100";
  if (value === null || typeof value !== "object" || Array.isArray(value)) invalidValue(expected);
  return Object.entries(value).map(([token, bias]) => {
    if (!/^\d+$/.test(token) || typeof bias !== "number" || !(bias >= -100 && bias <= 100)) invalidValue(expected);
    return [Number(token), bias <= -100 ? -Infinity : bias]; // as in OpenAI's API, -100 bans the token
  });
}

function responseFormat(value: unknown): string {
  const format = value as { type?: unknown; json_schema?: { schema?: unknown } } | null;
  if (format === null || typeof format !== "object" || Array.isArray(format)) invalidValue("an object");
  if (format.type === "json_object") return JSON.stringify({ type: "object" });
  if (format.type === "json_schema") {
    const schema = format.json_schema?.schema;
    if (schema === null || typeof schema !== "object" || Array.isArray(schema)) invalidValue("{ type: \"json_schema\", json_schema: { schema: {...} } }");
    return JSON.stringify(schema);
  }
  // "text": no constraint. The server drops an empty schema.
  if (format.type === "text") return "";
  return invalidValue('{ type: "text" | "json_object" | "json_schema", ... }');
}

function seedFromRequest(value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) invalidValue("an integer");
  return ((value % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

export const SAMPLING_OPTIONS = {
  /** 0 picks the most likely token (greedy). Default 0.8. */
  temperature: number({ min: 0, max: MAX, default: 0.8, flag: { name: "temp", arg: "T", help: "temperature; 0 is greedy" }, field: { name: "temperature" } }),
  /** Dynamic temperature: the temperature varies in [t - range, t + range] with the entropy. Default 0 (off). */
  dynamicTemperatureRange: number({ min: 0, max: MAX, default: 0, flag: { name: "dynatemp-range", arg: "R", help: "dynamic temperature range" }, field: { name: "dynatemp_range" } }),
  /** Exponent of the dynamic temperature's entropy mapping. Default 1. */
  dynamicTemperatureExponent: number({ min: 0, max: MAX, default: 1, flag: { name: "dynatemp-exp", arg: "E", help: "dynamic temperature exponent" }, field: { name: "dynatemp_exponent" } }),
  /** Keep the k most likely tokens (0 disables). Default 40. */
  topK: integer({ min: 0, max: 2 ** 31 - 1, default: 40, flag: { name: "top-k", arg: "K", help: "keep the K most likely tokens; 0 disables" }, field: { name: "top_k" } }),
  /** Keep the smallest set of tokens whose probability reaches p (1 disables). Default 0.95. */
  topP: number({ min: 0, max: 1, default: 0.95, flag: { name: "top-p", arg: "P", help: "nucleus sampling; 1 disables" }, field: { name: "top_p" } }),
  /** Drop tokens less likely than minP × the top probability (0 disables). Default 0.05. */
  minP: number({ min: 0, max: 1, default: 0.05, flag: { name: "min-p", arg: "P", help: "drop tokens below P × the top probability; 0 disables" }, field: { name: "min_p" } }),
  /** Locally typical sampling (1 disables). Default 1. */
  typicalP: number({ min: 0, max: 1, default: 1, flag: { name: "typical", arg: "P", help: "locally typical sampling; 1 disables" }, field: { name: "typical_p" } }),
  /** Keep tokens within n standard deviations of the top logit (≤ 0 disables). Default -1. */
  topNSigma: number({ min: -1, max: MAX, default: -1, flag: { name: "top-nsigma", arg: "N", help: "keep tokens within N standard deviations of the top logit; ≤ 0 disables" }, field: { name: "top_n_sigma" } }),
  /** Tokens each filter keeps at least. Default 0. */
  minKeep: integer({ min: 0, max: 2 ** 31 - 1, default: 0, flag: { name: "min-keep", arg: "N", help: "tokens each filter keeps at least" }, field: { name: "min_keep" } }),
  /** Exclude Top Choices: with this probability, drop every token above `threshold` but the least likely one. */
  xtc: object({
    /** How often XTC applies (0 disables). */
    probability: number({ min: 0, max: 1, default: 0, flag: { name: "xtc-probability", arg: "P", help: "XTC: how often it applies; 0 disables" }, field: { name: "xtc_probability" } }),
    /** Tokens above this probability are candidates for removal. Default 0.1. */
    threshold: number({ min: 0, max: 1, default: 0.1, flag: { name: "xtc-threshold", arg: "P", help: "XTC: probability above which tokens may be dropped" }, field: { name: "xtc_threshold" } }),
  }),
  /** Repetition penalty (1 disables). Default 1. */
  repeatPenalty: number({ above: 0, max: MAX, default: 1, flag: { name: "repeat-penalty", arg: "P", help: "repetition penalty; 1 disables" }, field: { name: "repeat_penalty" } }),
  /** Frequency penalty (0 disables). Default 0. */
  frequencyPenalty: number({ min: -MAX, max: MAX, default: 0, flag: { name: "frequency-penalty", arg: "P", help: "frequency penalty; 0 disables" }, field: { name: "frequency_penalty" } }),
  /** Presence penalty (0 disables). Default 0. */
  presencePenalty: number({ min: -MAX, max: MAX, default: 0, flag: { name: "presence-penalty", arg: "P", help: "presence penalty; 0 disables" }, field: { name: "presence_penalty" } }),
  /** How many recent tokens the penalties look at (-1: the whole session). Default 64. */
  penaltyLastN: integer({ min: -1, max: 1 << 24, default: 64, flag: { name: "repeat-last-n", arg: "N", help: "recent tokens the penalties look at; -1: all" }, field: { name: "repeat_last_n" } }),
  /** DRY ("don't repeat yourself") repetition penalty. */
  dry: object({
    /** Strength of the penalty (0 disables). */
    multiplier: number({ min: 0, max: MAX, default: 0, flag: { name: "dry-multiplier", arg: "M", help: "DRY penalty strength; 0 disables" }, field: { name: "dry_multiplier" } }),
    /** Base of the exponential penalty. Default 1.75. */
    base: number({ min: 1, max: MAX, default: 1.75, flag: { name: "dry-base", arg: "B", help: "DRY exponential base" }, field: { name: "dry_base" } }),
    /** Repeated sequences up to this length are not penalised. Default 2. */
    allowedLength: integer({ min: 0, max: 1 << 20, default: 2, flag: { name: "dry-allowed-length", arg: "N", help: "DRY: longest repeat not penalised" }, field: { name: "dry_allowed_length" } }),
    /** How many recent tokens DRY looks at (-1: the whole session). Default -1. */
    penaltyLastN: integer({ min: -1, max: 1 << 24, default: -1, flag: { name: "dry-penalty-last-n", arg: "N", help: "DRY: recent tokens looked at; -1: all" }, field: { name: "dry_penalty_last_n" } }),
    /** Strings that break a repeated sequence. Default ["\n", ":", "\"", "*"]. */
    sequenceBreakers: strings({ maxItems: 64, nonEmpty: true, default: ["\n", ":", '"', "*"], field: { name: "dry_sequence_breakers" } }),
  }),
  /** Mirostat (replaces the filters and the final random choice). */
  mirostat: object({
    /** Mirostat 1 or 2. Default 2. */
    version: custom<1 | 2>({ expected: "1 or 2", parse: (v) => (v === 1 || v === 2 ? v : invalidValue("1 or 2")), default: 2 }),
    /** Target entropy. Default 5. */
    tau: number({ min: 0, max: MAX, default: 5 }),
    /** Learning rate. Default 0.1. */
    eta: number({ min: 0, max: MAX, default: 0.1 }),
  }),
  /** Added to the logits of tokens before sampling; -Infinity bans a token. */
  logitBias: custom<LogitBias, Array<[number, number]>>({
    expected: "a Map, an object or an array of [token, bias] pairs",
    parse: biasPairs,
    field: { name: "logit_bias", parse: openAiBias },
  }),
  /** A GBNF grammar the output must follow (llama.cpp's grammar sampler). */
  grammar: string({ flag: { name: "grammar", arg: "GBNF", help: "a GBNF grammar the output must follow" }, field: { name: "grammar" } }),
  /** Start symbol of the grammar. Default "root". */
  grammarRoot: string({ default: "root" }),
  /**
   * Apply the grammar lazily: the output is free until one of `grammarTriggers` appears, and
   * follows the grammar from there (llama.cpp's lazy grammar; how tool calls are constrained).
   */
  grammarLazy: boolean(),
  /**
   * What starts a lazy grammar: a `word` (its text, or its token when it is one special token),
   * a `pattern` (a regular expression over the output; the grammar starts at its first group),
   * a `patternFull` (a pattern the whole output must match) or a `token` (a special token's text).
   */
  grammarTriggers: custom<readonly GrammarTrigger[], GrammarTrigger[]>({ expected: TRIGGERS_EXPECTED, parse: grammarTriggers }),
  /**
   * Text the grammar has already seen: the assistant's generation prompt that a chat format's
   * grammar starts with (ChatSession and the server set it). Not used with a lazy grammar.
   */
  grammarPrefill: string(),
  /**
   * llama.cpp's reasoning-budget sampler: after `tokens` tokens of a thinking block (opened by
   * `start`), it forces `message` and the first of `end`. -1 (the default) disables it.
   * ChatSession sets it from `reasoning.budget` and the template's thinking tags.
   */
  reasoningBudget: object({
    /** Tokens allowed in the thinking block; -1: no budget. */
    tokens: integer({ min: -1, max: 1 << 24, default: -1 }),
    /** The text that opens a thinking block (e.g. "<think>"). */
    start: string({ default: "", allowEmpty: true }),
    /** The texts that close one; the first is forced when the budget runs out. */
    end: strings({ maxItems: 16, default: [] }),
    /** Text forced before the closing tag when the budget runs out. */
    message: string({ default: "", allowEmpty: true }),
    /** Text already in the prompt that the budget starts from (the generation prompt that opens the block). */
    prefill: string({ default: "", allowEmpty: true }),
  }),
  /**
   * A JSON Schema the output must satisfy, turned into a grammar by llama.cpp's own converter
   * (common/json-schema-to-grammar). An object or its JSON text.
   */
  jsonSchema: custom<object | string, string>({
    expected: "a JSON Schema object or its JSON text",
    parse: schemaText,
    flag: { name: "json-schema", arg: "JSON", help: "a JSON Schema the output must satisfy" },
    field: { name: "response_format", parse: responseFormat },
  }),
  /** Order of the filtering samplers. Default llama.cpp's: penalties, dry, topNSigma, topK, typicalP, topP, minP, xtc, temperature. */
  samplerOrder: custom<readonly SamplerName[], SamplerName[]>({
    expected: `an array of sampler names (${SAMPLER_NAMES.join(", ")})`,
    parse: (v) =>
      Array.isArray(v) && v.length <= 16 && v.every((n) => SAMPLER_NAMES.includes(n as SamplerName))
        ? [...(v as SamplerName[])]
        : invalidValue(`an array of sampler names (${SAMPLER_NAMES.join(", ")})`),
    default: [...SAMPLER_NAMES],
  }),
  /** Random seed (an unsigned 32-bit integer); the same seed reproduces the same output. Default: random. */
  seed: integer({ min: 0, max: 0xffffffff, flag: { name: "seed", aliases: ["-s"], arg: "S", help: "random seed, for reproducible output" }, field: { name: "seed", parse: seedFromRequest } }),
} as const;

/**
 * How the next token is chosen. Sampling runs natively, in the same step as the decode.
 * Defaults follow llama.cpp: temperature 0.8, topK 40, topP 0.95, minP 0.05, penalties off.
 * @interface
 */
export type SamplingOptions = OptionsOf<typeof SAMPLING_OPTIONS>;
