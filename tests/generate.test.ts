import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { AbortError, loadModel, type Context, type Model } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";

function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

describe("generation", () => {
  let model: Model;
  let context: Context;
  const prompt = "The pizza came out of the oven and it tasted";

  beforeAll(async () => {
    model = await loadModel(fixturePath("gpt2-tiny-f32"));
    context = await model.createContext({ contextSize: 128, threads: 2, sequences: 2 });
  });
  afterAll(() => model?.dispose());

  it("greedy generation picks the arg-max of the logits at every step", async () => {
    using session = context.createSession();
    await session.prompt(prompt);
    const generated = await session.generate({ maxTokens: 12, temperature: 0 }).collect();
    expect(generated.tokens).toHaveLength(12);
    expect(generated.finishReason).toBe("length");

    // The same steps by hand: evaluate, take the arg-max, append it.
    using check = context.createSession();
    await check.prompt(prompt);
    for (const token of generated.tokens) {
      expect(token).toBe(argmax(check.logits()));
      await check.prompt([token], { append: true });
    }
    expect(generated.text).toBe(model.detokenize(generated.tokens));
  });

  it("appends generated tokens to the session's history", async () => {
    using session = context.createSession();
    await session.prompt(prompt);
    const before = session.length;
    const { tokens } = await session.generate({ maxTokens: 5, temperature: 0 }).collect();
    expect([...session.tokens]).toEqual([...model.tokenize(prompt), ...tokens]);
    expect(session.length).toBe(before + 5);
    // Generation continues where it stopped: 5 + 5 greedy tokens equal 10 in one go.
    const more = await session.generate({ maxTokens: 5, temperature: 0 }).collect();
    using fresh = context.createSession();
    await fresh.prompt(prompt);
    const ten = await fresh.generate({ maxTokens: 10, temperature: 0 }).collect();
    expect([...tokens, ...more.tokens]).toEqual(ten.tokens);
  });

  it("reproduces sampled output with a fixed seed, across runs and contexts", async () => {
    const options = { maxTokens: 24, temperature: 1.2, topK: 0, topP: 1, minP: 0, seed: 42 };
    const run = async (ctx: Context) => {
      using s = ctx.createSession();
      await s.prompt(prompt);
      return (await s.generate(options).collect()).tokens;
    };
    const first = await run(context);
    expect(await run(context)).toEqual(first);
    const other = await model.createContext({ contextSize: 64, threads: 1 });
    expect(await run(other)).toEqual(first);
    other.dispose();
    // Another seed gives another sample (24 tokens at temperature 1.2 from 50257).
    using s = context.createSession();
    await s.prompt(prompt);
    expect((await s.generate({ ...options, seed: 43 }).collect()).tokens).not.toEqual(first);
  });

  it("cuts stop strings that span token boundaries and never emits them", async () => {
    using session = context.createSession();
    await session.prompt(prompt);
    const reference = await session.generate({ maxTokens: 16, temperature: 0 }).collect();
    // A stop string made of the end of one token and the start of the next.
    const pieces = reference.tokens.map((t) => model.tokenToPiece(t));
    const k = pieces.findIndex((p, i) => i >= 2 && p.length >= 2 && pieces[i + 1]?.length >= 2);
    expect(k).toBeGreaterThan(0);
    const stop = pieces[k].slice(-1) + pieces[k + 1].slice(0, 1);
    const expectedText = reference.text.slice(0, reference.text.indexOf(stop));

    await session.prompt(prompt);
    const chunks: string[] = [];
    const generation = session.generate({ maxTokens: 16, temperature: 0, stop: [stop, "never-appears-xyz"] });
    for await (const { text } of generation) chunks.push(text);
    expect(generation.finishReason).toBe("stop");
    expect(chunks.join("")).toBe(expectedText);
    for (const chunk of chunks) expect(chunk).not.toContain(stop);
  });

  it("stops at maxTokens and can be aborted with a signal, leaving the session usable", async () => {
    using session = context.createSession();
    await session.prompt(prompt);
    const controller = new AbortController();
    const seen: number[] = [];
    const consume = async () => {
      for await (const { token } of session.generate({ temperature: 0, signal: controller.signal })) {
        seen.push(token);
        if (seen.length === 3) controller.abort();
      }
    };
    await expect(consume()).rejects.toBeInstanceOf(AbortError);
    expect(seen.length).toBe(3);
    // Still usable: a prompt and a short generation work.
    await session.prompt(prompt);
    const after = await session.generate({ maxTokens: 3, temperature: 0 }).collect();
    expect(after.tokens).toHaveLength(3);
  });

  it("ends cleanly when the consumer breaks out of the loop", async () => {
    using session = context.createSession();
    await session.prompt(prompt);
    let n = 0;
    for await (const _ of session.generate({ temperature: 0 })) {
      if (++n === 2) break;
    }
    expect(n).toBe(2);
    const r = await session.prompt(prompt);
    expect(r.reused).toBe(model.tokenize(prompt).length - 1);
  });

  it("rejects bad generation options with typed errors", async () => {
    using session = context.createSession();
    await session.prompt(prompt);
    expect(() => session.generate({ maxTokens: 0 })).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => session.generate({ stop: [""] })).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    // Sampling options are checked by their table when generate() is called, like the others.
    expect(() => session.generate({ temperature: -1 })).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => session.generate({ topP: Number.NaN })).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => session.generate({ seed: -5 })).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    // Token ids are checked against the vocabulary natively.
    await expect(session.generate({ logitBias: [[model.info.vocabSize, 1]] }).collect()).rejects.toMatchObject({ code: "ERR_TOKEN_INVALID" });
    // The session survived every rejection.
    expect((await session.generate({ maxTokens: 2, temperature: 0 }).collect()).tokens).toHaveLength(2);
  });

  it("refuses to generate from an empty session", async () => {
    using session = context.createSession();
    await expect(session.generate({ maxTokens: 2 }).collect()).rejects.toMatchObject({ code: "ERR_STATE" });
  });
});
