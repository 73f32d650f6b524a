/**
 * The fields of OpenAI's completion and chat completion requests, checked and mapped to
 * llama-napi's generation options. Unknown fields are ignored (as OpenAI-compatible servers do);
 * a known field with a bad value is a 400 naming the field. `null` counts as absent.
 */
import type { ChatMessage, JsonValue } from "../chat.js";
import type { SamplingOptions } from "../sampling.js";
import { badField } from "./http.js";

type Body = Record<string, unknown>;

export interface GenerationParams {
  /** undefined: until the session is full (or 16 for /v1/completions, as OpenAI's default). */
  maxTokens: number | undefined;
  stream: boolean;
  includeUsage: boolean;
  stop: string[];
  sampling: SamplingOptions;
  /** undefined: no log-probabilities; 0: the chosen token's; n: also the top n. */
  logprobs: number | undefined;
}

export interface CompletionParams extends GenerationParams {
  prompt: string | number[];
  echo: boolean;
}

export interface ChatParams extends GenerationParams {
  messages: ChatMessage[];
  variables: Record<string, JsonValue> | undefined;
}

function get(body: Body, key: string): unknown {
  const v = body[key];
  return v === null ? undefined : v;
}

function num(body: Body, key: string, min: number, max: number): number | undefined {
  const v = get(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) throw badField(key, `${key} must be a number from ${min} to ${max}`);
  return v;
}

function int(body: Body, key: string, min: number, max: number): number | undefined {
  const v = num(body, key, min, max);
  if (v !== undefined && !Number.isInteger(v)) throw badField(key, `${key} must be an integer from ${min} to ${max}`);
  return v;
}

function bool(body: Body, key: string): boolean | undefined {
  const v = get(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw badField(key, `${key} must be a boolean`);
  return v;
}

function object(body: Body, key: string): Body | undefined {
  const v = get(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) throw badField(key, `${key} must be an object`);
  return v as Body;
}

function stops(body: Body): string[] {
  const v = get(body, "stop");
  if (v === undefined) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.length > 16 || list.some((s) => typeof s !== "string" || s === "")) {
    throw badField("stop", "stop must be a non-empty string or an array of at most 16 non-empty strings");
  }
  return list as string[];
}

