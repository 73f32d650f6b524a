/**
 * A conversation with a model: the history is rendered with the model's chat template at every
 * turn and given to the session whole; the session's prefix reuse then evaluates only what is
 * new (the user's message and the template's markup around it), so the KV cache carries over
 * from turn to turn.
 *
 * ```ts
 * const chat = new ChatSession(context, { systemPrompt: "You are terse." });
 * for await (const { text } of chat.send("Hello!", { maxTokens: 64 })) process.stdout.write(text);
 * const answer = await chat.send("And then?").text();
 * ```
 *
 * With a model that has a projector (loadModel(path, { projector })), a message may hold images
 * and audio: `chat.send([{ type: "image", data: "photo.png" }, { type: "text", text: "What is it?" }])`.
 * The conversation then renders with libmtmd's marker where each one goes and is evaluated with
 * its media in order (session.prompt with parts); the same bytes at the same place are reused
 * from the cache, turn after turn, like text.
 */
import {
  ChatTemplate,
  checkChatOptions,
  checkContent,
  type ChatContentPart,
  type ChatMessage,
  type ChatTemplateOptions,
  type RenderChatOptions,
  type RenderedChat,
  type RenderedMedia,
} from "./chat.js";
import { ChatReplyBase } from "./chat-reply.js";
import { ChatToolReply } from "./chat-tool-reply.js";
import { TOOL_FIELD_KEYS, grammarOptions, toolPlan, type ChatToolFields, type ToolRoundStart } from "./chat-tools.js";
import type { Context } from "./context.js";
import { AbortError, ContextFullError, LlamaError, invalidArgument } from "./errors.js";
import type { FinishReason, GeneratedToken, Generation } from "./generation.js";
import { MEDIA_MARKER, partsAtMarkers, readPromptParts, type PromptPart } from "./media.js";
import type { GenerateOptions, PromptResult, Session } from "./session.js";

/**
 * The options of a {@link ChatSession}. `engine`, `bosToken` and `eosToken` are those of
 * renderChat(), for the template the chat makes (not with a ChatTemplate, which has its own).
 * An option not listed here is refused with ERR_INVALID_ARGUMENT.
 */
export interface ChatSessionOptions extends Omit<ChatTemplateOptions, "template"> {
  /** The system message, kept first in the history and never dropped. */
  systemPrompt?: string;
  /** A template (text or built-in name), or a ChatTemplate; default: the model's own. */
  template?: string | ChatTemplate;
  /** Messages to start from (after the system prompt), e.g. a saved conversation. */
  messages?: readonly ChatMessage[];
  /** Use this session of the context instead of creating one (it is not disposed with the chat). */
  session?: Session;
  /**
   * Tokens kept free for the reply when the conversation is fitted into the session (default: the
   * send's maxTokens, else a quarter of the session's capacity).
   */
  reserveTokens?: number;
  /** Called when old turns were dropped to make room (after the shortened conversation is evaluated). */
  onTrim?: (event: ChatTrimEvent) => void;
}

/** Every key of ChatSessionOptions (checked by the compiler). */
const SESSION_KEYS: { readonly [K in keyof ChatSessionOptions]-?: true } = {
  systemPrompt: true,
  template: true,
  engine: true,
  bosToken: true,
  eosToken: true,
  messages: true,
  session: true,
  reserveTokens: true,
  onTrim: true,
};
const KNOWN_KEYS: readonly string[] = Object.keys(SESSION_KEYS);

/** Generation options of a turn (context shifts are not offered: old turns are dropped instead). */
export type ChatSendOptions = Omit<GenerateOptions, "contextShift" | "prompt">;

/**
 * Generation options of a turn with tools or reasoning (see src/chat-tools.ts): the reply is a
 * {@link ChatToolReply} of pieces. The tool grammar replaces `grammar` / `jsonSchema`.
 */
export type ChatToolSendOptions = Omit<ChatSendOptions, "grammar" | "jsonSchema" | "grammarLazy" | "grammarTriggers" | "grammarPrefill"> &
  ChatToolFields &
  ({ tools: NonNullable<ChatToolFields["tools"]> } | { reasoning: NonNullable<ChatToolFields["reasoning"]> });

/** Old turns were dropped so that the conversation fits: what went and what it cost. */
export interface ChatTrimEvent {
  /** User turns dropped (each with the replies that followed it). */
  droppedTurns: number;
  /** The messages dropped, oldest first. */
  droppedMessages: ChatMessage[];
  /** Tokens of the shortened conversation that had to be evaluated again. */
  reEvaluated: number;
  /** Tokens that were still reusable from the cache (the system prompt's, typically). */
  reused: number;
}

