/**
 * llama-server's operator endpoints, with its names and shapes where they apply:
 *
 * - `GET /metrics`: Prometheus text (opt-in: the `metrics: true` option, else 501 as llama-server)
 * - `GET /slots`: each sequence's state (opt-in: `slots: true`; `?fail_on_no_slot=1`: 503 when all are busy)
 * - `GET /props`: the server's settings (default generation settings, slots, model, template, build)
 * - `POST /tokenize`, `POST /detokenize`: text ↔ token ids (with pieces on request)
 * - `POST /apply-template`: the chat prompt that /v1/chat/completions would evaluate, as text
 * - `POST /infill`: fill-in-the-middle with the model's FIM tokens, answered as /v1/completions
 */
import fs from "node:fs";
import type { ServerResponse } from "node:http";
import path from "node:path";

import { renderOptions } from "../chat-tools.js";
import { packageRoot } from "../native.js";
import { GENERATE_OPTIONS } from "../options/generate.js";
import { entriesOf } from "../options/spec.js";
import { generate, mediaParams, type ServerState } from "./handlers.js";
import { HttpError, badField, sendJson } from "./http.js";
import { chatParams, completionParams } from "./params.js";

type Body = Record<string, unknown>;

function notEnabled(endpoint: string, option: string): HttpError {
  return new HttpError(501, `This server does not serve ${endpoint}: start it with the \`${option}: true\` option`, "not_supported_error", "not_supported");
}

/** GET /metrics */
export function getMetrics(state: ServerState, res: ServerResponse): void {
  if (!state.endpoints.metrics) throw notEnabled("/metrics", "metrics");
  const stats = state.context.stats();
  const text = state.metrics.prometheus({
    busy: state.pool.busy,
    queued: state.pool.queued,
    decodeCalls: stats.decodeCalls,
    kvCacheSize: state.context.kvCacheSize,
  });
  res.writeHead(200, {
    "Content-Type": "text/plain; version=0.0.4",
    "Content-Length": String(Buffer.byteLength(text)),
    "Process-Start-Time-Unix": String(state.metrics.startTime),
  });
  res.end(text);
}

/** GET /slots */
export function getSlots(state: ServerState, url: URL, res: ServerResponse): void {
  if (!state.endpoints.slots) throw notEnabled("/slots", "slots");
  const slots = state.metrics.slots();
  const failOnNoSlot = url.searchParams.get("fail_on_no_slot");
  if (failOnNoSlot !== null && failOnNoSlot !== "" && state.pool.busy >= state.pool.size) {
    throw new HttpError(503, "no slot available", "unavailable_error", "no_slot");
  }
  sendJson(res, 200, slots);
}

let buildInfo: string | undefined;

/** "llama-napi <version> (llama.cpp <commit>)", from the package's manifest and llama.cpp pin. */
function getBuildInfo(): string {
  if (buildInfo === undefined) {
    const read = (file: string): Record<string, unknown> => {
      try {
        return JSON.parse(fs.readFileSync(path.join(packageRoot, file), "utf8")) as Record<string, unknown>;
      } catch {
        return {};
      }
    };
    const version = read("package.json").version;
    const commit = read("vendor/llama.cpp.pin.json").commit;
    buildInfo = `llama-napi ${typeof version === "string" ? version : "unknown"}${typeof commit === "string" ? ` (llama.cpp ${commit.slice(0, 7)})` : ""}`;
  }
  return buildInfo;
}

/** The request fields' defaults (every request field of the option tables that has one). */
function defaultParams(): Record<string, unknown> {
  const params: Record<string, unknown> = { n_predict: -1 };
  for (const [, spec] of entriesOf(GENERATE_OPTIONS)) {
    if (spec.field && spec.default !== undefined && typeof spec.default !== "function") params[spec.field.name] = spec.default;
  }
  params.max_tokens ??= -1;
  params.seed ??= 0xffffffff; // llama.cpp's LLAMA_DEFAULT_SEED: a random seed per request
  params.stop ??= [];
  params.grammar ??= "";
  params.n_probs ??= 0;
  return params;
}

