/**
 * llama.cpp's own chat-format parse cases (vendor/llama.cpp/tests/test-chat.cpp), run through
 * llama-napi: each template is rendered with the case's tools and reasoning options
 * (ChatTemplate.render → common_chat_templates_apply), and the model output of the case is parsed
 * with the format's parser (ChatOutputParser → common_chat_peg_parse). llama.cpp's expected
 * messages are the oracle; each case names its line in test-chat.cpp, and the test checks that the
 * input is still written there, so a llama.cpp update that changes a case fails here.
 *
 * Like test-chat.cpp's peg_tester, every prefix of the input is also parsed as partial output, and
 * the pieces a stream would give (PieceTracker) must add up to the expected message.
 */
import fs from "node:fs";
import path from "node:path";

import { beforeAll, describe, expect, it } from "vitest";

import { ChatTemplate, type ChatToolDefinition } from "../src/chat.js";
import { ChatOutputParser, PieceTracker, type ParsedChatOutput } from "../src/chat-tools.js";
import { repoRoot } from "./helpers/fixtures.js";

const LLAMA = path.join(repoRoot, "vendor", "llama.cpp");
const TEST_CHAT = path.join(LLAMA, "tests", "test-chat.cpp");

/** test-chat.cpp's special_function_tool (line 425) and get_time_tool (line 511). */
const SPECIAL_FUNCTION: ChatToolDefinition = {
  name: "special_function",
  description: "I'm special",
  parameters: { type: "object", properties: { arg1: { type: "integer", description: "The arg." } }, required: ["arg1"] },
};
const GET_TIME: ChatToolDefinition = {
  name: "get_time",
  description: "Get the current time in a city",
  parameters: { type: "object", properties: { city: { type: "string", description: "City name" } }, required: ["city"] },
};

interface Expected {
  content?: string;
  reasoning?: string;
  calls?: Array<{ name: string; arguments: Record<string, unknown>; id?: string }>;
}

interface Case {
  /** The line of test-chat.cpp where the case's input starts. */
  line: number;
  template: string;
  input: string;
  tools?: ChatToolDefinition[];
  reasoning?: "auto" | "none";
  enableThinking?: boolean;
  expect: Expected;
}

const HELLO = "Hello, world!\nWhat's up?";
const THINKING = "I'm\nthinking";
const CALL = { name: "special_function", arguments: { arg1: 1 } };

