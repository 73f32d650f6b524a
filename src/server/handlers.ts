/** The OpenAI-compatible endpoints: completions, chat completions (streamed or not), embeddings. */
import { randomUUID } from "node:crypto";
import type { ServerResponse } from "node:http";

import type { ChatTemplate, RenderedMedia } from "../chat.js";
import { ChatOutputParser, PieceTracker, grammarOptions, renderOptions, type ParsedChatOutput } from "../chat-tools.js";
import type { Context } from "../context.js";
import type { EmbeddingContext } from "../embedding.js";
import { LlamaError } from "../errors.js";
import type { FinishReason, GeneratedToken } from "../generation.js";
import type { PromptResult, SpeculativeOptions } from "../session.js";
import { MEDIA_MARKER, partsAtMarkers, type PromptPart } from "../media.js";
import type { Model } from "../model.js";
import { EventStream, HttpError, anySignal, badField, requestDeadline, sendJson } from "./http.js";
import { mediaError, resolveMedia, type MediaParams, type RequestMedia } from "./media.js";
import { chatParams, completionParams, type GenerationParams } from "./params.js";
import { deltaOf, replyMessage } from "./tools.js";
import type { SessionPool } from "./pool.js";
import type { ServerMetrics } from "./metrics.js";

/** What the handlers work with; made by startServer(). */
export interface ServerState {
  model: Model;
  modelId: string;
  context: Context;
  pool: SessionPool;
  template: ChatTemplate;
  created: number;
  /** Counters and per-sequence state for /metrics, /slots and the responses' `timings`. */
  metrics: ServerMetrics;
  /** The opt-in operator endpoints that are on (ServerOptions.metrics, .slots). */
  endpoints: { metrics: boolean; slots: boolean };
  /** The embedding context and the id of its model (made on first use). */
  embeddings(): Promise<{ context: EmbeddingContext; modelId: string }>;
  embeddingModelIds: string[];
  /** The server's cap on max_tokens (ServerOptions.maxTokensCap); undefined: none. */
  maxTokensCap?: number;
  /** Whether image_url may be an http(s) URL the server fetches (ServerOptions.allowImageUrls). */
  allowImageUrls?: boolean;
  /** The draft model every completion uses (ServerOptions.speculative). */
  speculative?: SpeculativeOptions;
}

/** What a request's image and audio parts may be: what the model's projector takes. */
export function mediaParams(state: ServerState): MediaParams {
  return { accepts: state.model.info.projector, allowUrls: state.allowImageUrls ?? false };
}

/** A chat prompt with images or audio: the rendered text (one marker per item) and its parts. */
interface MediaPrompt {
  parts: PromptPart[];
  rendered: readonly RenderedMedia[];
  media: readonly RequestMedia[];
}

type Kind = "completion" | "chat";

/** OpenAI's finish reasons: the model's end-of-turn and stop strings are both "stop". */
function finishReason(reason: FinishReason | undefined): "stop" | "length" {
  return reason === "length" ? "length" : "stop";
}

/** Maps a library error to an HTTP error (a bad request, or the server's fault). */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  // Stopped by a signal whose reason is an HttpError: a time limit, the server's shutdown.
  if (err instanceof LlamaError && err.code === "ERR_ABORTED" && err.cause instanceof HttpError) return err.cause;
  if (err instanceof LlamaError) {
    switch (err.code) {
      case "ERR_CONTEXT_FULL":
        return new HttpError(400, err.message, "invalid_request_error", "context_length_exceeded");
      case "ERR_INVALID_ARGUMENT":
      case "ERR_MEDIA_INVALID":
      case "ERR_TEMPLATE_INVALID":
      case "ERR_GRAMMAR_INVALID":
      case "ERR_TOKEN_INVALID":
        return new HttpError(400, err.message, "invalid_request_error", err.code.toLowerCase());
      default:
        return new HttpError(500, err.message, "server_error", err.code.toLowerCase());
    }
  }
  return new HttpError(500, err instanceof Error ? err.message : String(err), "server_error");
}

export function listModels(state: ServerState, res: ServerResponse): void {
  const ids = [state.modelId, ...state.embeddingModelIds.filter((id) => id !== state.modelId)];
  sendJson(res, 200, {
    object: "list",
    data: ids.map((id) => ({ id, object: "model", created: state.created, owned_by: "llama-napi" })),
  });
}

