/**
 * Tool calling and reasoning for {@link ChatSession}, through llama.cpp's own chat formats
 * (common/chat, native/ChatTools.cc): the template renders the tools, llama.cpp's format gives
 * the grammar that constrains the calls (lazily: text stays free until the model starts a call)
 * and the parser that splits the output into content, reasoning and tool calls, while it streams.
 *
 * ```ts
 * const reply = chat.send("What is the weather in Paris?", {
 *   tools: {
 *     weather: {
 *       description: "Current weather of a city",
 *       parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
 *       handler: async ({ city }) => ({ city, celsius: 21 }),
 *     },
 *   },
 * });
 * for await (const piece of reply) if ("text" in piece) process.stdout.write(piece.text);
 * const { content, toolCalls, finishReason } = await reply.result;
 * ```
 */
import type { ChatMessage, ChatMessageToolCall, ChatOutputFormat, ChatToolDefinition, JsonSchema, JsonValue, RenderChatOptions, RenderedChat } from "./chat.js";
import { AbortError, LlamaError, invalidArgument } from "./errors.js";
import { CHAT_TOOL_OPTIONS, REASONING_OPTIONS, checkToolChoice } from "./options/chat-tools.js";
import { readOptions, type OptionsOf, type ParsedOptions } from "./options/spec.js";
import type { FinishReason, Generation } from "./generation.js";
import { binding, type NativeChatParser } from "./native.js";
import type { GrammarTrigger } from "./options/sampling.js";
import type { GenerateOptions, PromptResult } from "./session.js";

/** The arguments of a tool call, as the model wrote them (checked against the schema by the grammar). */
export type ToolArguments = { [key: string]: JsonValue };

/** What a tool handler gets besides the arguments. */
export interface ToolCallContext {
  /** The call's id (the tool message answering it names it). */
  id: string;
  /** The tool's name. */
  name: string;
  /** Aborted when the reply is aborted (reply.abort(), the send's signal, a break out of the loop). */
  signal: AbortSignal;
}

/** A tool the model may call in a {@link ChatSession}. */
export interface ChatTool {
  /** What it does, for the model. */
  description?: string;
  /** A JSON Schema of its arguments (an object schema); default: no arguments. */
  parameters?: JsonSchema;
  /**
   * Runs the call; its result (a string as it is, anything else as JSON) goes back to the model as
   * a tool message. A handler that throws gives the model an error result instead. Without
   * handlers, the reply ends on the calls and the caller answers them.
   */
  handler?: (args: ToolArguments, context: ToolCallContext) => unknown;
}

/** The tools of a send, by name. */
export type ChatTools = Readonly<Record<string, ChatTool>>;

/** Which calls the model may make: "auto" (any or none), "none", "required" (at least one), or one tool by name. */
export type ChatToolChoice = "auto" | "none" | "required" | { name: string };

/** How a thinking model's reasoning is handled (format, enableThinking, budget, budgetMessage). */
export type ChatReasoningOptions = OptionsOf<typeof REASONING_OPTIONS>;

/** The tool and reasoning options of chat.send(): tools, toolChoice, parallelToolCalls, maxToolRounds, reasoning. */
export type ChatToolFields = OptionsOf<typeof CHAT_TOOL_OPTIONS>;

/** @internal */
export const TOOL_FIELD_KEYS: readonly string[] = Object.keys(CHAT_TOOL_OPTIONS);

/** A tool call of the model, in a reply's result. */
export interface ChatToolCall {
  /** The call's id: answer it with a `{ role: "tool", toolCallId: id, content }` message. */
  id: string;
  /** The tool's name. */
  name: string;
  /** The arguments, parsed. */
  arguments: ToolArguments;
  /** The arguments as the model wrote them. */
  rawArguments: string;
}

/** A piece of a streamed tool call: the index, id and name first, then argument fragments. */
export interface ChatToolCallDelta {
  index: number;
  id: string;
  name: string;
  argumentsDelta: string;
}

/** What a reply with tools or reasoning yields: answer text, reasoning text, or a piece of a tool call. */
export type ChatPiece = { text: string } | { reasoning: string } | { toolCall: ChatToolCallDelta };

/** One finished turn of a send with tools or reasoning. */
export interface ChatToolTurnResult {
  /** The final answer text (of the last round). */
  content: string;
  /** The reasoning text of the last round ("" when none). */
  reasoning: string;
  /** The calls the reply ended on (empty unless finishReason is "toolCalls"). */
  toolCalls: ChatToolCall[];
  /** "toolCalls" when the reply ended on calls left to the caller; else the generation's reason. */
  finishReason: FinishReason | "toolCalls";
  /** Rounds of generation (1 without handlers). */
  rounds: number;
  /** The last round's conversation evaluation. */
  prompt: PromptResult;
  /** Old user turns dropped to make room, over all rounds. */
  droppedTurns: number;
}