/** The template families of the README's table, and their cases in test-chat.cpp. */
export const PARSE_CASES: Record<string, Case[]> = {
  "Hermes 2 Pro": [
    { line: 3323, template: "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", input: '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}</tool_call>', tools: [SPECIAL_FUNCTION], expect: { calls: [CALL] } },
    { line: 3330, template: "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", input: `${HELLO}<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}</tool_call>`, tools: [SPECIAL_FUNCTION], expect: { content: HELLO, calls: [CALL] } },
  ],
  "Qwen 2.5": [
    { line: 6096, template: "Qwen-Qwen2.5-7B-Instruct.jinja", input: HELLO, expect: { content: HELLO } },
    { line: 6097, template: "Qwen-Qwen2.5-7B-Instruct.jinja", input: '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>', tools: [SPECIAL_FUNCTION], expect: { calls: [CALL] } },
  ],
  "Mistral Nemo": [
    { line: 5906, template: "mistralai-Mistral-Nemo-Instruct-2407.jinja", input: HELLO, expect: { content: HELLO } },
    { line: 5907, template: "mistralai-Mistral-Nemo-Instruct-2407.jinja", input: '[TOOL_CALLS][{"name": "special_function", "arguments": {"arg1": 1}, "id": "123456789"}]', tools: [SPECIAL_FUNCTION], expect: { calls: [{ ...CALL, id: "123456789" }] } },
  ],
  "Functionary 3.2": [
    { line: 5942, template: "meetkai-functionary-medium-v3.2.jinja", input: `all\n${HELLO}`, expect: { content: HELLO } },
    { line: 5943, template: "meetkai-functionary-medium-v3.2.jinja", input: 'special_function\n{"arg1": 1}', tools: [SPECIAL_FUNCTION], expect: { calls: [CALL] } },
  ],
  "DeepSeek R1": [
    { line: 5980, template: "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", input: `</think>${HELLO}`, reasoning: "auto", expect: { content: HELLO } },
    { line: 5984, template: "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", input: `${THINKING}</think>${HELLO}`, reasoning: "auto", enableThinking: true, expect: { content: HELLO, reasoning: THINKING } },
    { line: 6056, template: "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", input: `${THINKING}</think>${HELLO}`, reasoning: "auto", expect: { content: HELLO, reasoning: THINKING } },
    {
      line: 6062,
      template: "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
      input: '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n```json\n{"arg1": 1}```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
      tools: [SPECIAL_FUNCTION],
      enableThinking: false,
      reasoning: "auto",
      expect: { calls: [CALL] },
    },
  ],
  "Llama 3.1": [{ line: 6290, template: "meta-llama-Llama-3.1-8B-Instruct.jinja", input: HELLO, tools: [SPECIAL_FUNCTION], expect: { content: HELLO } }],
  "Llama 3.2": [{ line: 6318, template: "meta-llama-Llama-3.2-3B-Instruct.jinja", input: HELLO, tools: [SPECIAL_FUNCTION], expect: { content: HELLO } }],
  "GPT-OSS": [
    { line: 6402, template: "openai-gpt-oss-120b.jinja", input: `<|channel|>final<|message|>${HELLO}`, expect: { content: HELLO } },
    { line: 6409, template: "openai-gpt-oss-120b.jinja", input: `<|channel|>analysis<|message|>${THINKING}<|end|><|start|>assistant<|channel|>final<|message|>${HELLO}`, reasoning: "auto", expect: { content: HELLO, reasoning: THINKING } },
    { line: 6431, template: "openai-gpt-oss-120b.jinja", input: ' to=functions.special_function<|channel|>analysis<|message|>{"arg1": 1}', reasoning: "auto", tools: [SPECIAL_FUNCTION], expect: { calls: [CALL] } },
  ],
  Granite: [
    { line: 3359, template: "ibm-granite-granite-3.3-2B-Instruct.jinja", input: HELLO, expect: { content: HELLO } },
    { line: 3361, template: "ibm-granite-granite-3.3-2B-Instruct.jinja", input: `<think>${THINKING}</think>${HELLO}`, reasoning: "auto", expect: { content: HELLO, reasoning: THINKING } },
    { line: 3401, template: "ibm-granite-granite-4.0.jinja", input: '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>', tools: [SPECIAL_FUNCTION], expect: { calls: [CALL] } },
  ],
  "Command R7B": [
    { line: 5869, template: "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", input: `<|START_RESPONSE|>${HELLO}<|END_RESPONSE|>`, expect: { content: HELLO } },
    {
      line: 5871,
      template: "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
      input: `<|START_THINKING|>${THINKING}<|END_THINKING|><|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "special_function", "parameters": {"arg1": 1}}\n]<|END_ACTION|>`,
      reasoning: "auto",
      tools: [SPECIAL_FUNCTION],
      expect: { reasoning: THINKING, calls: [{ ...CALL, id: "0" }] },
    },
  ],
  "Gemma 4": [
    { line: 2984, template: "google-gemma-4-31B-it.jinja", input: "Hello, world!", expect: { content: "Hello, world!" } },
    { line: 2988, template: "google-gemma-4-31B-it.jinja", input: `<|channel>thought\n${THINKING}<channel|>${HELLO}`, reasoning: "auto", expect: { content: HELLO, reasoning: THINKING } },
    { line: 3008, template: "google-gemma-4-31B-it.jinja", input: '<|tool_call>call:get_time{city:<|"|>London<|"|>}<tool_call|>', tools: [GET_TIME], expect: { calls: [{ name: "get_time", arguments: { city: "London" } }] } },
  ],
};

/** The C++ spelling of a string literal's content (test-chat.cpp writes inputs as "..." literals). */
function cppLiteral(s: string): string {
  return JSON.stringify(s).slice(1, -1);
}

async function parserFor(c: Case): Promise<ChatOutputParser> {
  const template = new ChatTemplate(fs.readFileSync(path.join(LLAMA, "models", "templates", c.template), "utf8"));
  const rendered = await template.render([{ role: "user", content: "Hey there!" }], {
    ...(c.tools ? { tools: c.tools } : {}),
    reasoningFormat: c.reasoning ?? "none",
    ...(c.enableThinking === undefined ? {} : { enableThinking: c.enableThinking }),
  });
  expect(rendered.format).toBeDefined();
  return new ChatOutputParser(rendered.format!);
}