export async function completions(state: ServerState, body: Record<string, unknown>, res: ServerResponse, signal: AbortSignal): Promise<void> {
  const params = completionParams(body);
  const model = state.model;
  const tokens = typeof params.prompt === "string" ? model.tokenize(params.prompt, { addSpecial: true, parseSpecial: true }) : Int32Array.from(params.prompt);
  for (const t of tokens) if (t < 0 || t >= model.info.vocabSize) throw badField("prompt", `Token ${t} is out of range for this model`);
  const echo = params.echo ? (typeof params.prompt === "string" ? params.prompt : model.detokenize(tokens)) : "";
  await generate(state, "completion", { ...params, maxTokens: params.maxTokens ?? 16 }, tokens, [], echo, res, signal);
}

export async function chatCompletions(state: ServerState, body: Record<string, unknown>, res: ServerResponse, signal: AbortSignal): Promise<void> {
  const params = chatParams(body, mediaParams(state));
  if (params.media.length > 0) await resolveMedia(params.media, state.model.info.projector!, anySignal(signal, requestDeadline(res)));
  const rendered = await state.template.render(params.messages, {
    addGenerationPrompt: true,
    ...(params.variables ? { variables: params.variables } : {}),
    ...(params.tools ? renderOptions(params.tools) : {}),
  });
  let media: MediaPrompt | undefined;
  let tokens: Int32Array;
  if (rendered.media.length === 0) {
    tokens = state.model.tokenize(rendered.text, { addSpecial: true, parseSpecial: true });
  } else {
    // The text's tokens (the media's positions are known once evaluated): for the length check
    // and for choosing the session whose history shares the longest prefix.
    tokens = state.model.tokenize(rendered.text.replaceAll(MEDIA_MARKER, ""), { addSpecial: true, parseSpecial: true });
    media = { parts: partsAtMarkers(rendered.text, rendered.media), rendered: rendered.media, media: params.media };
  }
  const endOfTurn = await state.template.endOfTurn();
  let parser: ChatOutputParser | undefined;
  if (params.tools && rendered.format) {
    parser = new ChatOutputParser(rendered.format, { parseToolCalls: params.tools.toolChoice !== "none" });
    params.sampling = { ...params.sampling, ...grammarOptions(rendered.format, params.tools.toolChoice, params.tools.reasoning) };
  }
  await generate(state, "chat", params, tokens, [...rendered.stops, ...(endOfTurn ? [endOfTurn] : [])], "", res, signal, parser, media);
}

