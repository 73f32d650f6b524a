/**
 * Tool calling through the server with the `openai` npm client as the oracle of OpenAI's wire
 * format: its runTools helper runs whole tool loops (streamed and not; the streaming runner
 * accumulates `delta.tool_calls` and fails on chunks that are not OpenAI's), and its message
 * types carry assistant `tool_calls` and `tool` messages back to the server. The model is a
 * random-weights GPT-2 with the Functionary 3.2 template (whose "required" grammar starts the call
 * itself; most formats let free text come first, which a random model never leaves); every call is
 * made under llama.cpp's tool grammar, so its arguments must validate against the schema (ajv).
 */
import fs from "node:fs";
import path from "node:path";

import { Ajv } from "ajv";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { startServer, type RunningServer } from "../src/index.js";
import { repoRoot } from "./helpers/fixtures.js";
import { toolsModelPath } from "./helpers/tools-model.js";

const TEMPLATE = fs.readFileSync(path.join(repoRoot, "vendor/llama.cpp/models/templates/meetkai-functionary-medium-v3.2.jinja"), "utf8");

const SCHEMA = {
  type: "object",
  properties: { city: { type: "string", enum: ["Paris", "Tokyo", "Lima"] }, days: { type: "integer", minimum: 1, maximum: 7 } },
  required: ["city", "days"],
  additionalProperties: false,
};
const ajv = new Ajv({ strict: true });
const validate = ajv.compile(SCHEMA);
const TOOL = { type: "function" as const, function: { name: "get_weather", description: "Weather forecast of a city", parameters: SCHEMA } };

describe("server: tool calls with the openai client", () => {
  let server: RunningServer;
  let client: OpenAI;

  beforeAll(async () => {
    server = await startServer({ model: await toolsModelPath(), port: 0, parallel: 1, contextSize: 4096, threads: 2, chatTemplate: TEMPLATE });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "none", maxRetries: 0 });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });

  it("returns message.tool_calls with finish_reason tool_calls, and takes the tool result back", async () => {
    const first = await client.chat.completions.create({
      model: "any",
      messages: [{ role: "user", content: "Weather in Paris for 3 days?" }],
      tools: [TOOL],
      tool_choice: "required",
      max_tokens: 300,
      seed: 2,
    });
    const choice = first.choices[0]!;
    expect(choice.finish_reason).toBe("tool_calls");
    const calls = choice.message.tool_calls ?? [];
    expect(calls.length).toBeGreaterThanOrEqual(1);
    for (const call of calls) {
      expect(call.type).toBe("function");
      if (call.type !== "function") continue;
      expect(call.function.name).toBe("get_weather");
      expect(validate(JSON.parse(call.function.arguments)), call.function.arguments).toBe(true);
      expect(call.id).toMatch(/\S/);
    }
    const second = await client.chat.completions.create({
      model: "any",
      messages: [
        { role: "user", content: "Weather in Paris for 3 days?" },
        choice.message,
        ...calls.map((c) => ({ role: "tool" as const, tool_call_id: c.id, content: '{"celsius": 21}' })),
      ],
      tools: [TOOL],
      tool_choice: "none",
      max_tokens: 8,
      seed: 1,
    });
    expect(["stop", "length"]).toContain(second.choices[0]!.finish_reason);
    expect(second.choices[0]!.message.tool_calls ?? []).toEqual([]);
    expect(typeof second.choices[0]!.message.content).toBe("string");
  }, 120_000);

  for (const stream of [false, true]) {
    it(`runTools runs a whole tool loop (${stream ? "streamed" : "not streamed"})`, async () => {
      const seen: unknown[] = [];
      const params = {
        model: "any",
        messages: [{ role: "user" as const, content: "Weather in Tokyo?" }],
        tools: [
          {
            type: "function" as const,
            function: {
              name: "get_weather",
              description: "Weather forecast of a city",
              parameters: SCHEMA,
              parse: JSON.parse,
              function: (args: unknown) => {
                seen.push(args);
                return { celsius: 21 };
              },
            },
          },
        ],
        tool_choice: "required" as const,
        max_tokens: 300,
        seed: 2,
      };
      const runner = stream ? client.chat.completions.runTools({ ...params, stream: true }, { maxChatCompletions: 2 }) : client.chat.completions.runTools(params, { maxChatCompletions: 2 });
      await runner.done();
      // Two completions, each ending on calls; the first round's calls ran, and their results went back.
      expect(seen.length).toBeGreaterThanOrEqual(1);
      for (const args of seen) expect(validate(args), JSON.stringify(args)).toBe(true);
      const messages = runner.messages;
      const toolMessages = messages.filter((m) => m.role === "tool");
      expect(toolMessages.length).toBe(seen.length);
      const assistants = messages.filter((m) => m.role === "assistant");
      expect(assistants.length).toBe(2);
      const ids = assistants.flatMap((m) => ("tool_calls" in m && m.tool_calls ? m.tool_calls.map((c) => c.id) : []));
      for (const t of toolMessages) expect(ids).toContain("tool_call_id" in t ? t.tool_call_id : undefined);
    }, 120_000);
  }

  it("refuses malformed tool fields with a 400 naming the field", async () => {
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ tools: [{ type: "function", function: { name: "bad name!" } }] }, "tools[0].function.name"],
      [{ tools: [TOOL], tool_choice: "sometimes" }, "tool_choice"],
      [{ tools: [TOOL], tool_choice: { type: "function", function: { name: "other" } } }, "tool_choice"],
      [{ tools: [TOOL], parallel_tool_calls: "yes" }, "parallel_tool_calls"],
      [{ tools: [TOOL], grammar: "root ::= \"x\"" }, "tools"],
      [{ messages: [{ role: "tool", content: "x" }] }, "messages[0].tool_call_id"],
    ];
    for (const [fields, param] of bad) {
      const response = await fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: "any", messages: [{ role: "user", content: "x" }], max_tokens: 2, ...fields }),
      });
      expect(response.status, JSON.stringify(fields)).toBe(400);
      const body = (await response.json()) as { error: { param: string } };
      expect(body.error.param).toBe(param);
    }
  });
});