/** A message split by a chat format's parser. */
export interface ParsedChatOutput {
  content: string;
  reasoning: string;
  toolCalls: ChatMessageToolCall[];
}

/**
 * llama.cpp's parser of one chat format (common_chat_peg_parse), from a render's
 * {@link RenderedChat.format}. `parse(text, true)` reads output still being generated;
 * `parse(text, false)` reads a finished one and throws ERR_TOOL_CALL when it does not match the format.
 */
export class ChatOutputParser {
  readonly #native: NativeChatParser;

  constructor(format: ChatOutputFormat, options: { parseToolCalls?: boolean } = {}) {
    if (format === null || typeof format !== "object") invalidArgument("format", "a render's format", format);
    this.#native = new (binding().ChatParser)({
      format: format.formatId,
      parser: format.parser,
      generationPrompt: format.generationPrompt,
      reasoningFormat: format.reasoningFormat,
      parseToolCalls: options.parseToolCalls ?? true,
    });
  }

  parse(text: string, partial: boolean): ParsedChatOutput {
    if (typeof text !== "string") invalidArgument("text", "a string", text);
    return this.#native.parse(text, partial === true);
  }
}

/** What a round of generation started with (ChatSession's side of the loop). @internal */
export interface ToolRoundStart {
  generation: Generation;
  prompt: PromptResult;
  droppedTurns: number;
  history: ChatMessage[];
  rendered: RenderedChat;
}

/** ChatSession's part of a tool reply. @internal */
export interface ToolReplyDriver {
  /** Renders history + `messages` with the render options, fits, evaluates, and starts generating. */
  start(messages: ChatMessage[], render: RenderChatOptions, sampling: Partial<GenerateOptions>): Promise<ToolRoundStart>;
  /** Replaces the chat's history. */
  commit(history: ChatMessage[]): void;
  /** The turn is over (busy ends). */
  settle(): void;
}

/** A send's tool options, checked. @internal */
export interface ToolPlan {
  tools: ChatTools;
  definitions: ChatToolDefinition[];
  toolChoice: "auto" | "none" | "required";
  parallel: boolean;
  maxRounds: number;
  reasoning: { format: "auto" | "none"; enableThinking?: boolean; budget?: number; budgetMessage?: string };
}

/** Checks the tool fields of chat.send() options. @internal */
export function toolPlan(fields: ChatToolFields): ToolPlan {
  return planOf(readOptions(CHAT_TOOL_OPTIONS, fields, "options", { defaults: true }));
}

/** The plan of checked tool options (the library's, or a request's fields). @internal */
export function planOf(options: ParsedOptions<typeof CHAT_TOOL_OPTIONS>): ToolPlan {
  const tools = options.tools ?? {};
  const { offered, choice } = checkToolChoice(tools, options.toolChoice ?? "auto");
  const definitions = offered.map((name): ChatToolDefinition => {
    const { description, parameters } = tools[name] as ChatTool;
    return { name, ...(description === undefined ? {} : { description }), ...(parameters === undefined ? {} : { parameters }) };
  });
  const { format = "auto", enableThinking, budget, budgetMessage } = options.reasoning ?? {};
  return {
    tools,
    definitions,
    toolChoice: choice,
    parallel: options.parallelToolCalls ?? false,
    maxRounds: options.maxToolRounds ?? 8,
    reasoning: {
      format,
      ...(enableThinking === undefined ? {} : { enableThinking }),
      ...(budget === undefined ? {} : { budget }),
      ...(budgetMessage === undefined ? {} : { budgetMessage }),
    },
  };
}

/**
 * The generation options a render's format asks for: its preserved tokens (the markers its parser
 * reads), and unless tool calls are off, its tool grammar (lazy, with its triggers, or from the
 * generation prompt on). @internal
 */
export function grammarOptions(
  format: ChatOutputFormat | undefined,
  choice: ToolPlan["toolChoice"],
  reasoning: { budget?: number; budgetMessage?: string } = {},
): Partial<GenerateOptions> {
  if (!format) return {};
  const preserved: Partial<GenerateOptions> = format.preservedTokens.length === 0 ? {} : { preservedTokens: [...format.preservedTokens] };
  if (reasoning.budget !== undefined && format.thinkingStartTag !== "" && format.thinkingEndTags.length > 0) {
    preserved.reasoningBudget = {
      tokens: reasoning.budget,
      start: format.thinkingStartTag,
      end: [...format.thinkingEndTags],
      message: reasoning.budgetMessage ?? "",
      prefill: format.generationPrompt,
    };
  }
  if (format.grammar === "" || choice === "none") return preserved;
  const triggers: GrammarTrigger[] = format.grammarTriggers.map((t) => ({ type: t.type, value: t.value }));
  if (format.grammarLazy) return { ...preserved, grammar: format.grammar, grammarLazy: true, grammarTriggers: triggers };
  return { ...preserved, grammar: format.grammar, ...(format.generationPrompt === "" ? {} : { grammarPrefill: format.generationPrompt }) };
}