export async function generate(
  state: ServerState,
  kind: Kind,
  params: GenerationParams,
  tokens: Int32Array,
  templateStops: string[],
  echo: string,
  res: ServerResponse,
  signal: AbortSignal,
  parser?: ChatOutputParser,
  media?: MediaPrompt,
): Promise<void> {
  const capacity = state.context.contextSize;
  if (tokens.length >= capacity) {
    throw new HttpError(400, `The prompt has ${tokens.length} tokens; this server's sessions hold ${capacity} (the reply included)`, "invalid_request_error", "context_length_exceeded", kind === "chat" ? "messages" : "prompt");
  }
  const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID().replaceAll("-", "")}`;
  const created = Math.floor(Date.now() / 1000);
  const head = { id, object: kind === "chat" ? "chat.completion.chunk" : "text_completion", created, model: state.modelId };
  // The request's time limit: before the reply begins it ends the request (a 503, the deadline's
  // reason); after, it ends the generation with what it has (finish_reason "length").
  const deadline = requestDeadline(res);
  // With media, `tokens` are the text's: the session is chosen by the text before the first item.
  const session = await state.pool.acquire(media ? state.model.tokenize(media.parts[0] as string, { addSpecial: true, parseSpecial: true }) : tokens, anySignal(signal, deadline));
  const record = state.metrics.begin(session, tokens.length);
  let unlisten = () => {};
  try {
    // A text prompt is evaluated by the generation itself, in the decode batches of the other
    // sessions, and its first token is sampled from the decode that ends it. A prompt with media
    // goes through prompt() first.
    let mediaPrompted: PromptResult | undefined;
    if (media) {
      try {
        mediaPrompted = await session.prompt(media.parts, { addSpecial: true, parseSpecial: true, signal: anySignal(signal, deadline) });
      } catch (err) {
        throw mediaError(err, media.rendered, media.media) ?? err;
      }
      if (mediaPrompted.length >= capacity) {
        throw new HttpError(400, `The prompt has ${mediaPrompted.length} tokens, images and audio included; this server's sessions hold ${capacity} (the reply included)`, "invalid_request_error", "context_length_exceeded", "messages");
      }
    }
    // The history's length after the prompt: an encoder-decoder model's decoder starts from its
    // start token alone (the prompt goes to the encoder).
    const promptLength = mediaPrompted?.length ?? (state.model.info.decoderStartToken === null ? tokens.length : 1);
    const stop = [...params.stop, ...templateStops];
    const cap = state.maxTokensCap ?? capacity;
    const generation = session.generate({
      ...(media ? {} : { prompt: tokens }),
      ...params.sampling,
      maxTokens: Math.min(params.maxTokens ?? cap, cap, capacity - promptLength),
      ...(stop.length > 0 ? { stop } : {}),
      ...(params.logprobs === undefined ? {} : { logprobs: params.logprobs === 0 ? true : params.logprobs }),
      ...(state.speculative === undefined ? {} : { speculative: state.speculative }),
      signal,
    });
    // The request's time limit: within the prompt it ends the request (the 503 below); after, it
    // ends the generation with what it has.
    const stopAtDeadline = () => generation.abort();
    deadline?.addEventListener("abort", stopAtDeadline, { once: true });
    unlisten = () => deadline?.removeEventListener("abort", stopAtDeadline);
    if (deadline?.aborted) generation.abort();
    let prompted: PromptResult;
    try {
      prompted = mediaPrompted ?? ((await generation.prompted) as PromptResult);
    } catch (err) {
      if (deadline?.aborted && deadline.reason instanceof HttpError) throw deadline.reason;
      throw err;
    }
    record.prompted(prompted);
    // An encoder-decoder model's prompt is its encoder's input, and its reply fills the decoder's
    // history (from its start token).
    const promptTokens = state.model.info.decoderStartToken === null ? prompted.length : tokens.length;
    record.drafts(() => generation.speculative);
    /** Why the generation ended; one stopped by the time limit was cut short, as at max_tokens. */
    const ended = (): FinishReason | undefined => (generation.finishReason === "aborted" && deadline?.aborted ? "length" : generation.finishReason);
    const logprobs = new Logprobs(state.model, kind, params.logprobs !== undefined);
    let text = echo;
    let count = 0;
    const tracker = new PieceTracker();
    if (params.stream) {
      const stream = new EventStream(res);
      try {
        if (kind === "chat") await stream.send({ ...head, choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }] });
        else if (echo !== "") await stream.send({ ...head, choices: [{ index: 0, text: echo, logprobs: null, finish_reason: null }] });
        for await (const item of generation) {
          count++;
          record.token(item.text);
          const lp = logprobs.add(item, text.length);
          text += item.text;
          if (parser) {
            await sendPieces(stream, head, parser, tracker, text, true, lp);
            continue;
          }
          if (item.text === "" && lp === null) continue;
          const choice = kind === "chat" ? { index: 0, delta: { content: item.text }, logprobs: lp, finish_reason: null } : { index: 0, text: item.text, logprobs: lp, finish_reason: null };
          await stream.send({ ...head, choices: [choice] });
        }
        let finish: string = finishReason(ended());
        if (parser) {
          const final = await sendPieces(stream, head, parser, tracker, text, false, null, ended() !== "length");
          finish = replyMessage(final, (i, p) => tracker.idOf(i, p), finishReason(ended())).finish;
        }
        const last = kind === "chat" ? { index: 0, delta: {}, logprobs: null, finish_reason: finish } : { index: 0, text: "", logprobs: null, finish_reason: finish };
        // llama-server's timings go in the last chunk.
        const timings = record.timings();
        await stream.send({ ...head, choices: [last], ...(params.includeUsage ? {} : { timings }) });
        if (params.includeUsage) await stream.send({ ...head, choices: [], usage: usage(promptTokens, count), timings });
        stream.end();
      } catch (err) {
        // The status line is sent: the error goes into the stream, which then ends.
        stream.fail(toHttpError(err));
      }
      return;
    }
    for await (const item of generation) {
      count++;
      record.token(item.text);
      logprobs.add(item, text.length);
      text += item.text;
    }
    let finish: string = finishReason(ended());
    let message: Record<string, unknown> = { role: "assistant", content: text };
    if (parser) {
      const parsed = finalParse(parser, text, ended() !== "length");
      ({ message, finish } = replyMessage(parsed, (i, p) => tracker.idOf(i, p), finishReason(ended())));
    }
    const choice =
      kind === "chat"
        ? { index: 0, message, logprobs: logprobs.all(), finish_reason: finish }
        : { index: 0, text, logprobs: logprobs.all(), finish_reason: finish };
    sendJson(res, 200, { ...head, object: kind === "chat" ? "chat.completion" : "text_completion", choices: [choice], usage: usage(promptTokens, count), timings: record.timings() });
  } finally {
    unlisten();
    record.end();
    state.pool.release(session);
  }
}

/**
 * The final parse of a reply: a complete one that does not match the format is an error
 * (ERR_TOOL_CALL, a 500 as in llama-server); one cut at max_tokens is read as partial output.
 */