/** GET /props */
export function getProps(state: ServerState, res: ServerResponse): void {
  const { model } = state;
  const special = (token: number | null) => (token === null ? "" : model.tokenToPiece(token, { special: true }));
  sendJson(res, 200, {
    default_generation_settings: { n_ctx: state.context.contextSize, params: defaultParams() },
    total_slots: state.pool.size,
    model_alias: state.modelId,
    model_path: model.path,
    modalities: { vision: model.info.projector?.image ?? false, video: false, audio: model.info.projector?.audio ?? false },
    endpoint_slots: state.endpoints.slots,
    endpoint_props: false,
    endpoint_metrics: state.endpoints.metrics,
    chat_template: state.template.source,
    bos_token: special(model.specialTokens.bos),
    eos_token: special(model.specialTokens.eos),
    build_info: getBuildInfo(),
    is_sleeping: false,
  });
}

function optionalBool(body: Body, key: string, fallback: boolean): boolean {
  const v = body[key] ?? undefined;
  if (v === undefined) return fallback;
  if (typeof v !== "boolean") throw badField(key, `${key} must be a boolean`);
  return v;
}

function checkToken(state: ServerState, field: string, t: unknown): number {
  const n = state.model.info.vocabSize;
  if (typeof t !== "number" || !Number.isInteger(t) || t < 0 || t >= n) {
    throw badField(field, `${field} must hold token ids from 0 to ${n - 1}; got ${JSON.stringify(t)}`);
  }
  return t;
}

/**
 * llama-server's tokenize_mixed: a string, or an array of strings and token ids (the special
 * tokens, BOS, are added only when the first item is a string).
 */
