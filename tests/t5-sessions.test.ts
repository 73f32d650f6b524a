/**
 * Sessions of an encoder-decoder model (T5) beyond the numbers (tests/t5.test.ts checks those
 * against the float64 reference): the encoder's input per session, its reuse, sessions that take
 * turns on one context (each decode must read its own session's encoder output), rewind and fork
 * on the decoder side, the APIs that do not apply, and `llama-napi generate` and the server's
 * /v1/completions on such a model. The oracle for the shared-context cases is the same session
 * run alone on a context of its own.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LlamaError, loadModel, startServer, type Context, type Model, type Session } from "../src/index.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";

const run = promisify(execFile);
const MAIN = path.join(repoRoot, "dist", "cli", "main.js");
const GREEDY = { temperature: 0, maxTokens: 12 } as const;
const INPUTS = ["translate English to German: The house is wonderful.", "summarize: Once upon a time there was a little dog.", "Hello world"];

let model: Model;
let context: Context;

beforeAll(async () => {
  model = await loadModel(fixturePath("t5-tiny-f32"));
  context = await model.createContext({ contextSize: 64, sequences: 3, threads: 1 });
}, 120_000);
afterAll(() => model?.dispose());

async function greedy(session: Session, maxTokens: number = GREEDY.maxTokens): Promise<number[]> {
  return (await session.generate({ ...GREEDY, maxTokens }).collect()).tokens;
}

/** What a session with `input` generates alone, on a context of its own. */
async function alone(input: string, maxTokens?: number): Promise<number[]> {
  using own = await model.createContext({ contextSize: 64, threads: 1 });
  using session = own.createSession();
  await session.prompt(input);
  return await greedy(session, maxTokens);
}