/** One finished turn of a {@link ChatSession}: the reply, why it ended and what evaluating the conversation cost. */
export interface ChatTurnResult {
  /** The reply, as added to the history. */
  text: string;
  /** The reply's tokens. */
  tokens: number[];
  /** Why the reply ended. */
  finishReason: FinishReason;
  /** The rendered conversation's evaluation: tokens reused from the cache and evaluated anew. */
  prompt: PromptResult;
  /** Old user turns dropped before this turn to make room (0 when none). */
  droppedTurns: number;
}

type Commit = (started: Started, text: string, tokens: number[], reason: FinishReason) => ChatTurnResult;

interface Started {
  generation: Generation;
  prompt: PromptResult;
  droppedTurns: number;
  history: ChatMessage[];
}

/**
 * The reply to one message: an AsyncIterable of generated tokens, to be consumed once (by
 * iterating, or with text() / collect()). When it ends, the reply joins the chat's history.
 */
export class ChatReply extends ChatReplyBase<GeneratedToken, ChatTurnResult> {
  readonly #started: Promise<Started>;
  readonly #commit: Commit;

  /** @internal Use chatSession.send(). */
  constructor(started: Promise<Started>, commit: Commit, stopper: AbortController) {
    super(stopper);
    this.#started = started;
    this.#commit = commit;
    started.catch((err: unknown) => this.reject(err));
  }

  /** Consumes the reply and resolves to its text. */
  async text(): Promise<string> {
    return (await this.collect()).text;
  }

  /** @internal */
  protected async *iterate(): AsyncGenerator<GeneratedToken> {
    let started: Started;
    try {
      started = await this.#started;
    } catch (err) {
      this.reject(err);
      throw err;
    }
    let text = "";
    const tokens: number[] = [];
    let failed = false;
    let complete = false;
    try {
      for await (const item of started.generation) {
        text += item.text;
        tokens.push(item.token);
        yield item;
      }
      complete = true;
    } catch (err) {
      // An abort still ends the turn: the part generated joins the history. The caller's signal
      // also throws the AbortError to the consumer; abort() ends the reply quietly.
      if (!(err instanceof AbortError)) {
        failed = true;
        this.reject(err);
        throw err;
      }
      if (!this.quiet) throw err;
    } finally {
      // Also when the consumer stops early (break), which aborts the generation.
      if (!failed) this.resolve(this.#commit(started, text, tokens, (complete && started.generation.finishReason) || "aborted"));
    }
  }
}

/** A conversation over one session of a context; see the module comment. */
export class ChatSession {
  /** The context whose session the chat runs on. */
  readonly context: Context;
  /** The session holding the conversation's tokens. */
  readonly session: Session;
  /** The template every turn is rendered with. */
  readonly template: ChatTemplate;
  readonly #ownsSession: boolean;
  readonly #systemPrompt: string | undefined;
  readonly #reserve: number | undefined;
  readonly #onTrim: ((event: ChatTrimEvent) => void) | undefined;
  #history: ChatMessage[];
  #busy = false;
  /** The bytes of the history's media parts, read once (a file when its message is first evaluated). */
  readonly #mediaBytes = new WeakMap<ChatContentPart, Uint8Array>();
  /** Positions each media item took in the session (learned from evaluations), for fitting. */
  readonly #mediaTokens = new WeakMap<Uint8Array, number>();

  /** A chat on a new session of `context` (or `options.session`); unknown options throw ERR_INVALID_ARGUMENT. */
  constructor(context: Context, options: ChatSessionOptions = {}) {
    checkChatOptions("ChatSession options", options, KNOWN_KEYS);
    const { systemPrompt, template, messages = [], session, reserveTokens, onTrim, ...templateOptions } = options;
    if (systemPrompt !== undefined && typeof systemPrompt !== "string") invalidArgument("systemPrompt", "a string", systemPrompt);
    if (reserveTokens !== undefined && (!Number.isInteger(reserveTokens) || reserveTokens < 1)) {
      invalidArgument("reserveTokens", "a positive integer", reserveTokens);
    }
    if (onTrim !== undefined && typeof onTrim !== "function") invalidArgument("onTrim", "a function", onTrim);
    if (!Array.isArray(messages)) invalidArgument("messages", "an array of { role, content }", messages);
    for (const [i, m] of messages.entries()) checkMessage(m, `messages[${i}]`);
    if (session !== undefined && session.context !== context) invalidArgument("session", "a session of this context", session);
    if (template instanceof ChatTemplate) {
      for (const [name, value] of Object.entries(templateOptions)) {
        if (value !== undefined) invalidArgument(name, "unset with a ChatTemplate (give it to new ChatTemplate() instead)", value);
      }
    }
    this.template = template instanceof ChatTemplate ? template : new ChatTemplate(context.model, { ...templateOptions, template });
    this.context = context;
    this.session = session ?? context.createSession();
    this.#ownsSession = session === undefined;
    this.#systemPrompt = systemPrompt;
    this.#reserve = reserveTokens;
    this.#onTrim = onTrim;
    this.#history = messages.map(copyMessage);
  }