function sampling(body: Body): SamplingOptions {
  const out: SamplingOptions = {};
  const set = <K extends keyof SamplingOptions>(key: K, value: SamplingOptions[K] | undefined) => {
    if (value !== undefined) out[key] = value;
  };
  set("temperature", num(body, "temperature", 0, 10));
  set("topP", num(body, "top_p", 0, 1));
  set("topK", int(body, "top_k", 0, 1_000_000));
  set("minP", num(body, "min_p", 0, 1));
  set("presencePenalty", num(body, "presence_penalty", -2, 2));
  set("frequencyPenalty", num(body, "frequency_penalty", -2, 2));
  set("repeatPenalty", num(body, "repeat_penalty", 0, 10));
  const seed = int(body, "seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  if (seed !== undefined) out.seed = ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
  const bias = object(body, "logit_bias");
  if (bias !== undefined) {
    const pairs: Array<[number, number]> = [];
    for (const [token, value] of Object.entries(bias)) {
      if (!/^\d+$/.test(token) || typeof value !== "number" || !(value >= -100 && value <= 100)) {
        throw badField("logit_bias", "logit_bias must map token ids to numbers from -100 to 100");
      }
      // As in OpenAI's API, -100 bans the token.
      pairs.push([Number(token), value <= -100 ? -Infinity : value]);
    }
    out.logitBias = pairs;
  }
  const format = object(body, "response_format");
  if (format !== undefined) {
    if (format.type === "json_object") {
      out.jsonSchema = { type: "object" };
    } else if (format.type === "json_schema") {
      const spec = format.json_schema as Body | undefined;
      const schema = spec !== null && typeof spec === "object" ? spec.schema : undefined;
      if (schema === null || typeof schema !== "object" || Array.isArray(schema)) {
        throw badField("response_format", "response_format.json_schema.schema must be a JSON Schema object");
      }
      out.jsonSchema = schema;
    } else if (format.type !== "text") {
      throw badField("response_format", 'response_format.type must be "text", "json_object" or "json_schema"');
    }
  }
  return out;
}

function common(body: Body, maxTokensKeys: string[]): Omit<GenerationParams, "logprobs"> {
  const n = int(body, "n", 1, 128);
  if (n !== undefined && n !== 1) throw badField("n", "Only n = 1 is supported");
  let maxTokens: number | undefined;
  for (const key of maxTokensKeys) maxTokens ??= int(body, key, 1, 1 << 30);
  const streamOptions = object(body, "stream_options");
  let includeUsage = false;
  if (streamOptions?.include_usage !== undefined && streamOptions.include_usage !== null) {
    if (typeof streamOptions.include_usage !== "boolean") throw badField("stream_options", "stream_options.include_usage must be a boolean");
    includeUsage = streamOptions.include_usage;
  }
  return { maxTokens, stream: bool(body, "stream") ?? false, includeUsage, stop: stops(body), sampling: sampling(body) };
}

/** POST /v1/completions */
export function completionParams(body: Body): CompletionParams {
  const prompt = get(body, "prompt");
  let text: string | number[];
  if (typeof prompt === "string") {
    text = prompt;
  } else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((t) => Number.isInteger(t))) {
    text = prompt as number[]; // one prompt of token ids
  } else if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === "string") {
    text = prompt[0];
  } else if (Array.isArray(prompt) && prompt.length > 1 && prompt.every((p) => typeof p === "string")) {
    throw badField("prompt", "Only one prompt per request is supported");
  } else {
    throw badField("prompt", "prompt must be a string or an array of token ids");
  }
  if (get(body, "suffix") !== undefined) throw badField("suffix", "suffix is not supported");
  const logprobs = int(body, "logprobs", 0, 20);
  return { ...common(body, ["max_tokens"]), prompt: text, echo: bool(body, "echo") ?? false, logprobs };
}

/** POST /v1/chat/completions */
export function chatParams(body: Body): ChatParams {
  const raw = get(body, "messages");
  if (!Array.isArray(raw) || raw.length === 0) throw badField("messages", "messages must be a non-empty array");
  const messages = raw.map((m, i) => chatMessage(m, i));
  for (const key of ["tools", "functions"]) {
    const v = get(body, key);
    if (Array.isArray(v) && v.length > 0) throw badField(key, `${key} are not supported by this server`);
  }
  const wantLogprobs = bool(body, "logprobs") ?? false;
  const top = int(body, "top_logprobs", 0, 20);
  if (top !== undefined && !wantLogprobs) throw badField("top_logprobs", "top_logprobs needs logprobs: true");
  const variables = object(body, "chat_template_kwargs") as Record<string, JsonValue> | undefined;
  return {
    ...common(body, ["max_completion_tokens", "max_tokens"]),
    messages,
    variables,
    logprobs: wantLogprobs ? (top ?? 0) : undefined,
  };
}

const ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

function chatMessage(m: unknown, i: number): ChatMessage {
  const param = `messages[${i}]`;
  if (m === null || typeof m !== "object" || Array.isArray(m)) throw badField(param, `${param} must be an object`);
  const { role, content } = m as Body;
  if (typeof role !== "string" || !ROLES.has(role)) throw badField(`${param}.role`, `${param}.role must be one of ${[...ROLES].join(", ")}`);
  let text: string;
  if (typeof content === "string") {
    text = content;
  } else if (content === null || content === undefined) {
    if (role !== "assistant") throw badField(`${param}.content`, `${param}.content must be a string`);
    text = "";
  } else if (Array.isArray(content)) {
    const parts = content.map((part: unknown) => {
      const p = part as Body | null;
      if (p === null || typeof p !== "object" || p.type !== "text" || typeof p.text !== "string") {
        throw badField(`${param}.content`, "Only text content parts ({ type: \"text\", text }) are supported");
      }
      return p.text;
    });
    text = parts.join("\n");
  } else {
    throw badField(`${param}.content`, `${param}.content must be a string or an array of text parts`);
  }
  return { role: role === "developer" ? "system" : role, content: text };
}
