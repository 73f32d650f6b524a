/**
 * The tool loop of a chat reply (src/chat-tool-reply.ts) on scripted model output: the output of
 * each round is fixed text in llama.cpp's Hermes 2 Pro format, parsed by that format's own parser
 * (a real render of vendor/llama.cpp/models/templates/NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja),
 * so that unknown tool names, bad arguments, throwing and hanging handlers can be produced on
 * demand. What the model would be given next (the rendered history) is checked through the
 * template too. The grammar and generation on a model are in tests/chat-tools.test.ts.
 */
import fs from "node:fs";
import path from "node:path";

import { describe, expect, it } from "vitest";

import { ChatTemplate, type ChatMessage, type RenderChatOptions } from "../src/chat.js";
import { ChatToolReply } from "../src/chat-tool-reply.js";
import { toolPlan, type ChatPiece, type ChatToolFields, type ToolRoundStart } from "../src/chat-tools.js";
import { AbortError, LlamaError } from "../src/errors.js";
import type { Generation } from "../src/generation.js";
import { repoRoot } from "./helpers/fixtures.js";

const HERMES = fs.readFileSync(path.join(repoRoot, "vendor/llama.cpp/models/templates/NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja"), "utf8");
const template = new ChatTemplate(HERMES);

const WEATHER = {
  description: "Weather of a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
} as const;

function call(name: string, args: string): string {
  return `<tool_call>\n{"name": "${name}", "arguments": ${args}}</tool_call>`;
}

/** A generation that yields `text` in small pieces (or hangs after them, until aborted). */
function scripted(text: string, signal: AbortSignal, hang = false): Generation {
  let finishReason: string | undefined;
  const gen = {
    get finishReason() {
      return finishReason;
    },
    async *[Symbol.asyncIterator]() {
      for (let i = 0; i < text.length; i += 3) {
        await new Promise((r) => setImmediate(r));
        if (signal.aborted) throw new AbortError("aborted");
        yield { token: 0, text: text.slice(i, i + 3) };
      }
      if (hang) {
        await new Promise((_, reject) => signal.addEventListener("abort", () => reject(new AbortError("aborted")), { once: true }));
      }
      finishReason = "stop";
    },
  };
  return gen as unknown as Generation;
}

/** A reply whose rounds produce `outputs` in turn, over a history kept here. */
function replyOf(fields: ChatToolFields, outputs: string[], options: { hang?: boolean } = {}) {
  let history: ChatMessage[] = [];
  const rendered: string[] = [];
  const stopper = new AbortController();
  let round = 0;
  let settled = 0;
  const driver = {
    async start(messages: ChatMessage[], render: RenderChatOptions): Promise<ToolRoundStart> {
      const full = [...history, ...messages];
      const r = await template.render(full, render);
      rendered.push(r.text);
      const text = outputs[round++] ?? "";
      return { generation: scripted(text, stopper.signal, options.hang === true && round === outputs.length), prompt: { reused: 0, evaluated: 1, length: 1 }, droppedTurns: 0, history: full, rendered: r };
    },
    commit(h: ChatMessage[]) {
      history = h;
    },
    settle() {
      settled++;
    },
  };
  const reply = new ChatToolReply({ role: "user", content: "Weather in Paris?" }, toolPlan(fields), driver, stopper);
  return { reply, history: () => history, rendered, settled: () => settled, stopper };
}

async function drain(reply: ChatToolReply): Promise<ChatPiece[]> {
  const pieces: ChatPiece[] = [];
  for await (const p of reply) pieces.push(p);
  return pieces;
}