  /** The conversation so far, system prompt first. */
  get messages(): ChatMessage[] {
    return [...this.#system(), ...this.#history.map(copyMessage)];
  }

  /** The system message given, if any. */
  get systemPrompt(): string | undefined {
    return this.#systemPrompt;
  }

  /** Whether a reply is being generated. */
  get busy(): boolean {
    return this.#busy;
  }

  /**
   * Sends a user message and streams the reply. The conversation is rendered with the template
   * and evaluated (only what the cache does not hold yet); when it does not fit with room for the
   * reply, the oldest turns are dropped (the system prompt stays) and `onTrim` says what it cost.
   */
  /**
   * With `tools` or `reasoning` (src/chat-tools.ts): the reply streams pieces (`{ text }`,
   * `{ reasoning }`, `{ toolCall }`), is parsed with the template's own chat format, and runs the
   * tool loop when the tools have handlers.
   */
  /**
   * The message is text, or a list of parts with images and audio (`{ type: "image", data }`,
   * `{ type: "audio", data }`, data the bytes or a file path, read when the turn is evaluated);
   * the history keeps the parts.
   */
  send(message: string | ChatContentPart[], options: ChatToolSendOptions): ChatToolReply;
  send(message: string | ChatContentPart[], options?: ChatSendOptions): ChatReply;
  send(message: string | ChatContentPart[], options: ChatSendOptions | ChatToolSendOptions = {}): ChatReply | ChatToolReply {
    if (options !== null && typeof options === "object" && TOOL_FIELD_KEYS.some((k) => k in options)) {
      return this.#sendWithTools(message, options as ChatToolSendOptions);
    }
    return this.#sendPlain(message, options as ChatSendOptions);
  }

  /**
   * Adds messages to the history without generating: tool results (`{ role: "tool", toolCallId,
   * content }`) for calls a reply ended on, before the next send.
   */
  addMessages(...messages: ChatMessage[]): void {
    if (this.#busy) throw new LlamaError("ERR_BUSY", "A reply is still running: consume or abort it before adding messages");
    for (const [i, m] of messages.entries()) checkMessage(m, `messages[${i}]`);
    this.#history = [...this.#history, ...messages.map(copyMessage)];
  }

  #sendWithTools(message: string | ChatContentPart[], options: ChatToolSendOptions): ChatToolReply {
    checkContent(message, "message");
    const { tools, toolChoice, parallelToolCalls, maxToolRounds, reasoning, ...generate } = options as ChatToolFields & ChatSendOptions;
    for (const key of ["grammar", "jsonSchema", "grammarLazy", "grammarTriggers", "grammarPrefill"] as const) {
      if (generate[key] !== undefined) invalidArgument(key, "unset with tools (the tool grammar applies)", generate[key]);
    }
    const plan = toolPlan({
      ...(tools === undefined ? {} : { tools }),
      ...(toolChoice === undefined ? {} : { toolChoice }),
      ...(parallelToolCalls === undefined ? {} : { parallelToolCalls }),
      ...(maxToolRounds === undefined ? {} : { maxToolRounds }),
      ...(reasoning === undefined ? {} : { reasoning }),
    });
    const { stopper, settle } = this.#begin(generate);
    const driver = {
      start: async (messages: ChatMessage[], render: RenderChatOptions): Promise<ToolRoundStart> => {
        const s = await this.#start(messages, generate, stopper.signal, render, (r) => grammarOptions(r.format, plan.toolChoice, plan.reasoning));
        return s;
      },
      commit: (history: ChatMessage[]) => {
        this.#history = history;
      },
      settle,
    };
    return new ChatToolReply(copyMessage({ role: "user", content: message }), plan, driver, stopper);
  }

  /** Checks the generation options of a send, marks the chat busy, and wires the signal to a stopper. */
  #begin(options: ChatSendOptions): { stopper: AbortController; settle: () => void } {
    if (options === null || typeof options !== "object") invalidArgument("options", "an object", options);
    if ("contextShift" in options) invalidArgument("contextShift", "unset (a chat drops old turns instead)", (options as GenerateOptions).contextShift);
    if ("prompt" in options) invalidArgument("prompt", "unset (the chat's messages are the prompt)", (options as GenerateOptions).prompt);
    if (this.#busy) throw new LlamaError("ERR_BUSY", "The previous reply is still running: consume or abort it before sending another message");
    const { maxTokens } = options;
    if (maxTokens !== undefined && (!Number.isInteger(maxTokens) || maxTokens < 1)) invalidArgument("maxTokens", "a positive integer", maxTokens);
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) invalidArgument("signal", "an AbortSignal", options.signal);
    this.#busy = true;
    // reply.abort() and the caller's signal both stop the turn.
    const stopper = new AbortController();
    const { signal } = options;
    const forward = () => stopper.abort(signal?.reason);
    if (signal?.aborted) forward();
    else signal?.addEventListener("abort", forward, { once: true });
    const settle = () => {
      this.#busy = false;
      signal?.removeEventListener("abort", forward);
    };
    return { stopper, settle };
  }

