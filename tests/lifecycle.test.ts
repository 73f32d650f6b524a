import { describe, expect, it } from "vitest";

import { DisposedError, LlamaError, loadModel } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";

const file = fixturePath("gpt2-tiny-f32");

describe("dispose", () => {
  it("every call after dispose throws ERR_DISPOSED, and dispose is idempotent", async () => {
    const model = await loadModel(file);
    const context = await model.createContext({ contextSize: 64, threads: 1 });
    const session = context.createSession();
    await session.prompt("Hello there");

    session.dispose();
    session.dispose();
    expect(() => session.logits()).toThrow(DisposedError);
    expect(() => session.tokens).toThrow(expect.objectContaining({ code: "ERR_DISPOSED" }));
    expect(() => session.generate()).toThrow(DisposedError);
    expect(() => session.prompt("x")).toThrow(DisposedError);

    context.dispose();
    context[Symbol.dispose]();
    expect(() => context.createSession()).toThrow(DisposedError);

    model.dispose();
    model[Symbol.dispose]();
    expect(() => model.tokenize("x")).toThrow(DisposedError);
    expect(() => model.detokenize([1])).toThrow(DisposedError);
    await expect(model.createContext()).rejects.toBeInstanceOf(DisposedError);
    expect(model.disposed).toBe(true);
  });

  it("disposing a model disposes its contexts and sessions", async () => {
    const model = await loadModel(file);
    const context = await model.createContext({ contextSize: 64, threads: 1 });
    const session = context.createSession();
    model.dispose();
    expect(context.disposed).toBe(true);
    expect(session.disposed).toBe(true);
    expect(() => session.logits()).toThrow(expect.objectContaining({ code: "ERR_DISPOSED" }));
  });

  it("disposing a context mid-generation ends the generation with ERR_DISPOSED", async () => {
    const model = await loadModel(file);
    const context = await model.createContext({ contextSize: 128, threads: 1 });
    const session = context.createSession();
    await session.prompt("Hello");
    const seen: number[] = [];
    const run = (async () => {
      for await (const { token } of session.generate({ temperature: 0 })) {
        seen.push(token);
        if (seen.length === 2) context.dispose();
      }
    })();
    await expect(run).rejects.toMatchObject({ code: "ERR_DISPOSED" });
    model.dispose();
  });

  it("a disposed session frees its sequence for a new one", async () => {
    using model = await loadModel(file);
    using context = await model.createContext({ contextSize: 64, threads: 1, sequences: 1 });
    const a = context.createSession();
    expect(() => context.createSession()).toThrow(expect.objectContaining({ code: "ERR_NO_SEQUENCE" }));
    await a.prompt("one two three");
    a.dispose();
    using b = context.createSession();
    await b.prompt("Hello");
    expect(b.length).toBe(1);
    expect(context.freeSequences).toBe(0);
  });

  it("supports `using` / Symbol.dispose", async () => {
    let kept: { disposed: boolean } | undefined;
    {
      using model = await loadModel(file);
      kept = model;
    }
    expect(kept?.disposed).toBe(true);
  });

  it("rejects out-of-range tokens with ERR_TOKEN_INVALID without losing the session", async () => {
    using model = await loadModel(file);
    using context = await model.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    await session.prompt("Hello");
    const before = [...session.tokens];
    await expect(session.prompt([50257])).rejects.toMatchObject({ code: "ERR_TOKEN_INVALID" });
    await expect(session.prompt([-1], { append: true })).rejects.toMatchObject({ code: "ERR_TOKEN_INVALID" });
    await expect(session.prompt([1.5])).rejects.toMatchObject({ code: "ERR_TOKEN_INVALID" });
    expect(() => model.detokenize([99999])).toThrow(LlamaError);
    expect([...session.tokens]).toEqual(before);
    expect(session.logits().length).toBe(50257);
  });

  it("rejects prompts longer than the session can hold with ERR_CONTEXT_FULL", async () => {
    using model = await loadModel(file);
    using context = await model.createContext({ contextSize: 32, threads: 1 });
    using session = context.createSession();
    const long = new Array(33).fill(15496);
    await expect(session.prompt(long)).rejects.toMatchObject({ code: "ERR_CONTEXT_FULL" });
    await session.prompt(long.slice(0, 30));
    const gen = session.generate({ temperature: 0 });
    const tokens: number[] = [];
    await expect((async () => {
      for await (const { token } of gen) tokens.push(token);
    })()).rejects.toMatchObject({ code: "ERR_CONTEXT_FULL" });
    expect(session.length).toBe(32);
    // GPT-2 has learned positions: a context beyond its training length is refused up front.
    await expect(model.createContext({ contextSize: 4096 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });
});
