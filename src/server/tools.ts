/**
 * Tool calling and reasoning in /v1/chat/completions, as OpenAI's API has them: the request's
 * `tools`, `tool_choice`, `parallel_tool_calls` (and llama-server's `reasoning_format`), messages
 * with `tool_calls` and `tool_call_id`, and the reply's `message.tool_calls` /
 * `reasoning_content`, streamed as `delta.tool_calls` (index, id and name first, then argument
 * fragments) and `delta.reasoning_content`. The template, grammar and parser are llama.cpp's
 * (src/chat-tools.ts, native/ChatTools.cc).
 */
import type { ChatMessageToolCall } from "../chat.js";
import { planOf, type ChatPiece, type ParsedChatOutput, type ToolPlan } from "../chat-tools.js";
import { CHAT_TOOL_OPTIONS } from "../options/chat-tools.js";
import { fromFields, setsAnyField } from "./fields.js";
import { badField } from "./http.js";

type Body = Record<string, unknown>;

function isObject(v: unknown): v is Body {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * Reads tools, tool_choice, parallel_tool_calls, reasoning_format and reasoning_budget_tokens
 * (CHAT_TOOL_OPTIONS' fields); undefined when none is set.
 */
export function toolParams(body: Body): ToolPlan | undefined {
  if (body.functions !== undefined && body.functions !== null) throw badField("functions", "functions (the deprecated form of tools) is not supported; use tools");
  if (!setsAnyField(CHAT_TOOL_OPTIONS, body)) return undefined;
  const options = fromFields(CHAT_TOOL_OPTIONS, body);
  try {
    return planOf(options);
  } catch (err) {
    // The one check across fields: tool_choice against the tools.
    throw badField("tool_choice", (err as Error).message.replace(/^toolChoice(\.name)?/, "tool_choice$1"));
  }
}

/** The tool fields of a request message: an assistant's tool_calls and reasoning_content, a tool's tool_call_id. */
export function messageToolFields(m: Body, param: string): { toolCalls?: ChatMessageToolCall[]; toolCallId?: string; reasoning?: string } {
  const out: { toolCalls?: ChatMessageToolCall[]; toolCallId?: string; reasoning?: string } = {};
  const calls = m.tool_calls ?? undefined;
  if (calls !== undefined) {
    if (m.role !== "assistant" || !Array.isArray(calls)) throw badField(`${param}.tool_calls`, `${param}.tool_calls must be an array, on an assistant message`);
    out.toolCalls = calls.map((c: unknown, j: number) => {
      const where = `${param}.tool_calls[${j}]`;
      if (!isObject(c) || !isObject(c.function) || typeof c.function.name !== "string" || c.function.name === "") {
        throw badField(where, `${where} must be { id, type: "function", function: { name, arguments } }`);
      }
      const args = c.function.arguments ?? "{}";
      if (typeof args !== "string") throw badField(`${where}.function.arguments`, `${where}.function.arguments must be a JSON string`);
      return { id: typeof c.id === "string" ? c.id : "", name: c.function.name, arguments: args };
    });
  }
  const id = m.tool_call_id ?? undefined;
  if (id !== undefined) {
    if (typeof id !== "string") throw badField(`${param}.tool_call_id`, `${param}.tool_call_id must be a string`);
    out.toolCallId = id;
  } else if (m.role === "tool") {
    throw badField(`${param}.tool_call_id`, `${param}.tool_call_id is required on a tool message`);
  }
  const reasoning = m.reasoning_content ?? undefined;
  if (reasoning !== undefined) {
    if (typeof reasoning !== "string") throw badField(`${param}.reasoning_content`, `${param}.reasoning_content must be a string`);
    out.reasoning = reasoning;
  }
  return out;
}

/** A streamed piece as an OpenAI chunk delta. */
export function deltaOf(piece: ChatPiece): Body {
  if ("text" in piece) return { content: piece.text };
  if ("reasoning" in piece) return { reasoning_content: piece.reasoning };
  const { index, id, name, argumentsDelta } = piece.toolCall;
  if (argumentsDelta === "") return { tool_calls: [{ index, id, type: "function", function: { name, arguments: "" } }] };
  return { tool_calls: [{ index, function: { arguments: argumentsDelta } }] };
}

/** The reply message of a request with tools, and its finish reason. */
export function replyMessage(parsed: ParsedChatOutput, ids: (index: number, parsed: string) => string, finish: "stop" | "length"): { message: Body; finish: "stop" | "length" | "tool_calls" } {
  const calls = parsed.toolCalls.map((c, i) => ({ id: ids(i, c.id), type: "function", function: { name: c.name, arguments: c.arguments } }));
  const message: Body = {
    role: "assistant",
    content: calls.length > 0 && parsed.content === "" ? null : parsed.content,
    ...(parsed.reasoning === "" ? {} : { reasoning_content: parsed.reasoning }),
    ...(calls.length === 0 ? {} : { tool_calls: calls }),
  };
  return { message, finish: calls.length > 0 && finish === "stop" ? "tool_calls" : finish };
}
