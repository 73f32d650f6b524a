import { invalidArgument } from "./errors.js";
import type { NativeSampling } from "./native.js";

/** The samplers whose order can be changed with `samplerOrder`. */
export type SamplerName =
  | "penalties"
  | "dry"
  | "topNSigma"
  | "topK"
  | "typicalP"
  | "topP"
  | "minP"
  | "xtc"
  | "temperature";

/**
 * How the next token is chosen. Sampling runs natively, in the same step as the decode.
 * Defaults follow llama.cpp: temperature 0.8, topK 40, topP 0.95, minP 0.05, penalties off.
 */
export interface SamplingOptions {
  /** 0 picks the most likely token (greedy). */
  temperature?: number;
  /** Dynamic temperature: the temperature varies in [t - range, t + range] with the entropy. */
  dynamicTemperatureRange?: number;
  dynamicTemperatureExponent?: number;
  /** Keep the k most likely tokens (0 disables). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1 disables). */
  topP?: number;
  /** Drop tokens less likely than minP × the top probability (0 disables). */
  minP?: number;
  /** Locally typical sampling (1 disables). */
  typicalP?: number;
  /** Keep tokens within n standard deviations of the top logit (≤ 0 disables). */
  topNSigma?: number;
  /** Tokens each filter keeps at least. */
  minKeep?: number;
  /** Exclude Top Choices: with this probability, drop every token above `threshold` but the least likely one. */
  xtc?: { probability: number; threshold?: number };
  /** Repetition penalty (1 disables). */
  repeatPenalty?: number;
  /** Frequency penalty (0 disables). */
  frequencyPenalty?: number;
  /** Presence penalty (0 disables). */
  presencePenalty?: number;
  /** How many recent tokens the penalties look at (-1: the whole context; default 64). */
  penaltyLastN?: number;
  /** DRY ("don't repeat yourself") repetition penalty. */
  dry?: { multiplier: number; base?: number; allowedLength?: number; penaltyLastN?: number; sequenceBreakers?: string[] };
  /** Mirostat (replaces the filters and the final random choice). */
  mirostat?: { version: 1 | 2; tau?: number; eta?: number };
  /** Added to the logits of tokens before sampling; -Infinity bans a token. */
  logitBias?: ReadonlyMap<number, number> | Readonly<Record<number, number>> | ReadonlyArray<readonly [number, number]>;
  /** A GBNF grammar the output must follow (llama.cpp's grammar sampler). */
  grammar?: string;
  /** Start symbol of the grammar (default "root"). */
  grammarRoot?: string;
  /**
   * A JSON Schema the output must satisfy, turned into a grammar by llama.cpp's own converter
   * (common/json-schema-to-grammar). An object or its JSON text.
   */
  jsonSchema?: object | string;
  /** Order of the filtering samplers (default llama.cpp's). */
  samplerOrder?: readonly SamplerName[];
  /** Random seed (an unsigned 32-bit integer); the same seed reproduces the same output. */
  seed?: number;
}

const SAMPLING_KEYS = [
  "temperature",
  "dynamicTemperatureRange",
  "dynamicTemperatureExponent",
  "topK",
  "topP",
  "minP",
  "typicalP",
  "topNSigma",
  "minKeep",
  "xtc",
  "repeatPenalty",
  "frequencyPenalty",
  "presencePenalty",
  "penaltyLastN",
  "dry",
  "mirostat",
  "grammar",
  "grammarRoot",
  "seed",
] as const;

/** Converts the public options into the native form (validation of values is native). */
export function toNativeSampling(options: SamplingOptions): NativeSampling {
  const out: Record<string, unknown> = {};
  for (const key of SAMPLING_KEYS) {
    if (options[key] !== undefined) out[key] = options[key];
  }
  if (options.samplerOrder !== undefined) {
    if (!Array.isArray(options.samplerOrder)) invalidArgument("samplerOrder", "an array of sampler names", options.samplerOrder);
    out.order = [...options.samplerOrder];
  }
  if (options.logitBias !== undefined) out.logitBias = logitBiasPairs(options.logitBias);
  if (options.jsonSchema !== undefined) out.jsonSchema = schemaText(options.jsonSchema);
  return out as NativeSampling;
}

function schemaText(schema: unknown): string {
  if (typeof schema === "string") return schema;
  if (schema === null || typeof schema !== "object") invalidArgument("jsonSchema", "an object or its JSON text", schema);
  try {
    return JSON.stringify(schema);
  } catch (err) {
    // Circular objects and bigints have no JSON form.
    return invalidArgument("jsonSchema", `an object that converts to JSON (${(err as Error).message})`, schema);
  }
}

function logitBiasPairs(bias: NonNullable<SamplingOptions["logitBias"]>): Array<[number, number]> {
  if (bias instanceof Map) return [...bias.entries()];
  if (Array.isArray(bias)) {
    return bias.map((pair: unknown) => {
      if (!Array.isArray(pair) || pair.length !== 2) invalidArgument("logitBias", "an array of [token, bias] pairs", pair);
      return [pair[0], pair[1]] as [number, number];
    });
  }
  if (typeof bias === "object" && bias !== null) {
    return Object.entries(bias).map(([token, value]) => [Number(token), value as number]);
  }
  return invalidArgument("logitBias", "a Map, an object or an array of [token, bias] pairs", bias);
}
