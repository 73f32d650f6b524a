/**
 * The sampler chain, grammars, JSON Schema, logprobs and the logits processor, checked against
 * the reference logits of the F32 GPT-2 fixture and independent tools (ajv for JSON Schema).
 */
import { Ajv } from "ajv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, type Context, type Model } from "../src/index.js";
import { loadGpt2Reference, type Gpt2Reference } from "./reference/gpt2.js";
import { fixturePath } from "./helpers/fixtures.js";
import { softmax } from "./helpers/math.js";

/** Seeds per grammar test: fewer under the sanitizers (`npm run test:asan`), where each costs ~10x; the same code paths run. */
const SEEDS = process.env.LLAMA_NAPI_SANITIZER === undefined ? 50 : 10;

function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

describe("sampling", () => {
  let model: Model;
  let context: Context;
  let reference: Gpt2Reference;
  const prompt = "The pizza came out of the oven and";

  beforeAll(async () => {
    const file = fixturePath("gpt2-tiny-f32");
    model = await loadModel(file);
    context = await model.createContext({ contextSize: 128, threads: 1, kvCacheType: "f32", flashAttention: "off" });
    reference = await loadGpt2Reference(file);
  });
  afterAll(() => model?.dispose());

  const generate = async (options: Parameters<import("../src/index.js").Session["generate"]>[0]) => {
    using session = context.createSession();
    await session.prompt(prompt);
    return await session.generate(options).collect();
  };

  it("temperature 0 picks the arg-max of the reference logits", async () => {
    const { tokens } = await generate({ maxTokens: 6, temperature: 0 });
    let history = [...model.tokenize(prompt)];
    for (const token of tokens) {
      expect(token).toBe(argmax(reference.forward(history).logits.at(-1)!));
      history = [...history, token];
    }
  });

  it("top-k 1 equals greedy, at any temperature and seed", async () => {
    const greedy = await generate({ maxTokens: 12, temperature: 0 });
    for (const seed of [1, 2, 3]) {
      expect((await generate({ maxTokens: 12, temperature: 1.5, topK: 1, seed })).tokens).toEqual(greedy.tokens);
    }
  });

  it("a logit bias of -Infinity bans a token, and a large one forces it", async () => {
    const greedy = await generate({ maxTokens: 8, temperature: 0 });
    const banned = greedy.tokens[0];
    const without = await generate({ maxTokens: 8, temperature: 0, logitBias: { [banned]: -Infinity } });
    expect(without.tokens).not.toContain(banned);
    const forced = await generate({ maxTokens: 4, temperature: 0, logitBias: new Map([[464, 1000]]) });
    expect(forced.tokens).toEqual([464, 464, 464, 464]);
  });

  it("reports log-probabilities equal to softmax(reference logits)", async () => {
    using session = context.createSession();
    await session.prompt(prompt);
    let history = [...model.tokenize(prompt)];
    const items = [];
    for await (const item of session.generate({ maxTokens: 5, temperature: 1, topK: 0, topP: 1, minP: 0, seed: 9, logprobs: 5 })) {
      items.push(item);
    }
    expect(items).toHaveLength(5);
    for (const item of items) {
      const p = softmax(reference.forward(history).logits.at(-1)!);
      expect(Math.abs(Math.exp(item.logprob!) - p[item.token])).toBeLessThan(1e-4);
      expect(item.top).toHaveLength(5);
      const order = [...p.keys()].sort((a, b) => p[b] - p[a]).slice(0, 5);
      expect(item.top!.map((t) => t.token)).toEqual(order);
      for (const t of item.top!) expect(Math.abs(Math.exp(t.logprob) - p[t.token])).toBeLessThan(1e-4);
      history = [...history, item.token];
    }
  });

  it(`every one of ${SEEDS} seeded samples under a GBNF grammar parses`, async () => {
    const grammar = String.raw`root ::= "(" expr ")"
expr ::= term (("+" | "*") term)*
term ::= [0-9] | "(" expr ")"`;
    const valid = /^\((?:\d|\(.*\))(?:[+*](?:\d|\(.*\)))*\)$/;
    for (let seed = 0; seed < SEEDS; seed++) {
      const { text, finishReason } = await generate({ grammar, temperature: 1, seed, maxTokens: 24 });
      if (finishReason === "eog") {
        expect(text, `seed ${seed}`).toMatch(valid);
        // Balanced parentheses, digits and operators only.
        let depth = 0;
        for (const c of text) depth += c === "(" ? 1 : c === ")" ? -1 : 0;
        expect(depth).toBe(0);
      } else {
        expect(finishReason).toBe("length");
        expect(text).toMatch(/^[()+*0-9]+$/);
      }
    }
  });

  it(`JSON Schema output parses and validates (ajv), ${SEEDS} seeds`, async () => {
    const schema = {
      type: "object",
      properties: {
        name: { type: "string", maxLength: 8 },
        age: { type: "integer", minimum: 0, maximum: 150 },
        tags: { type: "array", items: { enum: ["a", "b", "c"] }, maxItems: 3 },
      },
      required: ["name", "age", "tags"],
      additionalProperties: false,
    };
    const validate = new Ajv().compile(schema);
    let complete = 0;
    for (let seed = 0; seed < SEEDS; seed++) {
      const { text, finishReason } = await generate({ jsonSchema: schema, temperature: 1, seed, maxTokens: 80 });
      expect(finishReason, `seed ${seed}: ${text}`).toBe("eog");
      const value: unknown = JSON.parse(text);
      expect(validate(value), `seed ${seed}: ${text}`).toBe(true);
      complete++;
    }
    expect(complete).toBe(SEEDS);
  });

  it("invalid grammars and schemas raise ERR_GRAMMAR_INVALID with the parser's message", async () => {
    const bad = await generate({ grammar: 'root ::= "unterminated', maxTokens: 2 }).catch((e: unknown) => e);
    expect(bad).toMatchObject({ code: "ERR_GRAMMAR_INVALID" });
    expect((bad as Error).message.length).toBeGreaterThan(40);
    const badSchema = await generate({ jsonSchema: "{ not json", maxTokens: 2 }).catch((e: unknown) => e);
    expect(badSchema).toMatchObject({ code: "ERR_GRAMMAR_INVALID" });
    await expect(generate({ jsonSchema: { type: "object", properties: { a: { $ref: "#/nowhere" } } }, maxTokens: 2 })).rejects.toMatchObject({
      code: "ERR_GRAMMAR_INVALID",
    });
  });

  it("a JS logits processor sees the logits (no copy) and can steer sampling", async () => {
    const seen: number[] = [];
    const expectedFirst = reference.forward([...model.tokenize(prompt)]).logits.at(-1)!;
    let firstDiff = Infinity;
    const { tokens } = await generate({
      maxTokens: 5,
      temperature: 0,
      logitsProcessor: (logits, history) => {
        if (seen.length === 0) {
          firstDiff = 0;
          for (let i = 0; i < logits.length; i++) firstDiff = Math.max(firstDiff, Math.abs(logits[i] - expectedFirst[i]));
        }
        seen.push(history.length);
        logits.fill(-Infinity);
        logits[1000 + seen.length] = 0;
      },
    });
    expect(firstDiff).toBeLessThan(1e-3);
    expect(tokens).toEqual([1001, 1002, 1003, 1004, 1005]);
    const start = model.tokenize(prompt).length;
    expect(seen).toEqual([start, start + 1, start + 2, start + 3, start + 4]);
    await expect(generate({ maxTokens: 3, logitsProcessor: () => { throw new Error("boom"); } })).rejects.toThrow(/boom/);
  });

  it("penalties, DRY, XTC, typical-p, min-p, mirostat and dynamic temperature all run and change the output", async () => {
    const greedy = await generate({ maxTokens: 24, temperature: 0 });
    const penalised = await generate({ maxTokens: 24, temperature: 0, repeatPenalty: 1.5, frequencyPenalty: 0.5, presencePenalty: 0.5, penaltyLastN: -1 });
    // The random model repeats itself greedily; penalties must break that.
    expect(new Set(penalised.tokens).size).toBeGreaterThan(new Set(greedy.tokens).size);
    for (const options of [
      { dry: { multiplier: 0.8 } },
      { xtc: { probability: 0.5, threshold: 0.01 } },
      { typicalP: 0.5 },
      { minP: 0.2 },
      { mirostat: { version: 1 as const } },
      { mirostat: { version: 2 as const, tau: 3 } },
      { dynamicTemperatureRange: 0.5 },
      { topNSigma: 1 },
      { samplerOrder: ["temperature", "topK", "topP"] as const },
    ]) {
      const a = await generate({ maxTokens: 12, temperature: 0.9, seed: 5, ...options });
      const b = await generate({ maxTokens: 12, temperature: 0.9, seed: 5, ...options });
      expect(a.tokens, JSON.stringify(options)).toHaveLength(12);
      expect(b.tokens, JSON.stringify(options)).toEqual(a.tokens);
    }
    await expect(generate({ samplerOrder: ["nope" as "topK"] })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });
});