/** test-chat.cpp compares content and reasoning with surrounding whitespace stripped (assert_msg_equals(..., true)). */
function checkMessage(actual: ParsedChatOutput, expected: Expected): void {
  expect(actual.content.trim()).toBe(expected.content ?? "");
  expect(actual.reasoning.trim()).toBe(expected.reasoning ?? "");
  const calls = expected.calls ?? [];
  expect(actual.toolCalls.map((c) => c.name)).toEqual(calls.map((c) => c.name));
  for (const [i, call] of calls.entries()) {
    // test-chat.cpp compares arguments after renormalising the JSON.
    expect(JSON.parse(actual.toolCalls[i]!.arguments)).toEqual(call.arguments);
    expect(actual.toolCalls[i]!.id).toBe(call.id ?? "");
  }
}

describe("llama.cpp's chat parse cases (tests/test-chat.cpp)", () => {
  let source: string[] = [];
  beforeAll(() => {
    source = fs.readFileSync(TEST_CHAT, "utf8").split("\n");
  });

  for (const [family, cases] of Object.entries(PARSE_CASES)) {
    describe(family, () => {
      for (const c of cases) {
        it(`line ${c.line}: ${JSON.stringify(c.input).slice(0, 60)}`, async () => {
          // The case is still llama.cpp's: its input is written there (as C++ string literals,
          // maybe split over lines), in the block of that template's tester (the nearest
          // models/templates/ path above it).
          const window = source.slice(c.line - 2, c.line + 6).join("\n").replace(/"\s*\n\s*"/g, "");
          expect(window).toContain(cppLiteral(c.input));
          const tester = source
            .slice(0, c.line)
            .reverse()
            .find((l) => l.includes('"models/templates/'));
          expect(tester).toContain(c.template);

          const parser = await parserFor(c);
          checkMessage(parser.parse(c.input, false), c.expect);

          // Streamed: every prefix parsed as partial output; the pieces add up to the message.
          const tracker = new PieceTracker(() => "generated");
          let content = "";
          let reasoning = "";
          const calls: Array<{ name: string; args: string; id: string }> = [];
          const apply = (msg: ParsedChatOutput) => {
            for (const piece of tracker.update(msg)) {
              if ("text" in piece) content += piece.text;
              else if ("reasoning" in piece) reasoning += piece.reasoning;
              else {
                const { index, name, id, argumentsDelta } = piece.toolCall;
                calls[index] ??= { name, args: "", id };
                calls[index].args += argumentsDelta;
              }
            }
          };
          const chars = [...c.input];
          for (let i = 1; i < chars.length; i++) apply(parser.parse(chars.slice(0, i).join(""), true));
          apply(parser.parse(c.input, false));
          expect(content.trim()).toBe(c.expect.content ?? "");
          expect(reasoning.trim()).toBe(c.expect.reasoning ?? "");
          expect(calls.map((x) => x.name)).toEqual((c.expect.calls ?? []).map((x) => x.name));
          for (const [i, call] of (c.expect.calls ?? []).entries()) {
            expect(JSON.parse(calls[i]!.args)).toEqual(call.arguments);
            // The id is the parser's when it is known by the time the call's name is (a stream
            // cannot take an id back), else a generated one, as llama-server does.
            expect([call.id ?? "generated", "generated"]).toContain(calls[i]!.id);
          }
        });
      }
    });
  }

  it("a complete output that does not match the format (a call of a tool not offered) is ERR_TOOL_CALL; as partial output it is not", async () => {
    const parser = await parserFor({ line: 0, template: "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", input: "", tools: [SPECIAL_FUNCTION], expect: {} });
    const unknown = '<tool_call>\n{"name": "other_function", "arguments": {"arg1": 1}}</tool_call>';
    expect(() => parser.parse(unknown, false)).toThrow(expect.objectContaining({ code: "ERR_TOOL_CALL" }));
    expect(() => parser.parse(unknown, true)).not.toThrow();
    expect(parser.parse(unknown, true).toolCalls.map((c) => c.name)).not.toContain("other_function");
  });
});
