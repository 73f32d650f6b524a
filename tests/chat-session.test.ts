/**
 * ChatSession on llama-tiny-f32 (random weights: the replies are gibberish, so these tests check
 * the mechanics: template application, history, token accounting, prefix reuse, overflow).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ChatSession, ChatTemplate, ContextFullError, LlamaError, loadModel, renderChat, type ChatMessage, type ChatTrimEvent, type Context, type Model } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";

function commonPrefix(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

describe("ChatSession", () => {
  let model: Model;
  let context: Context;
  const system = "You are terse.";

  beforeAll(async () => {
    model = await loadModel(fixturePath("llama-tiny-f32"));
    context = await model.createContext({ contextSize: 256, threads: 2, sequences: 2 });
  });
  afterAll(() => model?.dispose());

  /** The tokens the chat must evaluate for `messages`, as llama.cpp would make them. */
  async function promptTokens(messages: ChatMessage[], template?: string): Promise<Int32Array> {
    const text = await renderChat(model, messages, template === undefined ? {} : { template });
    return model.tokenize(text, { addSpecial: true, parseSpecial: true });
  }

  it("streams a reply, keeps the history and evaluates only the new turn each time", async () => {
    using chat = new ChatSession(context, { systemPrompt: system });
    expect(chat.messages).toEqual([{ role: "system", content: system }]);
    let previousPrompt = 0;
    for (const [turn, message] of ["Hello there", "Who are you?", "Tell me more", "ok"].entries()) {
      const before = chat.session.tokens;
      const expected = await promptTokens([...chat.messages, { role: "user", content: message }]);
      const stats = context.stats();
      const reply = chat.send(message, { maxTokens: 8, temperature: 0 });
      let streamed = "";
      const streamedTokens: number[] = [];
      for await (const { token, text } of reply) {
        streamed += text;
        streamedTokens.push(token);
      }
      const result = await reply.result;
      const decoded = context.stats().tokensDecoded - stats.tokensDecoded;

      expect(result.text).toBe(streamed);
      expect(result.tokens).toEqual(streamedTokens);
      expect(result.tokens.length).toBeGreaterThan(0);
      expect(result.tokens.length).toBeLessThanOrEqual(8);
      if (result.finishReason === "length") expect(result.tokens).toHaveLength(8);
      // The session holds exactly the rendered conversation followed by the reply.
      expect([...chat.session.tokens]).toEqual([...expected, ...result.tokens]);
      expect(result.prompt.length).toBe(expected.length);
      expect(result.prompt.reused + result.prompt.evaluated).toBe(expected.length);
      // Prefix reuse: what the cache held of the old history and the new prompt share.
      const shared = commonPrefix(before, expected);
      expect(result.prompt.reused).toBeLessThanOrEqual(shared);
      expect(result.prompt.reused).toBeGreaterThanOrEqual(Math.min(shared, before.length - 1));
      if (turn === 0) {
        expect(result.prompt.reused).toBe(0);
      } else {
        // Everything up to the previous turn's generation prompt came from the cache.
        expect(result.prompt.reused).toBeGreaterThanOrEqual(previousPrompt);
        expect(result.prompt.evaluated).toBeLessThan(expected.length - previousPrompt + 1);
      }
      // The decode loop did the prompt's new tokens and every generated token but the last.
      expect(decoded).toBe(result.prompt.evaluated + result.tokens.length - 1);
      previousPrompt = expected.length;
      expect(chat.messages.slice(-2)).toEqual([
        { role: "user", content: message },
        { role: "assistant", content: result.text },
      ]);
    }
    expect(chat.messages).toHaveLength(1 + 2 * 4);
  });

  it("gives the full text with text() and the same reply for the same seed", async () => {
    const run = async () => {
      using chat = new ChatSession(context, { systemPrompt: system });
      const first = await chat.send("Hi", { maxTokens: 6, temperature: 0.9, seed: 7 }).text();
      const second = await chat.send("Again", { maxTokens: 6, temperature: 0.9, seed: 8 }).collect();
      return [first, second.text, chat.messages.length] as const;
    };
    const a = await run();
    expect(a[2]).toBe(5);
    expect(await run()).toEqual(a);
  });

  it("applies a custom template and a given history", async () => {
    const history: ChatMessage[] = [
      { role: "user", content: "2+2?" },
      { role: "assistant", content: "4" },
    ];
    using chat = new ChatSession(context, { template: "chatml", messages: history });
    expect(chat.template.engine).toBe("builtin");
    await chat.send("And 3+3?", { maxTokens: 3, temperature: 0 }).text();
    const expected = await promptTokens([...history, { role: "user", content: "And 3+3?" }], "chatml");
    expect([...chat.session.tokens.subarray(0, expected.length)]).toEqual([...expected]);
    expect(model.detokenize(expected, { removeSpecial: true })).toContain("<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n");
    // A ChatTemplate instance can be shared by chats.
    const jinja = new ChatTemplate(model, { template: "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant]" });
    using other = new ChatSession(context, { template: jinja });
    const reply = await other.send("x", { maxTokens: 2, temperature: 0 }).collect();
    const rendered = model.tokenize("[user] x\n[assistant]", { addSpecial: true, parseSpecial: true });
    expect([...other.session.tokens.subarray(0, rendered.length)]).toEqual([...rendered]);
    expect([...other.session.tokens.subarray(rendered.length)]).toEqual(reply.tokens);
  });

  it("stops where the template's turn ends when the model writes it as text", async () => {
    using chat = new ChatSession(context, { template: "chatml" });
    // A grammar makes the model write the ChatML end of turn as plain text (not a special token here).
    const result = await chat.send("Hi", { maxTokens: 30, grammar: 'root ::= "Yes<|im_end|>more"' }).collect();
    expect(result.text).toBe("Yes");
    expect(result.finishReason).toBe("stop");
    expect(chat.messages.at(-1)).toEqual({ role: "assistant", content: "Yes" });
  });

  it("refuses a second message while a reply runs, and keeps a reply stopped early", async () => {
    using chat = new ChatSession(context, { systemPrompt: system });
    const reply = chat.send("Hello", { maxTokens: 20, temperature: 0 });
    expect(chat.busy).toBe(true);
    expect(() => chat.send("again")).toThrow(expect.objectContaining({ code: "ERR_BUSY" }));
    let seen = "";
    let count = 0;
    for await (const { text } of reply) {
      seen += text;
      if (++count === 3) break;
    }
    const result = await reply.result;
    expect(result.finishReason).toBe("aborted");
    expect(result.text).toBe(seen);
    expect(chat.busy).toBe(false);
    expect(chat.messages.at(-1)).toEqual({ role: "assistant", content: seen });
    const next = await chat.send("Go on", { maxTokens: 4, temperature: 0 }).collect();
    expect(next.tokens.length).toBeGreaterThan(0);
    // abort() ends a reply quietly, even before it started generating; the part generated is kept.
    const stopped = chat.send("Stop", { maxTokens: 200, temperature: 0 });
    stopped.abort();
    const partial = await stopped.collect();
    expect(partial.finishReason).toBe("aborted");
    expect(partial.tokens.length).toBeLessThan(200);
    expect(chat.messages.at(-1)).toEqual({ role: "assistant", content: partial.text });
    expect(chat.busy).toBe(false);
    // An AbortSignal ends the turn too, and the consumer sees the AbortError.
    const controller = new AbortController();
    const aborted = chat.send("More", { maxTokens: 50, temperature: 0, signal: controller.signal });
    controller.abort();
    await expect(aborted.text()).rejects.toMatchObject({ code: "ERR_ABORTED" });
    expect(chat.busy).toBe(false);
  });

  it("drops the oldest turns when the context is full, keeping the system prompt, and reports the cost", async () => {
    const small = await model.createContext({ contextSize: 96, threads: 2 });
    const events: ChatTrimEvent[] = [];
    using chat = new ChatSession(small, { systemPrompt: system, onTrim: (e) => events.push(e) });
    const sent: string[] = [];
    let trimmedAt = -1;
    for (let turn = 0; turn < 12 && trimmedAt < 0; turn++) {
      const message = `Question number ${turn}, please answer`;
      sent.push(message);
      const before = chat.session.tokens;
      const result = await chat.send(message, { maxTokens: 12, temperature: 0 }).collect();
      expect(result.prompt.length + 12).toBeLessThanOrEqual(chat.session.capacity);
      if (result.droppedTurns > 0) {
        trimmedAt = turn;
        expect(events).toHaveLength(1);
        const event = events[0];
        expect(event.droppedTurns).toBe(result.droppedTurns);
        expect(event.droppedMessages[0]).toEqual({ role: "user", content: sent[0] });
        expect(event.droppedMessages.filter((m) => m.role === "user")).toHaveLength(result.droppedTurns);
        expect(event.reEvaluated).toBe(result.prompt.evaluated);
        expect(event.reused).toBe(result.prompt.reused);
        // The system prompt's tokens stay in the cache; what follows the dropped turns is evaluated again.
        const messages = chat.messages;
        const expected = await promptTokens(messages.slice(0, -1));
        expect([...chat.session.tokens.subarray(0, expected.length)]).toEqual([...expected]);
        const head = commonPrefix(
          await promptTokens([{ role: "system", content: system }, { role: "user", content: "A" }]),
          await promptTokens([{ role: "system", content: system }, { role: "user", content: "B" }]),
        );
        expect(head).toBeGreaterThan(10);
        expect(result.prompt.reused).toBe(commonPrefix(before, expected));
        expect(result.prompt.reused).toBeGreaterThanOrEqual(head);
        expect(result.prompt.reused).toBeLessThan(head + 8);
        expect(result.prompt.evaluated).toBe(expected.length - result.prompt.reused);
        expect(messages[0]).toEqual({ role: "system", content: system });
        expect(messages[1]).toEqual({ role: "user", content: sent[result.droppedTurns] });
        expect(messages.filter((m) => m.role === "user").map((m) => m.content)).toEqual(sent.slice(result.droppedTurns));
      } else {
        expect(events).toHaveLength(0);
      }
    }
    expect(trimmedAt).toBeGreaterThan(0);
    small.dispose();
  });

  it("fails with ContextFullError when the message alone does not fit, and stays usable", async () => {
    const small = await model.createContext({ contextSize: 64, threads: 2 });
    using chat = new ChatSession(small, { systemPrompt: system });
    const error = await chat.send("word ".repeat(80), { maxTokens: 4 }).text().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ContextFullError);
    expect(chat.busy).toBe(false);
    expect(chat.messages).toEqual([{ role: "system", content: system }]);
    const ok = await chat.send("short", { maxTokens: 4, temperature: 0 }).collect();
    expect(ok.tokens.length).toBeGreaterThan(0);
    small.dispose();
  });

  it("checks its arguments and reports template errors on the reply", async () => {
    expect(() => new ChatSession(context, { reserveTokens: 0 })).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => new ChatSession(context, { messages: [{ role: "user" }] as never })).toThrow(LlamaError);
    using chat = new ChatSession(context);
    expect(() => chat.send(42 as never)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => chat.send("x", { contextShift: true } as never)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => chat.send("x", { prompt: "other" } as never)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    // The model's template insists on alternating roles: a history of two user messages fails to render.
    using broken = new ChatSession(context, { messages: [{ role: "user", content: "a" }] });
    await expect(broken.send("b").text()).rejects.toMatchObject({ code: "ERR_TEMPLATE_INVALID" });
    expect(broken.busy).toBe(false);
  });

  it("refuses unknown options, naming the nearest known one, and template options beside a ChatTemplate", () => {
    expect(() => new ChatSession(context, { systemPromt: system } as never)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: 'Unknown option "systemPromt" in ChatSession options; did you mean "systemPrompt"?' }),
    );
    expect(() => new ChatSession(context, { useJinja: false } as never)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: expect.stringContaining('engine: "jinja" or "builtin"') }),
    );
    // The engine a chat is asked for is the engine its template reports.
    using builtin = new ChatSession(context, { engine: "builtin" });
    expect(builtin.template.engine).toBe("builtin");
    const template = new ChatTemplate(model);
    expect(() => new ChatSession(context, { template, engine: "builtin" })).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: expect.stringMatching(/^engine must be unset with a ChatTemplate/) }),
    );
  });
});