/** The render options of a round. @internal */
export function renderOptions(plan: ToolPlan): RenderChatOptions {
  return {
    tools: plan.definitions,
    toolChoice: plan.toolChoice,
    parallelToolCalls: plan.parallel,
    reasoningFormat: plan.reasoning.format,
    ...(plan.reasoning.enableThinking === undefined ? {} : { enableThinking: plan.reasoning.enableThinking }),
  };
}

/**
 * Follows a message parsed again and again while it streams, and gives what is new as pieces.
 * Text already given is never taken back: when a parse revises it (a marker that turned out to be
 * text), nothing is given until the parse agrees with what was given again.
 * @internal
 */
export class PieceTracker {
  #content = 0;
  #reasoning = 0;
  readonly #calls: Array<{ id: string; args: number }> = [];
  readonly #ids: string[] = [];
  readonly #makeId: () => string;

  constructor(makeId: () => string = randomCallId) {
    this.#makeId = makeId;
  }

  /** The ids given to the calls so far (the parser's own when it has one). */
  idOf(index: number, parsed: string): string {
    while (this.#ids.length <= index) this.#ids.push("");
    if (this.#ids[index] === "") this.#ids[index] = parsed !== "" ? parsed : this.#makeId();
    return this.#ids[index] as string;
  }

  *update(msg: ParsedChatOutput): Generator<ChatPiece> {
    if (msg.reasoning.length > this.#reasoning) {
      yield { reasoning: msg.reasoning.slice(this.#reasoning) };
      this.#reasoning = msg.reasoning.length;
    }
    if (msg.content.length > this.#content) {
      yield { text: msg.content.slice(this.#content) };
      this.#content = msg.content.length;
    }
    for (const [index, call] of msg.toolCalls.entries()) {
      if (call.name === "") break; // its name is not known yet, nor are the calls after it
      let seen = this.#calls[index];
      if (!seen) {
        seen = { id: this.idOf(index, call.id), args: 0 };
        this.#calls[index] = seen;
        yield { toolCall: { index, id: seen.id, name: call.name, argumentsDelta: "" } };
      }
      if (call.arguments.length > seen.args) {
        yield { toolCall: { index, id: seen.id, name: call.name, argumentsDelta: call.arguments.slice(seen.args) } };
        seen.args = call.arguments.length;
      }
    }
  }
}

function randomCallId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  let id = "call_";
  for (let i = 0; i < 24; i++) id += alphabet[Math.floor(Math.random() * alphabet.length)];
  return id;
}

/** Parses a call's arguments; throws ERR_TOOL_CALL when they are not a JSON object. @internal */
export function parseArguments(name: string, raw: string): ToolArguments {
  let value: unknown;
  try {
    value = JSON.parse(raw.trim() === "" ? "{}" : raw);
  } catch (err) {
    throw new LlamaError("ERR_TOOL_CALL", `The model called "${name}" with arguments that are not JSON (${(err as Error).message}): ${raw}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new LlamaError("ERR_TOOL_CALL", `The model called "${name}" with arguments that are not a JSON object: ${raw}`);
  }
  return value as ToolArguments;
}

/** Runs one call's handler; what goes back to the model (errors included) as text. @internal */
export async function runHandler(tool: ChatTool | undefined, call: ChatToolCall, known: readonly string[], signal: AbortSignal): Promise<string> {
  if (!tool?.handler) return `Error: there is no tool named "${call.name}"; the tools are: ${known.join(", ")}`;
  const aborted = new Promise<never>((_, reject) => {
    const fail = () => reject(signal.reason instanceof Error ? signal.reason : new AbortError("The reply was aborted"));
    if (signal.aborted) fail();
    else signal.addEventListener("abort", fail, { once: true });
  });
  aborted.catch(() => undefined);
  try {
    const result: unknown = await Promise.race([Promise.resolve().then(() => tool.handler?.(call.arguments, { id: call.id, name: call.name, signal })), aborted]);
    if (typeof result === "string") return result;
    return result === undefined ? "" : JSON.stringify(result);
  } catch (err) {
    if (signal.aborted) throw err instanceof AbortError ? err : new AbortError("The reply was aborted while a tool ran");
    return `Error: ${err instanceof Error ? err.message : String(err)}`;
  }
}