  #sendPlain(message: string | ChatContentPart[], options: ChatSendOptions): ChatReply {
    checkContent(message, "message");
    const { stopper, settle } = this.#begin(options);
    const started = this.#start([copyMessage({ role: "user", content: message })], options, stopper.signal);
    started.catch(settle);
    const reply = new ChatReply(
      started,
      (s, text, tokens, finishReason) => {
        this.#history = [...s.history, { role: "assistant", content: text }];
        settle();
        return { text, tokens, finishReason, prompt: s.prompt, droppedTurns: s.droppedTurns };
      },
      stopper,
    );
    reply.result.catch(settle);
    return reply;
  }

  /** Frees the session (when the chat created it). */
  dispose(): void {
    if (this.#ownsSession) this.session.dispose();
  }

  /** The same as dispose(), for `using`. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  #system(): ChatMessage[] {
    return this.#systemPrompt === undefined ? [] : [{ role: "system", content: this.#systemPrompt }];
  }

  async #start(
    added: ChatMessage[],
    options: ChatSendOptions,
    stopper: AbortSignal,
    render: RenderChatOptions = {},
    sampling: (rendered: RenderedChat) => Partial<GenerateOptions> = () => ({}),
  ): Promise<Started & { rendered: RenderedChat }> {
    const { maxTokens, stop, signal, ...rest } = options;
    const capacity = this.session.capacity;
    const reserve = Math.max(1, maxTokens ?? this.#reserve ?? Math.floor(capacity / 4));
    let history = [...this.#history, ...added];
    const dropped: ChatMessage[] = [];
    let rendered: RenderedChat;
    let prompt: PromptResult;
    // The prompt's length: its tokens (text), or an estimate until it is evaluated (media).
    let length: number;
    for (;;) {
      const messages = [...this.#system(), ...history];
      rendered = await this.template.render(messages, { ...render, addGenerationPrompt: true });
      if (rendered.media.length === 0) {
        const tokens = this.context.model.tokenize(rendered.text, { addSpecial: true, parseSpecial: true });
        length = tokens.length;
        if (length + reserve <= capacity) {
          prompt = await this.session.prompt(tokens, { signal });
          break;
        }
      } else {
        const media = await this.#readMedia(messages, rendered.media);
        length = this.#estimate(rendered.text, media);
        if (length + reserve <= capacity) {
          const evaluated = await this.#promptMedia(rendered.text, rendered.media, media, signal);
          if (evaluated !== undefined) {
            prompt = evaluated;
            length = evaluated.length;
            if (length + reserve <= capacity) break;
          }
        }
      }
      const next = nextTurnStart(history);
      if (next < 0) {
        throw new ContextFullError(
          `The conversation does not fit in the session: the system prompt and the new message take ${rendered.media.length === 0 ? "" : "at least "}${length} tokens, ` +
            `${reserve} more are kept for the reply, and the session holds ${capacity}. Send a shorter message, lower maxTokens ` +
            "or reserveTokens, or create the context with a larger contextSize.",
        );
      }
      dropped.push(...history.slice(0, next));
      history = history.slice(next);
    }
    const droppedTurns = dropped.filter((m) => m.role === "user").length;
    if (dropped.length > 0 && this.#onTrim) {
      try {
        this.#onTrim({ droppedTurns, droppedMessages: dropped, reEvaluated: prompt.evaluated, reused: prompt.reused });
      } catch {
        // A throwing listener must not break the turn (as with onProgress elsewhere).
      }
    }
    const endOfTurn = await this.template.endOfTurn();
    const stops = [...(stop === undefined ? [] : typeof stop === "string" ? [stop] : stop), ...rendered.stops, ...(endOfTurn ? [endOfTurn] : [])];
    const generation = this.session.generate({
      ...rest,
      ...sampling(rendered),
      maxTokens: Math.min(maxTokens ?? capacity, capacity - length),
      ...(stops.length > 0 ? { stop: stops } : {}),
      signal: stopper,
    });
    return { generation, prompt, droppedTurns, history, rendered };
  }

  /** The bytes of the rendered media, in order (each part's file read once); typed errors name the part. */
  async #readMedia(messages: readonly ChatMessage[], media: readonly RenderedMedia[]): Promise<Uint8Array[]> {
    const projector = this.context.model.info.projector;
    const out: Uint8Array[] = [];
    for (const item of media) {
      const where = `messages[${item.message}].content[${item.part}]`;
      const part = (messages[item.message]!.content as ChatContentPart[])[item.part]!;
      let bytes = this.#mediaBytes.get(part);
      if (bytes === undefined) {
        if (projector === null) {
          throw new LlamaError("ERR_STATE", `${where} is ${item.type === "image" ? "an image" : "audio"}, but this model has no projector: load one with loadModel(path, { projector }) or model.loadProjector(path)`);
        }
        try {
          bytes = (await readPromptParts([{ [item.type]: item.data } as PromptPart], projector)).media[0]!;
        } catch (err) {
          if (err instanceof LlamaError) throw new LlamaError(err.code, err.message.replace(/^prompt\[0\]\.(image|audio)/, where).replace(/^prompt\[0\]/, where), { cause: err });
          throw err;
        }
        this.#mediaBytes.set(part, bytes);
      }
      out.push(bytes);
    }
    return out;
  }

