/**
 * Tool calling and reasoning in /v1/chat/completions, as OpenAI's API has them: the request's
 * `tools`, `tool_choice`, `parallel_tool_calls` (and llama-server's `reasoning_format`), messages
 * with `tool_calls` and `tool_call_id`, and the reply's `message.tool_calls` /
 * `reasoning_content`, streamed as `delta.tool_calls` (index, id and name first, then argument
 * fragments) and `delta.reasoning_content`. The template, grammar and parser are llama.cpp's
 * (src/chat-tools.ts, native/ChatTools.cc).
 */
import type { ChatMessageToolCall, ChatToolDefinition, JsonSchema, RenderChatOptions } from "../chat.js";
import type { ChatPiece, ParsedChatOutput } from "../chat-tools.js";
import { badField } from "./http.js";

type Body = Record<string, unknown>;

/** The tool and reasoning fields of a chat request. */
export interface ServerToolParams {
  definitions: ChatToolDefinition[];
  toolChoice: "auto" | "none" | "required";
  parallel: boolean;
  reasoningFormat: "auto" | "none";
  /** llama-server's reasoning_budget_tokens: thinking tokens before the end tag is forced (-1: no budget). */
  reasoningBudget: number;
}

const NAME = /^[A-Za-z0-9_.-]{1,128}$/;

function isObject(v: unknown): v is Body {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Reads tools, tool_choice, parallel_tool_calls and reasoning_format; undefined when none is set. */
export function toolParams(body: Body): ServerToolParams | undefined {
  const tools = body.tools ?? undefined;
  const choice = body.tool_choice ?? undefined;
  const parallel = body.parallel_tool_calls ?? undefined;
  const reasoning = body.reasoning_format ?? undefined;
  const budget = body.reasoning_budget_tokens ?? undefined;
  if (body.functions !== undefined && body.functions !== null) throw badField("functions", "functions (the deprecated form of tools) is not supported; use tools");
  if (tools === undefined && choice === undefined && parallel === undefined && reasoning === undefined && budget === undefined) return undefined;
  if (budget !== undefined && !(typeof budget === "number" && Number.isInteger(budget) && budget >= -1 && budget <= 1 << 24)) {
    throw badField("reasoning_budget_tokens", "reasoning_budget_tokens must be an integer from -1 (no budget) up");
  }
  const definitions: ChatToolDefinition[] = [];
  if (tools !== undefined) {
    if (!Array.isArray(tools)) throw badField("tools", "tools must be an array of { type: \"function\", function: { name, description, parameters } }");
    const seen = new Set<string>();
    for (const [i, t] of tools.entries()) {
      const param = `tools[${i}]`;
      if (!isObject(t) || t.type !== "function" || !isObject(t.function)) throw badField(param, `${param} must be { type: "function", function: { name, description, parameters } }`);
      const { name, description, parameters } = t.function;
      if (typeof name !== "string" || !NAME.test(name)) throw badField(`${param}.function.name`, `${param}.function.name must be 1 to 128 letters, digits, _, . or -`);
      if (seen.has(name)) throw badField(`${param}.function.name`, `Two tools are named "${name}"`);
      seen.add(name);
      if (description !== undefined && description !== null && typeof description !== "string") throw badField(`${param}.function.description`, `${param}.function.description must be a string`);
      if (parameters !== undefined && parameters !== null && !isObject(parameters)) throw badField(`${param}.function.parameters`, `${param}.function.parameters must be a JSON Schema object`);
      definitions.push({
        name,
        ...(typeof description === "string" ? { description } : {}),
        ...(isObject(parameters) ? { parameters: parameters as JsonSchema } : {}),
      });
    }
  }
  let toolChoice: ServerToolParams["toolChoice"] = "auto";
  let offered = definitions;
  if (choice === "auto" || choice === "none" || choice === "required") {
    toolChoice = choice;
  } else if (isObject(choice) && choice.type === "function" && isObject(choice.function) && typeof choice.function.name === "string") {
    const name = choice.function.name;
    const named = definitions.find((d) => d.name === name);
    if (!named) throw badField("tool_choice", `tool_choice names "${name}", which is not one of the tools`);
    offered = [named];
    toolChoice = "required";
  } else if (choice !== undefined) {
    throw badField("tool_choice", 'tool_choice must be "auto", "none", "required" or { type: "function", function: { name } }');
  }
  if (toolChoice === "required" && offered.length === 0) throw badField("tool_choice", 'tool_choice "required" needs tools');
  if (parallel !== undefined && typeof parallel !== "boolean") throw badField("parallel_tool_calls", "parallel_tool_calls must be a boolean");
  if (reasoning !== undefined && reasoning !== "auto" && reasoning !== "none") throw badField("reasoning_format", 'reasoning_format must be "auto" or "none"');
  return {
    definitions: offered,
    toolChoice: offered.length === 0 ? "none" : toolChoice,
    parallel: parallel ?? false,
    reasoningFormat: reasoning ?? "auto",
    reasoningBudget: (budget as number | undefined) ?? -1,
  };
}

/** The render options of a request's tool fields. */
export function renderOptionsOf(tools: ServerToolParams): RenderChatOptions {
  return { tools: tools.definitions, toolChoice: tools.toolChoice, parallelToolCalls: tools.parallel, reasoningFormat: tools.reasoningFormat };
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