function finalParse(parser: ChatOutputParser, text: string, complete: boolean): ParsedChatOutput {
  if (complete) return parser.parse(text, false);
  try {
    return parser.parse(text, true);
  } catch {
    return { content: text, reasoning: "", toolCalls: [] };
  }
}

/** Parses the text so far and streams what is new in it (content, reasoning, tool-call pieces). */
async function sendPieces(
  stream: EventStream,
  head: Record<string, unknown>,
  parser: ChatOutputParser,
  tracker: PieceTracker,
  text: string,
  partial: boolean,
  lp: Record<string, unknown> | null,
  complete = true,
): Promise<ParsedChatOutput> {
  let parsed: ParsedChatOutput;
  if (partial) {
    try {
      parsed = parser.parse(text, true);
    } catch {
      return { content: "", reasoning: "", toolCalls: [] }; // not parseable yet
    }
  } else {
    parsed = finalParse(parser, text, complete);
  }
  let first = true;
  for (const piece of tracker.update(parsed)) {
    await stream.send({ ...head, choices: [{ index: 0, delta: deltaOf(piece), logprobs: first ? lp : null, finish_reason: null }] });
    first = false;
  }
  if (first && lp !== null) await stream.send({ ...head, choices: [{ index: 0, delta: {}, logprobs: lp, finish_reason: null }] });
  return parsed;
}

function usage(prompt: number, completion: number): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** Log-probabilities in OpenAI's two formats (chat: `content` entries; completions: parallel arrays). */
class Logprobs {
  readonly #chat: Array<Record<string, unknown>> = [];
  readonly #tokens: string[] = [];
  readonly #values: number[] = [];
  readonly #top: Array<Record<string, number>> = [];
  readonly #offsets: number[] = [];

  constructor(
    private readonly model: Model,
    private readonly kind: Kind,
    private readonly enabled: boolean,
  ) {}

  /** Records a token; returns its entry in the chunk format (null when disabled). */
  add(item: GeneratedToken, offset: number): Record<string, unknown> | null {
    if (!this.enabled || item.logprob === undefined) return null;
    const piece = this.model.tokenToPiece(item.token, { special: true });
    const top = item.top ?? [];
    if (this.kind === "chat") {
      const entry = {
        token: piece,
        logprob: item.logprob,
        bytes: [...this.model.tokenToBytes(item.token, { special: true })],
        top_logprobs: top.map((t) => ({
          token: this.model.tokenToPiece(t.token, { special: true }),
          logprob: t.logprob,
          bytes: [...this.model.tokenToBytes(t.token, { special: true })],
        })),
      };
      this.#chat.push(entry);
      return { content: [entry] };
    }
    const topMap = Object.fromEntries(top.map((t) => [this.model.tokenToPiece(t.token, { special: true }), t.logprob]));
    this.#tokens.push(piece);
    this.#values.push(item.logprob);
    this.#top.push(topMap);
    this.#offsets.push(offset);
    return { tokens: [piece], token_logprobs: [item.logprob], top_logprobs: [topMap], text_offset: [offset] };
  }

  all(): Record<string, unknown> | null {
    if (!this.enabled) return null;
    if (this.kind === "chat") return { content: this.#chat };
    return { tokens: this.#tokens, token_logprobs: this.#values, top_logprobs: this.#top, text_offset: this.#offsets };
  }
}

export async function embeddings(state: ServerState, body: Record<string, unknown>, res: ServerResponse): Promise<void> {
  const input = body.input;
  const texts = typeof input === "string" ? [input] : input;
  if (!Array.isArray(texts) || texts.length === 0 || texts.some((t) => typeof t !== "string")) {
    throw badField("input", "input must be a string or a non-empty array of strings");
  }
  if (texts.length > 2048) throw badField("input", "input may hold at most 2048 strings");
  const format = body.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") throw badField("encoding_format", 'encoding_format must be "float" or "base64"');
  if (body.dimensions !== undefined && body.dimensions !== null) throw badField("dimensions", "dimensions is not supported");
  const { context, modelId } = await state.embeddings();
  const vectors = await context.embed(texts as string[], { normalize: true });
  if (context.pooling === "none") {
    throw new HttpError(400, 'The embedding model pools with "none" (one vector per token), which /v1/embeddings cannot return', "invalid_request_error", "unsupported_pooling");
  }
  const promptTokens = (texts as string[]).reduce((n, t) => n + context.model.tokenize(t, { addSpecial: true }).length, 0);
  sendJson(res, 200, {
    object: "list",
    data: vectors.map((v, index) => ({
      object: "embedding",
      index,
      embedding: format === "base64" ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") : Array.from(v),
    })),
    model: modelId,
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  });
}