describe("ChatSession tool loop (scripted output, Hermes 2 Pro format)", () => {
  it("without handlers: ends on the calls, parsed, with streamed pieces that add up to them", async () => {
    const { reply, history, settled } = replyOf({ tools: { weather: WEATHER } }, [`Let me look.${call("weather", '{"city": "Paris"}')}`]);
    const pieces = await drain(reply);
    const result = await reply.result;
    expect(result.finishReason).toBe("toolCalls");
    expect(result.content).toBe("Let me look.");
    expect(result.toolCalls).toHaveLength(1);
    expect(result.toolCalls[0]).toMatchObject({ name: "weather", arguments: { city: "Paris" } });
    expect(JSON.parse(result.toolCalls[0]!.rawArguments)).toEqual({ city: "Paris" });
    const text = pieces.flatMap((p) => ("text" in p ? [p.text] : [])).join("");
    expect(text).toBe("Let me look.");
    const deltas = pieces.flatMap((p) => ("toolCall" in p ? [p.toolCall] : []));
    expect(deltas[0]).toMatchObject({ index: 0, name: "weather", argumentsDelta: "", id: result.toolCalls[0]!.id });
    expect(deltas.map((d) => d.argumentsDelta).join("")).toBe(result.toolCalls[0]!.rawArguments);
    // The assistant message with its call joined the history; the caller answers it.
    expect(history().at(-1)).toMatchObject({ role: "assistant", content: "Let me look.", toolCalls: [{ name: "weather", id: result.toolCalls[0]!.id }] });
    expect(settled()).toBe(1);
  });

  it("with handlers: runs them (in parallel), feeds the results back and ends on the answer", async () => {
    const started: string[] = [];
    let running = 0;
    let maxRunning = 0;
    const handler = async (args: Record<string, unknown>) => {
      started.push(String(args.city));
      running++;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => setTimeout(r, 20));
      running--;
      return { city: args.city, celsius: 21 };
    };
    const { reply, history, rendered } = replyOf({ tools: { weather: { ...WEATHER, handler } }, parallelToolCalls: true }, [
      call("weather", '{"city": "Paris"}') + call("weather", '{"city": "Tokyo"}'),
      "Sunny in both.",
    ]);
    await drain(reply);
    const result = await reply.result;
    expect(result).toMatchObject({ finishReason: "stop", content: "Sunny in both.", toolCalls: [], rounds: 2 });
    expect(started).toEqual(["Paris", "Tokyo"]);
    expect(maxRunning).toBe(2);
    const h = history();
    expect(h.map((m) => m.role)).toEqual(["user", "assistant", "tool", "tool", "assistant"]);
    const calls = h[1]!.toolCalls!;
    expect(h[2]).toMatchObject({ toolCallId: calls[0]!.id, content: JSON.stringify({ city: "Paris", celsius: 21 }) });
    expect(h[3]).toMatchObject({ toolCallId: calls[1]!.id, content: JSON.stringify({ city: "Tokyo", celsius: 21 }) });
    // The second round's prompt shows the model its calls and their results (the template's own rendering).
    expect(rendered[1]).toContain('{"city":"Paris","celsius":21}');
    expect(rendered[1]).toContain("<tool_response>");
  });

  it("a throwing handler becomes an error result the model sees", async () => {
    const { reply, history } = replyOf(
      {
        tools: {
          weather: {
            ...WEATHER,
            handler: () => {
              throw new Error("weather service down");
            },
          },
        },
      },
      [call("weather", '{"city": "Paris"}'), "Sorry."],
    );
    await drain(reply);
    expect((await reply.result).content).toBe("Sorry.");
    const tools = history().filter((m) => m.role === "tool");
    expect(tools.map((m) => m.content)).toEqual(["Error: weather service down"]);
  });

  for (const handlers of [false, true]) {
    it(`a call of a tool that was not offered is ERR_TOOL_CALL (${handlers ? "with" : "without"} handlers), and the text joins the history`, async () => {
      // llama.cpp's parsers know the offered names: such output does not match the format.
      const output = call("forecast", '{"city": "Paris"}');
      const weather = handlers ? { ...WEATHER, handler: () => "sunny" } : WEATHER;
      const { reply, settled, history } = replyOf({ tools: { weather } }, [output]);
      await expect(drain(reply)).rejects.toMatchObject({ code: "ERR_TOOL_CALL" });
      await expect(reply.result).rejects.toBeInstanceOf(LlamaError);
      expect(settled()).toBe(1);
      expect(history().at(-1)).toEqual({ role: "assistant", content: output });
    });
  }

  it("a hanging handler sees its signal aborted when the reply is aborted, and the reply ends", async () => {
    let seen: AbortSignal | undefined;
    const { reply, settled } = replyOf(
      {
        tools: {
          weather: {
            ...WEATHER,
            handler: (_args, { signal }) => {
              seen = signal;
              return new Promise(() => undefined); // never settles
            },
          },
        },
      },
      [call("weather", '{"city": "Paris"}')],
    );
    const pieces: ChatPiece[] = [];
    const consumed = (async () => {
      for await (const p of reply) pieces.push(p);
    })();
    while (seen === undefined) await new Promise((r) => setTimeout(r, 5));
    expect(seen.aborted).toBe(false);
    reply.abort();
    await consumed;
    expect(seen.aborted).toBe(true);
    const result = await reply.result;
    expect(result.finishReason).toBe("aborted");
    expect(result.toolCalls.map((c) => c.arguments)).toEqual([{ city: "Paris" }]); // made, unanswered
    expect(settled()).toBe(1);
  });

  it("the send's signal aborting a hanging handler throws the AbortError to the consumer; the turn still ends", async () => {
    let seen: AbortSignal | undefined;
    const hang = (_args: unknown, { signal }: { signal: AbortSignal }) => {
      seen = signal;
      return new Promise(() => undefined);
    };
    const { reply, settled, stopper } = replyOf({ tools: { weather: { ...WEATHER, handler: hang } } }, [call("weather", '{"city": "Oslo"}')]);
    const consumed = drain(reply);
    while (seen === undefined) await new Promise((r) => setTimeout(r, 5));
    stopper.abort(); // what ChatSession does when the send's signal aborts
    await expect(consumed).rejects.toBeInstanceOf(AbortError);
    expect(await reply.result).toMatchObject({ finishReason: "aborted", toolCalls: [{ arguments: { city: "Oslo" } }] });
    expect(settled()).toBe(1);
  });

  it("maxToolRounds: after that many rounds the calls are returned, not run", async () => {
    let runs = 0;
    const { reply } = replyOf({ tools: { weather: { ...WEATHER, handler: () => ++runs } }, maxToolRounds: 2 }, [
      call("weather", '{"city": "Paris"}'),
      call("weather", '{"city": "Oslo"}'),
    ]);
    await drain(reply);
    const result = await reply.result;
    expect(runs).toBe(1);
    expect(result).toMatchObject({ finishReason: "toolCalls", rounds: 2, toolCalls: [{ name: "weather", arguments: { city: "Oslo" } }] });
  });

  it("refuses bad tool definitions and options with ERR_INVALID_ARGUMENT", () => {
    const bad: Array<[ChatToolFields, RegExp]> = [
      [{ tools: { weather: { ...WEATHER, parameters: { type: "string" } } } }, /parameters\.type/],
      [{ tools: { weather: { ...WEATHER, handler: 3 as unknown as () => unknown } } }, /handler/],
      [{ tools: { weather: { ...WEATHER, nope: 1 } as unknown as typeof WEATHER } }, /unknown option "nope"/],
      [{ tools: { weather: WEATHER }, toolChoice: { name: "forecast" } }, /toolChoice\.name/],
      [{ tools: {}, toolChoice: "required" }, /toolChoice/],
      [{ tools: { weather: WEATHER }, maxToolRounds: 0 }, /maxToolRounds/],
      [{ reasoning: { format: "deepseek" as "auto" } }, /reasoning\.format/],
    ];
    for (const [fields, message] of bad) {
      expect(() => toolPlan(fields)).toThrow(message);
      expect(() => toolPlan(fields)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    }
    const cyclic: Record<string, unknown> = { type: "object" };
    cyclic.self = cyclic;
    expect(() => toolPlan({ tools: { weather: { parameters: cyclic as never } } })).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
  });

  it("a schema llama.cpp cannot turn into a grammar is refused when the template renders", async () => {
    await expect(
      template.render([{ role: "user", content: "x" }], {
        tools: [{ name: "weather", parameters: { type: "object", properties: { city: { $ref: "https://example.com/none.json" } } } }],
        toolChoice: "required",
      }),
    ).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_(TEMPLATE_INVALID|GRAMMAR_INVALID)$/) });
  });
});
