/**
 * The tool-calling and reasoning options of `chat.send()` (src/chat-tools.ts), and the
 * /v1/chat/completions fields that set them (src/server/tools.ts): `tools`, `tool_choice`,
 * `parallel_tool_calls`, `reasoning_format`, `reasoning_budget_tokens`. The library takes tools
 * as an object by name (with handlers); a request sends OpenAI's array of
 * `{ type: "function", function: { name, description, parameters } }`, which the field reads into
 * the same form.
 */
import type { ChatTool, ChatToolChoice, ChatTools } from "../chat-tools.js";
import { LlamaError } from "../errors.js";
import { OptionValueError, boolean, custom, integer, object, oneOf, string } from "./spec.js";

/** A tool's name (OpenAI's rule). */
const NAME = /^[A-Za-z0-9_.-]{1,128}$/;
const TOOL_KEYS = ["description", "parameters", "handler"];

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function fail(expected: string, at: string): never {
  throw new OptionValueError(expected, at);
}

/** A tool's parameters: a JSON Schema object that survives JSON (no functions, no cycles). */
function schema(value: unknown, at: string): void {
  if (value === undefined) return;
  if (!isObject(value)) fail("a JSON Schema object", at);
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    fail(`JSON (${(err as Error).message})`, at);
  }
  const type = (JSON.parse(text) as Record<string, unknown>).type;
  if (type !== undefined && type !== "object") fail('"object" (tool arguments are an object)', `${at}.type`);
}

/** The library's form: { [name]: { description, parameters, handler } }. */
function tools(value: unknown): ChatTools {
  if (!isObject(value)) fail("an object { [name]: { description, parameters, handler } }", "");
  const out: Record<string, ChatTool> = {};
  for (const [name, tool] of Object.entries(value)) {
    const at = `.${name}`;
    if (!NAME.test(name)) fail("named by 1 to 128 letters, digits, _, . or -", at);
    if (!isObject(tool)) fail("an object { description, parameters, handler }", at);
    const unknown = Object.keys(tool).find((k) => !TOOL_KEYS.includes(k));
    if (unknown !== undefined) fail(`an object { description, parameters, handler } (unknown option "${unknown}")`, at);
    if (tool.description !== undefined && typeof tool.description !== "string") fail("a string", `${at}.description`);
    if (tool.handler !== undefined && typeof tool.handler !== "function") fail("a function", `${at}.handler`);
    schema(tool.parameters, `${at}.parameters`);
    out[name] = tool as ChatTool;
  }
  return out;
}

/** The request's form: [{ type: "function", function: { name, description, parameters } }]. */
function requestTools(value: unknown): ChatTools {
  if (!Array.isArray(value)) fail('an array of { type: "function", function: { name, description, parameters } }', "");
  const out: Record<string, ChatTool> = {};
  for (const [i, t] of value.entries()) {
    const at = `[${i}]`;
    if (!isObject(t) || t.type !== "function" || !isObject(t.function)) fail('{ type: "function", function: { name, description, parameters } }', at);
    const { name, description, parameters } = t.function;
    if (typeof name !== "string" || !NAME.test(name)) fail("1 to 128 letters, digits, _, . or -", `${at}.function.name`);
    if (Object.hasOwn(out, name)) fail(`a name no other tool has ("${name}" is taken)`, `${at}.function.name`);
    if (description !== undefined && description !== null && typeof description !== "string") fail("a string", `${at}.function.description`);
    if (parameters !== undefined && parameters !== null) schema(parameters, `${at}.function.parameters`);
    out[name] = {
      ...(typeof description === "string" ? { description } : {}),
      ...(isObject(parameters) ? { parameters: parameters as ChatTool["parameters"] } : {}),
    };
  }
  return out;
}

function toolChoice(value: unknown): ChatToolChoice {
  if (value === "auto" || value === "none" || value === "required") return value;
  if (isObject(value) && typeof value.name === "string" && Object.keys(value).length === 1) return { name: value.name };
  return fail('"auto", "none", "required" or { name }', "");
}

/** OpenAI's named choice, { type: "function", function: { name } }. */
function requestToolChoice(value: unknown): ChatToolChoice {
  if (isObject(value) && value.type === "function" && isObject(value.function) && typeof value.function.name === "string") return { name: value.function.name };
  if (typeof value === "string") return toolChoice(value);
  return fail('"auto", "none", "required" or { type: "function", function: { name } }', "");
}

const BUDGET_MAX = 1 << 24;

export const REASONING_OPTIONS = {
  /** "auto": reasoning is split from the content ({ reasoning } pieces, result.reasoning); "none": it stays in the text. */
  format: oneOf(["auto", "none"], { default: "auto", field: { name: "reasoning_format" } }),
  /** The template's enable-thinking switch (default: the template's own default). */
  enableThinking: boolean(),
  /**
   * At most this many tokens of thinking: then llama.cpp's reasoning-budget sampler forces
   * `budgetMessage` and the template's end-of-thinking tag. Applies to templates with thinking tags.
   */
  budget: integer({
    min: 0,
    max: BUDGET_MAX,
    // llama-server's reasoning_budget_tokens: -1 is no budget.
    field: {
      name: "reasoning_budget_tokens",
      parse: (v) => (v === -1 ? undefined : Number.isInteger(v) && (v as number) >= 0 && (v as number) <= BUDGET_MAX ? (v as number) : fail(`an integer from -1 (no budget) to ${BUDGET_MAX}`, "")),
    },
  }),
  /** Text forced before the end-of-thinking tag when the budget runs out (default ""). */
  budgetMessage: string({ allowEmpty: true }),
};

export const CHAT_TOOL_OPTIONS = {
  /** Tools the model may call, by name. */
  tools: custom<ChatTools>({
    expected: "an object { [name]: { description, parameters, handler } }",
    parse: tools,
    field: { name: "tools", parse: requestTools },
  }),
  /** Which calls the model may make (default "auto"). */
  toolChoice: custom<ChatToolChoice>({
    expected: '"auto", "none", "required" or { name }',
    parse: toolChoice,
    field: { name: "tool_choice", parse: requestToolChoice },
  }),
  /** Whether the model may make several calls in one reply (default false). */
  parallelToolCalls: boolean({ field: { name: "parallel_tool_calls" } }),
  /** With handlers: how many rounds of calls the session runs before it returns the calls (default 8). */
  maxToolRounds: integer({ min: 1, max: 1000, default: 8 }),
  /** Reasoning of thinking models. */
  reasoning: object(REASONING_OPTIONS),
};

/** The tools and choice of a send, checked against each other. */
export function checkToolChoice(given: ChatTools, choice: ChatToolChoice): { offered: string[]; choice: "auto" | "none" | "required" } {
  const names = Object.keys(given);
  if (typeof choice === "object") {
    if (!names.includes(choice.name)) {
      throw new LlamaError("ERR_INVALID_ARGUMENT", `toolChoice.name must be the name of one of the tools (${names.join(", ") || "none given"}); got "${choice.name}"`);
    }
    return { offered: [choice.name], choice: "required" };
  }
  if (choice === "required" && names.length === 0) throw new LlamaError("ERR_INVALID_ARGUMENT", 'toolChoice "required" needs tools: give tools, or "auto" or "none"');
  return { offered: names, choice: names.length === 0 ? "none" : choice };
}