function tokenizeMixed(state: ServerState, field: string, value: unknown, addSpecial: boolean, parseSpecial: boolean): number[] {
  if (typeof value === "string") return [...state.model.tokenize(value, { addSpecial, parseSpecial })];
  if (!Array.isArray(value)) throw badField(field, `${field} must be a string or an array of strings and token ids`);
  const out: number[] = [];
  value.forEach((item, i) => {
    if (typeof item === "string") out.push(...state.model.tokenize(item, { addSpecial: addSpecial && i === 0, parseSpecial }));
    else if (typeof item === "number") out.push(checkToken(state, field, item));
    else throw badField(field, `${field} must be a string or an array of strings and token ids; ${field}[${i}] is ${JSON.stringify(item)}`);
  });
  return out;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A token's text: a string when it is valid UTF-8, else its bytes (as llama-server). */
function pieceOf(state: ServerState, token: number): string | number[] {
  const bytes = state.model.tokenToBytes(token, { special: true });
  try {
    return utf8.decode(bytes);
  } catch {
    return [...bytes];
  }
}

/** POST /tokenize {content, add_special = false, parse_special = true, with_pieces = false} */
export function tokenize(state: ServerState, body: Body, res: ServerResponse): void {
  const content = body.content ?? undefined;
  if (content === undefined) throw badField("content", "content is required: the text to tokenize");
  const addSpecial = optionalBool(body, "add_special", false);
  const parseSpecial = optionalBool(body, "parse_special", true);
  const withPieces = optionalBool(body, "with_pieces", false);
  const tokens = tokenizeMixed(state, "content", content, addSpecial, parseSpecial);
  sendJson(res, 200, { tokens: withPieces ? tokens.map((id) => ({ id, piece: pieceOf(state, id) })) : tokens });
}

/** POST /detokenize {tokens} → {content}: the tokens' pieces, special tokens as their text. */
export function detokenize(state: ServerState, body: Body, res: ServerResponse): void {
  const tokens = body.tokens ?? [];
  if (!Array.isArray(tokens)) throw badField("tokens", "tokens must be an array of token ids");
  const pieces = tokens.map((t) => state.model.tokenToBytes(checkToken(state, "tokens", t), { special: true }));
  sendJson(res, 200, { content: Buffer.concat(pieces).toString("utf8") });
}

/** POST /apply-template {messages, ...} → {prompt}: what /v1/chat/completions evaluates. */
export async function applyTemplate(state: ServerState, body: Body, res: ServerResponse): Promise<void> {
  const params = chatParams(body, mediaParams(state));
  const rendered = await state.template.render(params.messages, {
    addGenerationPrompt: true,
    ...(params.variables ? { variables: params.variables } : {}),
    ...(params.tools ? renderOptions(params.tools) : {}),
  });
  sendJson(res, 200, { prompt: rendered.text });
}

/**
 * The infill prompt, as llama-server's format_prompt_infill builds it: the extra context (the
 * repo-level pattern when the model has FIM_REP/FIM_SEP), BOS where the model adds it, then
 * FIM_PRE prefix prompt FIM_SUF suffix FIM_MID. The prefix and suffix are cut to fit a batch
 * (3/4 of it for the prefix, the end of it kept; the rest for the suffix, its start kept); the
 * extra context fills what the context leaves.
 */
export function infillTokens(
  state: ServerState,
  input: { prefix: number[]; suffix: number[]; extra: Array<{ text: string; filename: string }>; prompt: number[] },
): number[] {
  const { model, context } = state;
  const st = model.specialTokens;
  const [pre, suf, mid] = [st.fimPre!, st.fimSuf!, st.fimMid!];
  const tok = (text: string) => [...model.tokenize(text, { addSpecial: false, parseSpecial: false })];
  const extra: number[] = [];
  if (st.fimRep !== null) extra.push(st.fimRep, ...tok("myproject\n"));
  for (const chunk of input.extra) {
    if (st.fimSep !== null) extra.push(st.fimSep, ...tok(`${chunk.filename}\n`));
    else extra.push(...tok("\n\n--- snippet ---\n\n"));
    extra.push(...tok(chunk.text));
  }
  if (st.fimSep !== null) extra.push(st.fimSep, ...tok("filename\n"));

  const nBatch = context.batchSize;
  const nCtx = context.contextSize;
  const nPredict = -1; // llama-server's -n default
  const prefixTake = Math.min(input.prefix.length, 3 * Math.floor(nBatch / 4));
  const suffixTake = Math.min(input.suffix.length, Math.max(0, Math.floor(nBatch / 4) - (2 + input.prompt.length)));
  const extraTake = Math.min(Math.max(0, nCtx - nBatch - 2 * nPredict), extra.length);

  const head = [pre, ...input.prefix.slice(input.prefix.length - prefixTake), ...input.prompt];
  if (st.addBos && st.bos !== null) head.unshift(st.bos);
  return [...extra.slice(extra.length - extraTake), ...head, suf, ...input.suffix.slice(0, suffixTake), mid];
}

/** POST /infill {input_prefix, input_suffix, input_extra?, prompt?, ...the fields of /v1/completions} */
export async function infill(state: ServerState, body: Body, res: ServerResponse, signal: AbortSignal): Promise<void> {
  const st = state.model.specialTokens;
  const missing = (["fim_pre", "fim_suf", "fim_mid"] as const).filter((_, i) => [st.fimPre, st.fimSuf, st.fimMid][i] === null);
  if (missing.length > 0) {
    throw new HttpError(400, `This model has no fill-in-the-middle tokens (fim_pre/fim_suf/fim_mid): ${missing.join(", ")} missing`, "invalid_request_error", "fim_unsupported");
  }
  const prompt = body.prompt ?? "";
  if (typeof prompt !== "string") throw badField("prompt", "prompt must be a string (added after the prefix)");
  for (const key of ["input_prefix", "input_suffix"]) {
    if ((body[key] ?? undefined) === undefined) throw badField(key, `${key} is required`);
  }
  const prefix = tokenizeMixed(state, "input_prefix", body.input_prefix, false, false);
  const suffix = tokenizeMixed(state, "input_suffix", body.input_suffix, false, false);
  const rawExtra = body.input_extra ?? [];
  if (!Array.isArray(rawExtra)) throw badField("input_extra", 'input_extra must be an array of {"filename": string, "text": string}');
  const extra = rawExtra.map((chunk: unknown, i) => {
    const c = chunk as Body | null;
    if (c === null || typeof c !== "object" || typeof c.text !== "string") throw badField(`input_extra[${i}].text`, `input_extra[${i}] must be an object with a string "text"`);
    if ((c.filename ?? undefined) !== undefined && typeof c.filename !== "string") throw badField(`input_extra[${i}].filename`, `input_extra[${i}].filename must be a string`);
    return { text: c.text, filename: typeof c.filename === "string" ? c.filename : "tmp" };
  });
  const params = completionParams({ ...body, prompt: "", echo: null });
  const promptTokens = [...state.model.tokenize(prompt, { addSpecial: false, parseSpecial: true })];
  const tokens = infillTokens(state, { prefix, suffix, extra, prompt: promptTokens });
  await generate(state, "completion", params, Int32Array.from(tokens), [], "", res, signal);
}