describe("server: reasoning_content (DeepSeek R1 template)", () => {
  let server: RunningServer;
  const template = fs.readFileSync(path.join(repoRoot, "vendor/llama.cpp/models/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"), "utf8");

  beforeAll(async () => {
    server = await startServer({ model: await toolsModelPath(), port: 0, parallel: 1, contextSize: 4096, threads: 2, chatTemplate: template });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });

  /** The generation prompt opens a thinking block that a random model never closes: all it writes is reasoning. */
  it("streams delta.reasoning_content and returns message.reasoning_content, apart from the content", async () => {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "none", maxRetries: 0 });
    const body = { model: "any", messages: [{ role: "user" as const, content: "Why?" }], max_tokens: 12, seed: 3, reasoning_format: "auto" };
    const whole = await client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const message = whole.choices[0]!.message as typeof whole.choices[0]["message"] & { reasoning_content?: string };
    expect(message.reasoning_content ?? "").not.toBe("");
    expect(message.content).toBe("");

    const stream = await client.chat.completions.create({ ...body, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
    let reasoning = "";
    let content = "";
    for await (const chunk of stream) {
      const delta = (chunk.choices[0]?.delta ?? {}) as { content?: string | null; reasoning_content?: string };
      reasoning += delta.reasoning_content ?? "";
      content += delta.content ?? "";
    }
    expect(reasoning).toBe(message.reasoning_content);
    expect(content).toBe("");

    // reasoning_format "none": the same text is the content (the server's default without the field too).
    const plain = await client.chat.completions.create({ ...body, reasoning_format: "none" } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect((plain.choices[0]!.message as { reasoning_content?: string }).reasoning_content).toBeUndefined();
    expect(plain.choices[0]!.message.content).toContain(message.reasoning_content!.trim());

    // reasoning_budget_tokens (llama-server's field): the thinking block is closed after 2 tokens.
    const budgeted = await client.chat.completions.create({ ...body, max_tokens: 20, reasoning_budget_tokens: 2 } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const b = budgeted.choices[0]!.message as { content: string | null; reasoning_content?: string };
    expect(b.content ?? "").not.toBe("");
    expect(b.reasoning_content ?? "").not.toBe("");
    expect(b.reasoning_content!.length).toBeLessThan(message.reasoning_content!.length + 1);
  }, 120_000);
});