  /**
   * The prompt's length, estimated before it is evaluated: its text's tokens and, for each media
   * item, the positions it took before (0 the first time: the evaluation then says).
   */
  #estimate(text: string, media: readonly Uint8Array[]): number {
    const tokens = this.context.model.tokenize(text.replaceAll(MEDIA_MARKER, ""), { addSpecial: true, parseSpecial: true }).length;
    return media.reduce((n, bytes) => n + (this.#mediaTokens.get(bytes) ?? 0), tokens);
  }

  /**
   * Evaluates text with media (the whole history), and learns the positions each item takes;
   * undefined when it does not fit (ERR_CONTEXT_FULL: the session is left as it was).
   */
  async #promptMedia(text: string, items: readonly RenderedMedia[], media: readonly Uint8Array[], signal: AbortSignal | undefined): Promise<PromptResult | undefined> {
    const parts = partsAtMarkers(text, items.map((item, k) => ({ type: item.type, data: media[k]! })));
    let result: PromptResult;
    try {
      result = await this.session.prompt(parts, { addSpecial: true, parseSpecial: true, signal });
    } catch (err) {
      if (err instanceof LlamaError && err.code === "ERR_CONTEXT_FULL") return undefined;
      throw err;
    }
    // The positions each item took (unknown when adjacent items of the same bytes merged).
    if (result.media?.length === media.length) media.forEach((bytes, k) => this.#mediaTokens.set(bytes, result.media![k]!));
    return result;
  }
}

/** A copy of a message that the caller's later changes do not reach (the parts copied too). */
function copyMessage(m: ChatMessage): ChatMessage {
  return typeof m.content === "string" ? { ...m } : { ...m, content: m.content.map((p) => ({ ...p })) };
}

/** Index of the second user message (where the turn after the oldest one starts), or -1. */
function nextTurnStart(history: readonly ChatMessage[]): number {
  const first = history.findIndex((m) => m.role === "user");
  if (first < 0) return -1;
  const next = history.findIndex((m, i) => i > first && m.role === "user");
  return next;
}

function checkMessage(m: ChatMessage, name: string): void {
  if (m === null || typeof m !== "object" || typeof m.role !== "string" || m.role === "" || (typeof m.content !== "string" && !Array.isArray(m.content))) {
    invalidArgument(name, "a { role, content } message with string fields (or content parts)", m);
  }
  checkContent(m.content, `${name}.content`);
  for (const key of ["reasoning", "toolCallId", "toolName"] as const) {
    if (m[key] !== undefined && typeof m[key] !== "string") invalidArgument(`${name}.${key}`, "a string", m[key]);
  }
  if (m.toolCalls !== undefined && !Array.isArray(m.toolCalls)) invalidArgument(`${name}.toolCalls`, "an array of { id, name, arguments }", m.toolCalls);
}
