/**
 * The fields of OpenAI's completion and chat completion requests, checked and mapped to
 * llama-napi's generation options. The sampling fields come from the option tables (each entry's
 * `field`: top_p, top_k, min_p, logit_bias, response_format, seed, ...). Unknown fields are
 * ignored (as OpenAI-compatible servers do); a known field with a bad value is a 400 naming the
 * field. `null` counts as absent.
 */
import type { ChatContentPart, ChatMessage, JsonValue } from "../chat.js";
import { GENERATE_OPTIONS } from "../options/generate.js";
import type { SamplingOptions } from "../options/sampling.js";
import { fromFields } from "./fields.js";
import { badField } from "./http.js";
import type { ToolPlan } from "../chat-tools.js";
import { mediaPart, type MediaParams, type RequestMedia } from "./media.js";
import { messageToolFields, toolParams } from "./tools.js";

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
  /** tools, tool_choice, parallel_tool_calls, reasoning_format (undefined when none is set). */
  tools: ToolPlan | undefined;
  /** The messages' image and audio parts, in message order (empty for text only). */
  media: RequestMedia[];
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

function common(body: Body, maxTokensAlias?: string): Omit<GenerationParams, "logprobs"> {
  const n = int(body, "n", 1, 128);
  if (n !== undefined && n !== 1) throw badField("n", "Only n = 1 is supported");
  const { maxTokens: maxTokensField, stop, ...sampling } = fromFields(GENERATE_OPTIONS, body);
  // Chat requests may say max_completion_tokens, OpenAI's newer name for max_tokens.
  const maxTokens = (maxTokensAlias === undefined ? undefined : int(body, maxTokensAlias, 1, 2 ** 31 - 1)) ?? maxTokensField;
  const streamOptions = object(body, "stream_options");
  let includeUsage = false;
  if (streamOptions?.include_usage !== undefined && streamOptions.include_usage !== null) {
    if (typeof streamOptions.include_usage !== "boolean") throw badField("stream_options", "stream_options.include_usage must be a boolean");
    includeUsage = streamOptions.include_usage;
  }
  return { maxTokens, stream: bool(body, "stream") ?? false, includeUsage, stop: stop ?? [], sampling };
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
  return { ...common(body), prompt: text, echo: bool(body, "echo") ?? false, logprobs };
}

/** No projector: image and audio parts are refused. */
const NO_MEDIA: MediaParams = { accepts: null, allowUrls: false };

/** POST /v1/chat/completions; `mediaParams` says what image and audio parts may be (src/server/media.ts). */
export function chatParams(body: Body, mediaParams: MediaParams = NO_MEDIA): ChatParams {
  const raw = get(body, "messages");
  if (!Array.isArray(raw) || raw.length === 0) throw badField("messages", "messages must be a non-empty array");
  const media: RequestMedia[] = [];
  const messages = raw.map((m, i) => chatMessage(m, i, mediaParams, media));
  const tools = toolParams(body);
  const base = common(body, "max_completion_tokens");
  if (tools && tools.toolChoice !== "none" && (base.sampling.grammar !== undefined || base.sampling.jsonSchema !== undefined)) {
    throw badField("tools", "tools cannot be combined with grammar or response_format (the tool grammar applies)");
  }
  const wantLogprobs = bool(body, "logprobs") ?? false;
  const top = int(body, "top_logprobs", 0, 20);
  if (top !== undefined && !wantLogprobs) throw badField("top_logprobs", "top_logprobs needs logprobs: true");
  const variables = object(body, "chat_template_kwargs") as Record<string, JsonValue> | undefined;
  return {
    ...base,
    messages,
    variables,
    tools,
    media,
    logprobs: wantLogprobs ? (top ?? 0) : undefined,
  };
}

const ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

function chatMessage(m: unknown, i: number, mediaParams: MediaParams, media: RequestMedia[]): ChatMessage {
  const param = `messages[${i}]`;
  if (m === null || typeof m !== "object" || Array.isArray(m)) throw badField(param, `${param} must be an object`);
  const { role, content } = m as Body;
  if (typeof role !== "string" || !ROLES.has(role)) throw badField(`${param}.role`, `${param}.role must be one of ${[...ROLES].join(", ")}`);
  let text: string | ChatContentPart[];
  if (typeof content === "string") {
    text = content;
  } else if (content === null || content === undefined) {
    if (role !== "assistant" && role !== "tool") throw badField(`${param}.content`, `${param}.content must be a string`);
    text = "";
  } else if (Array.isArray(content)) {
    // Text parts on separate lines; images and audio as parts of the message (llama-server's
    // join: no line break around them, src/chat.ts).
    const parts = content.map((part: unknown, j: number): ChatContentPart => {
      const p = part as Body | null;
      const field = `${param}.content[${j}]`;
      if (p === null || typeof p !== "object" || Array.isArray(p)) throw badField(field, `${field} must be a content part object`);
      if (p.type !== "text") return mediaPart(p, field, { message: i, index: j }, mediaParams, media);
      if (typeof p.text !== "string") throw badField(`${field}.text`, `${field}.text must be a string`);
      return { type: "text", text: p.text };
    });
    text = parts.every((p) => p.type === "text") ? parts.map((p) => (p as { text: string }).text).join("\n") : parts;
  } else {
    throw badField(`${param}.content`, `${param}.content must be a string or an array of content parts`);
  }
  return { role: role === "developer" ? "system" : role, content: text, ...messageToolFields(m as Body, param) };
}
