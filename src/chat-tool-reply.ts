/**
 * The reply to a chat.send() with tools or reasoning: streams {@link ChatPiece}s, parses the
 * output with the chat format's own parser, and runs the tool loop when the tools have handlers.
 * ChatSession (src/chat-session.ts) renders, fits and evaluates each round; the tool options,
 * the parser and the piece tracking are in src/chat-tools.ts.
 */
import type { ChatMessage, ChatMessageToolCall } from "./chat.js";
import {
  ChatOutputParser,
  PieceTracker,
  parseArguments,
  renderOptions,
  runHandler,
  type ChatPiece,
  type ChatToolCall,
  type ChatToolTurnResult,
  type ParsedChatOutput,
  type ToolPlan,
  type ToolReplyDriver,
} from "./chat-tools.js";
import { ChatReplyBase } from "./chat-reply.js";
import { AbortError, LlamaError } from "./errors.js";
import type { FinishReason } from "./generation.js";
import type { PromptResult } from "./session.js";

/**
 * The reply to a message sent with tools or reasoning options: an AsyncIterable of
 * {@link ChatPiece}s (`{ text }`, `{ reasoning }`, `{ toolCall }`), to be consumed once (by
 * iterating, or with text() / collect()). Each round's assistant message (and the tool results)
 * joins the chat's history as it ends.
 */
export class ChatToolReply extends ChatReplyBase<ChatPiece, ChatToolTurnResult> {
  readonly #user: ChatMessage;
  readonly #plan: ToolPlan;
  readonly #driver: ToolReplyDriver;
  #settled = false;

  /** @internal Use chatSession.send() with tools or reasoning. */
  constructor(user: ChatMessage, plan: ToolPlan, driver: ToolReplyDriver, stopper: AbortController) {
    super(stopper);
    this.#user = user;
    this.#plan = plan;
    this.#driver = driver;
  }

  /** Consumes the reply and resolves to its final content. */
  async text(): Promise<string> {
    return (await this.collect()).content;
  }