describe("encoder-decoder sessions", () => {
  it("prompt() encodes the input and starts the decoder from the decoder start token", async () => {
    expect(model.info).toMatchObject({ architecture: "t5", hasEncoder: true, hasDecoder: true, decoderStartToken: 0 });
    using session = context.createSession();
    const input = model.tokenize(INPUTS[0]);
    expect(input.at(-1)).toBe(model.specialTokens.eos); // T5 appends </s>
    const r = await session.prompt(INPUTS[0]);
    expect(r).toEqual({ evaluated: 1, reused: 0, length: 1, encoded: input.length });
    expect(Array.from(session.encoderTokens)).toEqual(Array.from(input));
    expect(Array.from(session.tokens)).toEqual([0]);
    const out = await greedy(session);
    expect(out).toHaveLength(GREEDY.maxTokens);
    expect(new Set(out).size).toBeGreaterThan(1); // a random model, but not one repeated token
    expect(Array.from(session.tokens)).toEqual([0, ...out]);
  });

  it("the same input again reuses its encoder output and the cached start token; a new one is encoded", async () => {
    using session = context.createSession();
    await session.prompt(INPUTS[1]);
    const first = await greedy(session);
    // No `encoded`: the encoder's output is reused. The start token is cached, but its logits were
    // replaced by the generation's, so it is evaluated again for them (as a decoder-only model's
    // last prompt token is).
    const again = await session.prompt(INPUTS[1]);
    expect(again).toEqual({ evaluated: 1, reused: 0, length: 1 });
    expect(await greedy(session)).toEqual(first);
    const other = await session.prompt(INPUTS[2]);
    expect(other.encoded).toBe(model.tokenize(INPUTS[2]).length);
    expect(await greedy(session)).toEqual(await alone(INPUTS[2]));
  });

  it("sessions with different inputs on one context generate what each generates alone", async () => {
    const expected = await Promise.all(INPUTS.map((input) => alone(input)));
    const sessions = INPUTS.map(() => context.createSession());
    try {
      await Promise.all(sessions.map((s, i) => s.prompt(INPUTS[i])));
      // At the same time: every step the context must hold the stepping session's encoder output.
      expect(await Promise.all(sessions.map((s) => greedy(s)))).toEqual(expected);
      expect(new Set(expected.map((t) => t.join())).size).toBe(INPUTS.length);
    } finally {
      for (const s of sessions) s.dispose();
    }
  });

  it("generate({ prompt }) encodes the input first and generates what prompt() then generate() do", async () => {
    using session = context.createSession();
    const generation = session.generate({ ...GREEDY, prompt: INPUTS[1] });
    const [prompted, { tokens }] = await Promise.all([generation.prompted, generation.collect()]);
    expect(tokens).toEqual(await alone(INPUTS[1]));
    expect(prompted).toEqual({ evaluated: 1, reused: 0, length: 1, encoded: model.tokenize(INPUTS[1]).length });
    expect([...session.encoderTokens]).toEqual([...model.tokenize(INPUTS[1])]);
    // Aborted at once: nothing runs, the session keeps what it had.
    const stopped = session.generate({ ...GREEDY, prompt: INPUTS[2] });
    stopped.abort();
    expect(await stopped.collect()).toMatchObject({ tokens: [], finishReason: "aborted" });
    expect([...session.encoderTokens]).toEqual([...model.tokenize(INPUTS[1])]);
  });

  it("teacher forcing, rewind and fork act on the decoder; a fork keeps the input", async () => {
    const expected = await alone(INPUTS[0], 8);
    using session = context.createSession();
    await session.prompt(INPUTS[0]);
    await session.prompt(expected.slice(0, 3), { append: true });
    expect(await greedy(session, 5)).toEqual(expected.slice(3, 8));
    session.rewind(4);
    expect(await greedy(session, 4)).toEqual(expected.slice(4, 8));
    using fork = await session.fork();
    expect(Array.from(fork.encoderTokens)).toEqual(Array.from(session.encoderTokens));
    fork.rewind(6);
    expect(await greedy(fork, 6)).toEqual(expected.slice(2, 8));
  });

  it("what does not apply to such a model is refused with a clear error, and the session goes on", async () => {
    using session = context.createSession();
    const appendFirst = await session.prompt([5, 6], { append: true }).catch((e: unknown) => e);
    expect(appendFirst).toBeInstanceOf(LlamaError);
    expect(appendFirst).toMatchObject({ code: "ERR_STATE", message: expect.stringMatching(/encoder-decoder model: prompt the session with the encoder's input first/) });
    await session.prompt(INPUTS[2]);
    await expect(session.saveState()).rejects.toMatchObject({ code: "ERR_UNSUPPORTED" });
    using draft = await loadModel(fixturePath("gpt2-tiny-f32"));
    expect(() => session.generate({ speculative: { draft } })).not.toThrow(); // the error comes through the generation
    await expect(session.generate({ ...GREEDY, speculative: { draft } }).collect()).rejects.toMatchObject({ code: "ERR_UNSUPPORTED" });
    await expect(model.createEmbeddingContext()).rejects.toMatchObject({ code: "ERR_UNSUPPORTED", message: expect.stringMatching(/encoder-decoder model.*t5encoder/) });
    expect(await greedy(session)).toEqual(await alone(INPUTS[2]));
  });

  it("trace() captures the encoder, the decoder and the cross-attention over the input", async () => {
    using session = context.createSession();
    await session.prompt(INPUTS[2]);
    const trace = await session.trace([5, 6, 7], { logitLens: 3 });
    const nEnc = session.encoderTokens.length;
    expect(Array.from(trace.encoder!.tokens)).toEqual(Array.from(session.encoderTokens));
    expect(trace.encoder!.layers).toEqual([...Array(model.info.layers).keys()]);
    expect(trace.layers).toEqual([...Array(model.info.decoderLayers).keys()]);
    expect(trace.encoder!.attention!.map((m) => [m.queries, m.keys])).toEqual(trace.encoder!.layers.map(() => [nEnc, nEnc]));
    expect(trace.crossAttention!.map((m) => [m.queries, m.keys])).toEqual(trace.layers.map(() => [3, nEnc]));
    expect(trace.attention!.map((m) => [m.queries, m.keys])).toEqual(trace.layers.map(() => [3, 4]));
    for (const map of [...trace.encoder!.attention!, ...trace.crossAttention!, ...trace.attention!]) {
      for (let h = 0; h < map.heads; h++) {
        for (let q = 0; q < map.queries; q++) expect(map.row(h, q).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
      }
    }
    expect(trace.logitLens).toHaveLength(trace.layers.length);
    // The trace appended the tokens to the decoder's history, as prompt({ append: true }) does.
    expect(Array.from(session.tokens)).toEqual([0, 5, 6, 7]);
  });
});

describe("encoder-decoder models in the CLI and the server", () => {
  it("llama-napi generate prints the input, then the output on its own line", async () => {
    const expected = await (async () => {
      using session = context.createSession();
      await session.prompt(INPUTS[0]);
      return (await session.generate(GREEDY).collect()).text;
    })();
    const { stdout } = await run(process.execPath, [MAIN, "generate", "-m", fixturePath("t5-tiny-f32"), "-p", INPUTS[0], "-n", String(GREEDY.maxTokens), "--temp", "0", "-t", "1"]);
    expect(stdout).toBe(`${INPUTS[0]}\n${expected}\n`);
  }, 60_000);

  it("/v1/completions generates from the encoder's input and counts it as the prompt", async () => {
    using session = context.createSession();
    await session.prompt(INPUTS[1]);
    const expected = await session.generate(GREEDY).collect();
    const server = await startServer({ model, port: 0, parallel: 2, contextSize: 128, threads: 1 });
    try {
      const body = { prompt: INPUTS[1], max_tokens: GREEDY.maxTokens, temperature: 0 };
      for (let i = 0; i < 2; i++) {
        const res = await fetch(`http://127.0.0.1:${server.port}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
        expect(res.status).toBe(200);
        const reply = (await res.json()) as { choices: Array<{ text: string }>; usage: { prompt_tokens: number; completion_tokens: number } };
        expect(reply.choices[0].text).toBe(expected.text);
        expect(reply.usage).toMatchObject({ prompt_tokens: model.tokenize(INPUTS[1]).length, completion_tokens: GREEDY.maxTokens });
      }
    } finally {
      await server.close();
    }
  }, 60_000);
});