  #finish(outcome: { result: ChatToolTurnResult } | { error: unknown }): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#driver.settle();
    if ("result" in outcome) this.resolve(outcome.result);
    else this.reject(outcome.error);
  }

  /** @internal */
  protected async *iterate(): AsyncGenerator<ChatPiece> {
    const plan = this.#plan;
    const signal = this.stopper.signal;
    const handlerMode = Object.values(plan.tools).some((t) => t.handler !== undefined);
    let messages: ChatMessage[] = [this.#user];
    let droppedTurns = 0;
    let prompt: PromptResult = { reused: 0, evaluated: 0, length: 0 };
    let last: { parsed: ParsedChatOutput; calls: ChatToolCall[]; finishReason: FinishReason } | undefined;
    let round = 0;
    try {
      for (;;) {
        round++;
        const start = await this.#driver.start(messages, renderOptions(plan), {});
        prompt = start.prompt;
        droppedTurns += start.droppedTurns;
        const format = start.rendered.format;
        const parser = format ? new ChatOutputParser(format, { parseToolCalls: plan.toolChoice !== "none" }) : undefined;
        const tracker = new PieceTracker();
        let text = "";
        let aborted: unknown;
        let complete = false;
        try {
          for await (const item of start.generation) {
            text += item.text;
            if (!parser) {
              yield { text: item.text };
              continue;
            }
            // The format's parser reads the whole text so far (as llama-server's does per token);
            // a token that added no text (bytes of a character still incomplete) changes nothing.
            if (item.text === "") continue;
            let partial: ParsedChatOutput;
            try {
              partial = parser.parse(text, true);
            } catch {
              continue; // not parseable yet: wait for more text
            }
            yield* tracker.update(partial);
          }
          complete = true;
        } catch (err) {
          if (!(err instanceof AbortError)) throw err;
          aborted = err;
        }
        const finishReason: FinishReason = complete ? (start.generation.finishReason ?? "stop") : "aborted";
        let parsed: ParsedChatOutput;
        try {
          parsed = finalParse(parser, text, complete && finishReason !== "length");
        } catch (err) {
          // The complete output does not match the format (a call of a tool that was not
          // offered, which llama.cpp's parsers do not accept, for one): kept as text in the history.
          this.#driver.commit([...start.history, { role: "assistant", content: text }]);
          throw err;
        }
        if (complete) yield* tracker.update(parsed);
        const rawCalls: ChatMessageToolCall[] = parsed.toolCalls.map((c, i) => ({ id: tracker.idOf(i, c.id), name: c.name, arguments: c.arguments }));
        const assistant: ChatMessage = {
          role: "assistant",
          content: parsed.content,
          ...(parsed.reasoning === "" ? {} : { reasoning: parsed.reasoning }),
          ...(rawCalls.length === 0 ? {} : { toolCalls: rawCalls }),
        };
        this.#driver.commit([...start.history, assistant]);
        // A reply cut short (maxTokens, abort) ends there: its calls may be unfinished.
        if (aborted !== undefined || finishReason === "length" || rawCalls.length === 0 || plan.toolChoice === "none") {
          last = { parsed, calls: [], finishReason };
          this.#finish({ result: result(last, round, prompt, droppedTurns) });
          if (aborted !== undefined && !this.quiet) throw aborted;
          return;
        }
        // Calls: parse their arguments; an unknown tool or bad arguments is an error result the
        // model sees when the session runs the tools, a typed error when the caller does.
        const known = Object.keys(plan.tools);
        const calls: ChatToolCall[] = [];
        const problems = new Map<string, string>();
        for (const c of rawCalls) {
          let args: ChatToolCall["arguments"] = {};
          try {
            if (!known.includes(c.name)) throw new LlamaError("ERR_TOOL_CALL", `The model called "${c.name}", which is not one of the tools (${known.join(", ")})`);
            args = parseArguments(c.name, c.arguments);
          } catch (err) {
            if (!handlerMode) throw err;
            problems.set(c.id, `Error: ${(err as Error).message}`);
          }
          calls.push({ id: c.id, name: c.name, arguments: args, rawArguments: c.arguments });
        }
        last = { parsed, calls, finishReason };
        const runnable = handlerMode && calls.every((c) => problems.has(c.id) || plan.tools[c.name]?.handler !== undefined);
        if (!runnable || round >= plan.maxRounds) {
          this.#finish({ result: result(last, round, prompt, droppedTurns, "toolCalls") });
          return;
        }
        const outputs = await Promise.all(calls.map((c) => problems.get(c.id) ?? runHandler(plan.tools[c.name], c, known, signal)));
        messages = calls.map((c, i) => ({ role: "tool", toolCallId: c.id, toolName: c.name, content: outputs[i] ?? "" }));
        this.#driver.commit([...start.history, assistant, ...messages]);
        messages = [];
      }
    } catch (err) {
      if (err instanceof AbortError) {
        // Aborted while the handlers ran: the turn ends, with the calls made (unanswered) in the
        // result; the send's signal also throws the AbortError to the consumer, abort() does not.
        this.#finish({ result: { ...result(last ?? EMPTY, round, prompt, droppedTurns, "toolCalls"), finishReason: "aborted" } });
        if (this.quiet) return;
        throw err;
      }
      this.#finish({ error: err });
      throw err;
    } finally {
      // The consumer stopped early (break): the generation was aborted by the loop's cleanup.
      if (!this.#settled) {
        this.stopper.abort();
        this.#finish({ result: { ...result(last ?? EMPTY, round, prompt, droppedTurns, "toolCalls"), finishReason: "aborted" } });
      }
    }
  }
}

const EMPTY = { parsed: { content: "", reasoning: "", toolCalls: [] }, calls: [], finishReason: "aborted" as const };

/**
 * The final parse. A complete output that does not match the format throws ERR_TOOL_CALL (as
 * llama-server fails the request); one cut short (maxTokens, abort) is read as partial output.
 */
function finalParse(parser: ChatOutputParser | undefined, text: string, complete: boolean): ParsedChatOutput {
  if (!parser) return { content: text, reasoning: "", toolCalls: [] };
  if (complete) return parser.parse(text, false);
  try {
    return parser.parse(text, true);
  } catch {
    return { content: text, reasoning: "", toolCalls: [] };
  }
}

function result(
  last: { parsed: ParsedChatOutput; calls: ChatToolCall[]; finishReason: FinishReason },
  rounds: number,
  prompt: PromptResult,
  droppedTurns: number,
  reason?: "toolCalls",
): ChatToolTurnResult {
  return {
    content: last.parsed.content,
    reasoning: last.parsed.reasoning,
    toolCalls: reason === "toolCalls" ? last.calls : [],
    finishReason: reason ?? last.finishReason,
    rounds,
    prompt,
    droppedTurns,
  };
}
