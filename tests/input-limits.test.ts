/**
 * Input limits: every kind of bad argument (out-of-range, negative, huge, NaN, Infinity, wrong
 * types, null, NUL bytes, lone surrogates, empty inputs) gets a typed LlamaError with a clear
 * message — never a crash, a hang or a plain TypeError/RangeError.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LlamaError, loadModel, type Context, type LlamaErrorCode, type Model, type Session } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";

const gpt2 = fixturePath("gpt2-tiny-f32");
const llama = fixturePath("llama-tiny-f32");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-limits-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

type Case = [name: string, run: () => unknown, codes: LlamaErrorCode | LlamaErrorCode[]];

/** Runs `run` (sync throw, rejected promise or failing generation) and checks the error it gives. */
async function expectLlamaError(name: string, run: () => unknown, codes: LlamaErrorCode | LlamaErrorCode[]): Promise<LlamaError> {
  const allowed = Array.isArray(codes) ? codes : [codes];
  let error: unknown;
  try {
    let result = run();
    if (result && typeof (result as { then?: unknown }).then === "function") result = await result;
    // A generation reports its errors while it is consumed.
    if (result && typeof (result as { collect?: unknown }).collect === "function") {
      await (result as { collect(): Promise<unknown> }).collect();
    }
  } catch (err) {
    error = err;
  }
  expect(error, `${name}: expected a LlamaError (${allowed.join("/")}), but it succeeded`).toBeDefined();
  expect(error, `${name}: ${String(error)}`).toBeInstanceOf(LlamaError);
  const e = error as LlamaError;
  expect(allowed, `${name}: got ${e.code}: ${e.message}`).toContain(e.code);
  expect(e.message.length, `${name}: empty message`).toBeGreaterThan(10);
  return e;
}

async function runCases(cases: Case[]): Promise<void> {
  for (const [name, run, codes] of cases) await expectLlamaError(name, run, codes);
}

const BAD_NUMBERS: Array<[string, unknown]> = [
  ["-1", -1],
  ["0.5", 0.5],
  ["NaN", NaN],
  ["Infinity", Infinity],
  ["-Infinity", -Infinity],
  ["2^53", 2 ** 53],
  ["1e300", 1e300],
  ["a string", "8"],
  ["null", null],
  ["an object", { value: 8 }],
  ["an array", [8]],
  ["a bigint", 8n],
  ["a boolean", true],
];

describe("loadModel arguments", () => {
  it("refuses bad paths and options with ERR_INVALID_ARGUMENT (or a file error)", async () => {
    const any = loadModel as (...args: unknown[]) => Promise<Model>;
    await runCases([
      ["path 123", () => any(123), "ERR_INVALID_ARGUMENT"],
      ["path null", () => any(null), "ERR_INVALID_ARGUMENT"],
      ["path undefined", () => any(), "ERR_INVALID_ARGUMENT"],
      ["path {}", () => any({}), "ERR_INVALID_ARGUMENT"],
      ["path ''", () => any(""), "ERR_INVALID_ARGUMENT"],
      ["path with a NUL byte", () => any(`${gpt2}\0.txt`), "ERR_INVALID_ARGUMENT"],
      ["path with a lone surrogate", () => any(path.join(tmp, "\uD800.gguf")), "ERR_FILE_NOT_FOUND"],
      ["options null", () => any(gpt2, null), "ERR_INVALID_ARGUMENT"],
      ["options a string", () => any(gpt2, "fast"), "ERR_INVALID_ARGUMENT"],
      ["useMmap a string", () => any(gpt2, { useMmap: "yes" }), "ERR_INVALID_ARGUMENT"],
      ["vocabOnly a number", () => any(gpt2, { vocabOnly: 1 }), "ERR_INVALID_ARGUMENT"],
      ["onProgress a string", () => any(gpt2, { onProgress: "log" }), "ERR_INVALID_ARGUMENT"],
      ["signal a string", () => any(gpt2, { signal: "stop" }), "ERR_INVALID_ARGUMENT"],
      ["signal an object", () => any(gpt2, { signal: { aborted: false } }), "ERR_INVALID_ARGUMENT"],
    ]);
  });

  it("a throwing onProgress does not break the load", async () => {
    using model = await loadModel(gpt2, {
      onProgress: () => {
        throw new Error("progress callback failure");
      },
    });
    expect(model.info.vocabSize).toBe(50257);
  });
});

describe("model methods", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(gpt2);
  });
  afterAll(() => model?.dispose());

  it("tokenize and detokenize refuse wrong types, and take NUL bytes and lone surrogates", async () => {
    const m = model as unknown as Record<string, (...args: unknown[]) => unknown>;
    await runCases([
      ["tokenize(123)", () => m.tokenize.call(model, 123), "ERR_INVALID_ARGUMENT"],
      ["tokenize(null)", () => m.tokenize.call(model, null), "ERR_INVALID_ARGUMENT"],
      ["tokenize(x, null)", () => m.tokenize.call(model, "x", null), "ERR_INVALID_ARGUMENT"],
      ["tokenize(x, {addSpecial: 'no'})", () => m.tokenize.call(model, "x", { addSpecial: "no" }), "ERR_INVALID_ARGUMENT"],
      ["detokenize(null)", () => m.detokenize.call(model, null), "ERR_INVALID_ARGUMENT"],
      ["detokenize('abc')", () => m.detokenize.call(model, "abc"), "ERR_INVALID_ARGUMENT"],
      ["detokenize([1], null)", () => m.detokenize.call(model, [1], null), "ERR_INVALID_ARGUMENT"],
      ["detokenize([50257])", () => model.detokenize([50257]), "ERR_TOKEN_INVALID"],
      ["detokenize([-1])", () => model.detokenize([-1]), "ERR_TOKEN_INVALID"],
      ["detokenize([2^31])", () => model.detokenize([2 ** 31]), "ERR_TOKEN_INVALID"],
      ["detokenize([NaN])", () => model.detokenize([NaN]), "ERR_TOKEN_INVALID"],
      ["detokenize(['1'])", () => model.detokenize(["1"] as unknown as number[]), "ERR_TOKEN_INVALID"],
      ["detokenize({length: -1})", () => model.detokenize({ length: -1 }), "ERR_INVALID_ARGUMENT"],
      ["detokenize({length: 1e12})", () => model.detokenize({ length: 1e12 }), "ERR_INVALID_ARGUMENT"],
      ["detokenize({length: 2^32 - 1})", () => model.detokenize({ length: 2 ** 32 - 1 }), ["ERR_INVALID_ARGUMENT", "ERR_TOKEN_INVALID"]],
      ["detokenize(sparse array)", () => model.detokenize(new Array(5)), "ERR_TOKEN_INVALID"],
      ["detokenize(Float64Array)", () => model.detokenize(new Float64Array([1.5])), "ERR_TOKEN_INVALID"],
    ]);
    expect(model.tokenize("", { addSpecial: false })).toHaveLength(0);
    expect(model.detokenize([])).toBe("");
    expect(model.detokenize(new Int32Array(0))).toBe("");
    // NUL bytes are text like any other; lone surrogates become U+FFFD.
    const nul = model.tokenize("a\0b", { addSpecial: false });
    expect(model.detokenize(nul)).toBe("a\0b");
    expect(model.detokenize(model.tokenize("x\uD800y\uDFFFz", { addSpecial: false }))).toBe("x\uFFFDy\uFFFDz");
  });

  it("single-token methods refuse ids out of range and non-numbers", async () => {
    const fns: Array<[string, (t: number) => unknown]> = [
      ["tokenToPiece", (t) => model.tokenToPiece(t)],
      ["tokenToBytes", (t) => model.tokenToBytes(t)],
      ["isEndOfGeneration", (t) => model.isEndOfGeneration(t)],
      ["isControl", (t) => model.isControl(t)],
      ["tokenAttributes", (t) => model.tokenAttributes(t)],
      ["tokenText", (t) => model.tokenText(t)],
      ["tokenEmbedding", (t) => model.tokenEmbedding(t)],
    ];
    for (const [name, fn] of fns) {
      for (const bad of [-1, 50257, 2 ** 31, 2 ** 53, NaN, Infinity, 0.5]) {
        await expectLlamaError(`${name}(${bad})`, () => fn(bad), "ERR_TOKEN_INVALID");
      }
      for (const bad of ["1", null, undefined, {}, 1n]) {
        await expectLlamaError(`${name}(${String(bad)})`, () => fn(bad as number), ["ERR_INVALID_ARGUMENT", "ERR_TOKEN_INVALID"]);
      }
    }
    for (const bad of [-1, 1024, 2 ** 40, NaN, "3"]) {
      await expectLlamaError(`positionEmbedding(${String(bad)})`, () => model.positionEmbedding(bad as number), "ERR_INVALID_ARGUMENT");
    }
  });
});

describe("createContext options", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(llama);
  });
  afterAll(() => model?.dispose());

  it("refuses bad values of every numeric option", async () => {
    for (const key of ["contextSize", "batchSize", "threads", "threadsBatch", "sequences"]) {
      for (const [label, value] of BAD_NUMBERS) {
        if (value === null && key === "threads") continue; // null means the default, like undefined
        await expectLlamaError(`${key}: ${label}`, () => model.createContext({ [key]: value, threads: key === "threads" ? value : 1 } as never), "ERR_INVALID_ARGUMENT");
      }
      await expectLlamaError(`${key}: 0`, () => model.createContext({ [key]: 0, threads: key === "threads" ? 0 : 1 } as never), "ERR_INVALID_ARGUMENT");
    }
    await runCases([
      ["options null", () => model.createContext(null as never), "ERR_INVALID_ARGUMENT"],
      ["options a number", () => model.createContext(5 as never), "ERR_INVALID_ARGUMENT"],
      ["threads 513 (past ggml's 512)", () => model.createContext({ threads: 513 }), "ERR_INVALID_ARGUMENT"],
      ["threadsBatch 513", () => model.createContext({ threads: 1, threadsBatch: 513 }), "ERR_INVALID_ARGUMENT"],
      ["contextSize 2^25", () => model.createContext({ contextSize: 2 ** 25, threads: 1 }), "ERR_INVALID_ARGUMENT"],
      ["contextSize × sequences too large", () => model.createContext({ contextSize: 2 ** 24, sequences: 64, threads: 1 }), "ERR_INVALID_ARGUMENT"],
      ["sequences 100000", () => model.createContext({ sequences: 100000, threads: 1 }), "ERR_INVALID_ARGUMENT"],
      ["kvCacheType 'f64'", () => model.createContext({ kvCacheType: "f64" as never, threads: 1 }), "ERR_INVALID_ARGUMENT"],
      ["kvCacheType 5", () => model.createContext({ kvCacheType: 5 as never, threads: 1 }), "ERR_INVALID_ARGUMENT"],
      ["flashAttention 'maybe'", () => model.createContext({ flashAttention: "maybe" as never, threads: 1 }), "ERR_INVALID_ARGUMENT"],
      ["flashAttention true", () => model.createContext({ flashAttention: true as never, threads: 1 }), "ERR_INVALID_ARGUMENT"],
      ["unifiedKvCache 'yes'", () => model.createContext({ unifiedKvCache: "yes" as never, threads: 1 }), "ERR_INVALID_ARGUMENT"],
    ]);
  });

  it("takes the extreme valid values: a 1-token context and batch", async () => {
    using context = await model.createContext({ contextSize: 1, batchSize: 1, threads: 1 });
    using session = context.createSession();
    await session.prompt([1]);
    await expectLlamaError("prompt past a 1-token session", () => session.prompt([1, 2]), "ERR_CONTEXT_FULL");
    await expectLlamaError("generate in a full session", () => session.generate({ maxTokens: 1 }), "ERR_CONTEXT_FULL");
  });

  // 512 threads on a small machine: every decode is slow (the pool's threads spin at barriers),
  // so only the long run (npm run test:stress) decodes with them.
  it.runIf(process.env.LLAMA_NAPI_STRESS === "1")("takes the most threads ggml allows (512)", { timeout: 600_000 }, async () => {
    using context = await model.createContext({ contextSize: 16, threads: 512 });
    using session = context.createSession();
    await session.prompt([1, 2, 3]);
    expect(session.logits().length).toBe(model.info.vocabSize);
  });
});

describe("session inputs", () => {
  let model: Model;
  let context: Context;
  let session: Session;
  beforeAll(async () => {
    model = await loadModel(gpt2);
    context = await model.createContext({ contextSize: 64, threads: 1 });
    session = context.createSession();
  });
  afterAll(() => model?.dispose());

  it("prompt refuses bad tokens, empty and too-long inputs and bad options, and keeps the session", async () => {
    await session.prompt("Hello world");
    const before = [...session.tokens];
    const s = session as unknown as { prompt: (...args: unknown[]) => Promise<unknown> };
    await runCases([
      ["prompt([])", () => session.prompt([]), "ERR_INVALID_ARGUMENT"],
      ["prompt('') with no special tokens", () => session.prompt("", { addSpecial: false }), "ERR_INVALID_ARGUMENT"],
      ["prompt(null)", () => s.prompt(null), "ERR_INVALID_ARGUMENT"],
      ["prompt(undefined)", () => s.prompt(undefined), "ERR_INVALID_ARGUMENT"],
      ["prompt(42)", () => s.prompt(42), "ERR_INVALID_ARGUMENT"],
      ["prompt({})", () => s.prompt({}), "ERR_INVALID_ARGUMENT"],
      ["prompt({length: -5})", () => s.prompt({ length: -5 }), "ERR_INVALID_ARGUMENT"],
      ["prompt({length: 1e15})", () => s.prompt({ length: 1e15 }), "ERR_INVALID_ARGUMENT"],
      ["prompt([50257])", () => session.prompt([50257]), "ERR_TOKEN_INVALID"],
      ["prompt([-1])", () => session.prompt([-1]), "ERR_TOKEN_INVALID"],
      ["prompt([2^31])", () => session.prompt([2 ** 31]), "ERR_TOKEN_INVALID"],
      ["prompt([NaN])", () => session.prompt([NaN]), "ERR_TOKEN_INVALID"],
      ["prompt([Infinity])", () => session.prompt([Infinity]), "ERR_TOKEN_INVALID"],
      ["prompt(['a', 5]) (parts: text, then not a part)", () => s.prompt(["a", 5] as never), "ERR_INVALID_ARGUMENT"],
      ["prompt([null])", () => s.prompt([null]), "ERR_TOKEN_INVALID"],
      ["prompt(Int32Array [-7])", () => session.prompt(new Int32Array([-7])), "ERR_TOKEN_INVALID"],
      ["prompt(65 tokens)", () => session.prompt(new Array(65).fill(11)), "ERR_CONTEXT_FULL"],
      ["prompt(text past the context)", () => session.prompt("word ".repeat(500)), "ERR_CONTEXT_FULL"],
      ["prompt appending past the context", () => session.prompt(new Array(63).fill(11), { append: true }), "ERR_CONTEXT_FULL"],
      ["prompt(x, null)", () => s.prompt("x", null), "ERR_INVALID_ARGUMENT"],
      ["prompt(x, 'append')", () => s.prompt("x", "append"), "ERR_INVALID_ARGUMENT"],
      ["prompt append 1", () => s.prompt("x", { append: 1 }), "ERR_INVALID_ARGUMENT"],
      ["prompt addSpecial 'yes'", () => s.prompt("x", { addSpecial: "yes" }), "ERR_INVALID_ARGUMENT"],
      ["prompt signal a string", () => s.prompt("x", { signal: "stop" }), "ERR_INVALID_ARGUMENT"],
      ["prompt signal {}", () => s.prompt("x", { signal: {} }), "ERR_INVALID_ARGUMENT"],
    ]);
    expect([...session.tokens]).toEqual(before);
    // NUL bytes and lone surrogates are text: they evaluate.
    await session.prompt("a\0b\uD800c");
    expect(session.logits().length).toBe(50257);
    await session.prompt(before);
  });

  it("generate refuses bad options, each with ERR_INVALID_ARGUMENT or ERR_TOKEN_INVALID", async () => {
    await session.prompt("Hello world");
    const before = [...session.tokens];
    const g = (options: unknown) => session.generate(options as never);
    const cases: Case[] = [
      ["options null", () => g(null), "ERR_INVALID_ARGUMENT"],
      ["options 'fast'", () => g("fast"), "ERR_INVALID_ARGUMENT"],
      ["stop null", () => g({ stop: null }), "ERR_INVALID_ARGUMENT"],
      ["stop 5", () => g({ stop: 5 }), "ERR_INVALID_ARGUMENT"],
      ["stop ''", () => g({ stop: "" }), "ERR_INVALID_ARGUMENT"],
      ["stop [1]", () => g({ stop: [1] }), "ERR_INVALID_ARGUMENT"],
      ["stop 65 strings", () => g({ stop: Array.from({ length: 65 }, (_, i) => `s${i}`) }), "ERR_INVALID_ARGUMENT"],
      ["signal 'x'", () => g({ signal: "x" }), "ERR_INVALID_ARGUMENT"],
      ["logprobs -1", () => g({ logprobs: -1 }), "ERR_INVALID_ARGUMENT"],
      ["logprobs 101", () => g({ logprobs: 101 }), "ERR_INVALID_ARGUMENT"],
      ["logprobs 'all'", () => g({ logprobs: "all" }), "ERR_INVALID_ARGUMENT"],
      ["contextShift 5", () => g({ contextShift: 5 }), "ERR_INVALID_ARGUMENT"],
      ["contextShift keep -1", () => g({ contextShift: { keep: -1 } }), "ERR_INVALID_ARGUMENT"],
      ["logitsProcessor 'f'", () => g({ logitsProcessor: "f" }), "ERR_INVALID_ARGUMENT"],
      ["logitBias 5", () => g({ logitBias: 5 }), "ERR_INVALID_ARGUMENT"],
      ["logitBias [null]", () => g({ logitBias: [null] }), "ERR_INVALID_ARGUMENT"],
      ["logitBias [[1]]", () => g({ logitBias: [[1]] }), "ERR_INVALID_ARGUMENT"],
      ["logitBias [[50257, 1]]", () => g({ logitBias: [[50257, 1]] }), "ERR_TOKEN_INVALID"],
      ["logitBias {abc: 1}", () => g({ logitBias: { abc: 1 } }), "ERR_TOKEN_INVALID"],
      ["logitBias [[1, NaN]]", () => g({ logitBias: [[1, NaN]] }), "ERR_INVALID_ARGUMENT"],
      ["samplerOrder 'topK'", () => g({ samplerOrder: "topK" }), "ERR_INVALID_ARGUMENT"],
      ["samplerOrder ['nope']", () => g({ samplerOrder: ["nope"] }), "ERR_INVALID_ARGUMENT"],
      ["mirostat {version: 3}", () => g({ mirostat: { version: 3 } }), "ERR_INVALID_ARGUMENT"],
      ["mirostat null", () => g({ mirostat: null }), "ERR_INVALID_ARGUMENT"],
      ["xtc {probability: 2}", () => g({ xtc: { probability: 2 } }), "ERR_INVALID_ARGUMENT"],
      ["dry {multiplier: -1}", () => g({ dry: { multiplier: -1 } }), "ERR_INVALID_ARGUMENT"],
      ["dry 'on'", () => g({ dry: "on" }), "ERR_INVALID_ARGUMENT"],
      ["grammar 5", () => g({ grammar: 5 }), "ERR_INVALID_ARGUMENT"],
      ["grammar that does not parse", () => g({ grammar: "root ::= (" }), "ERR_GRAMMAR_INVALID"],
      ["jsonSchema a bigint", () => g({ jsonSchema: { maximum: 1n } }), "ERR_INVALID_ARGUMENT"],
      ["jsonSchema circular", () => {
        const schema: Record<string, unknown> = { type: "object" };
        schema.self = schema;
        return g({ jsonSchema: schema });
      }, "ERR_INVALID_ARGUMENT"],
      ["jsonSchema not JSON", () => g({ jsonSchema: "{type:" }), ["ERR_GRAMMAR_INVALID", "ERR_INVALID_ARGUMENT"]],
    ];
    for (const [label, value] of BAD_NUMBERS) {
      cases.push([`maxTokens ${label}`, () => g({ maxTokens: value }), "ERR_INVALID_ARGUMENT"]);
      cases.push([`seed ${label}`, () => g({ seed: value }), "ERR_INVALID_ARGUMENT"]);
      cases.push([`topK ${label}`, () => g({ topK: value }), "ERR_INVALID_ARGUMENT"]);
      // -1 is valid there (the whole context).
      if (value !== -1) cases.push([`penaltyLastN ${label}`, () => g({ penaltyLastN: value }), "ERR_INVALID_ARGUMENT"]);
    }
    for (const key of ["temperature", "topP", "minP", "typicalP", "repeatPenalty", "frequencyPenalty", "presencePenalty", "topNSigma"]) {
      for (const value of [NaN, Infinity, -Infinity, "0.5", null, {}]) {
        cases.push([`${key} ${String(value)}`, () => g({ [key]: value }), "ERR_INVALID_ARGUMENT"]);
      }
    }
    for (const [key, value] of [["topK", 2 ** 31], ["topP", 1.5], ["minP", -0.1], ["temperature", -1], ["seed", 2 ** 32], ["maxTokens", 0], ["maxTokens", 2 ** 31], ["repeatPenalty", 0], ["penaltyLastN", -2], ["minKeep", -1], ["topNSigma", -2]] as const) {
      cases.push([`${key} ${value}`, () => g({ [key]: value }), "ERR_INVALID_ARGUMENT"]);
    }
    await runCases(cases);
    expect([...session.tokens]).toEqual(before);
    // The session still works after all of that.
    const r = await session.generate({ maxTokens: 3, temperature: 0 }).collect();
    expect(r.tokens).toHaveLength(3);
    // A topK past the vocabulary (50,257) is not refused: it keeps every token, as llama.cpp's does.
    session.rewind(3);
    expect((await session.generate({ maxTokens: 3, temperature: 0, topK: 50258 }).collect()).tokens).toEqual(r.tokens);
  });

  it("rewind, truncate, loadState, fork and file paths refuse bad values", async () => {
    await session.prompt("Hello world, this is a test");
    const n = session.length;
    const s = session as unknown as Record<string, (...args: unknown[]) => unknown>;
    const cases: Case[] = [];
    for (const [label, value] of [...BAD_NUMBERS, ["n + 1", n + 1] as [string, unknown]]) {
      cases.push([`rewind(${label})`, () => s.rewind.call(session, value), "ERR_INVALID_ARGUMENT"]);
      cases.push([`truncate(${label})`, () => s.truncate.call(session, value), "ERR_INVALID_ARGUMENT"]);
    }
    cases.push(
      ["loadState('x')", () => s.loadState.call(session, "x"), "ERR_INVALID_ARGUMENT"],
      ["loadState(null)", () => s.loadState.call(session, null), "ERR_INVALID_ARGUMENT"],
      ["loadState(Float32Array)", () => s.loadState.call(session, new Float32Array(4)), "ERR_INVALID_ARGUMENT"],
      ["loadState(empty)", () => session.loadState(new Uint8Array(0)), "ERR_STATE"],
      ["loadState(garbage)", () => session.loadState(new Uint8Array(4096).fill(7)), "ERR_STATE"],
      ["saveStateFile(null)", () => s.saveStateFile.call(session, null), "ERR_INVALID_ARGUMENT"],
      ["saveStateFile('')", () => session.saveStateFile(""), "ERR_INVALID_ARGUMENT"],
      ["saveStateFile(a directory)", () => session.saveStateFile(tmp), "ERR_STATE"],
      ["saveStateFile(NUL in path)", () => session.saveStateFile(path.join(tmp, "a\0b")), ["ERR_STATE", "ERR_INVALID_ARGUMENT"]],
      ["loadStateFile(missing)", () => session.loadStateFile(path.join(tmp, "missing.state")), "ERR_FILE_NOT_FOUND"],
      ["loadStateFile(a directory)", () => session.loadStateFile(tmp), "ERR_FILE_UNREADABLE"],
      ["loadStateFile(5)", () => s.loadStateFile.call(session, 5), "ERR_INVALID_ARGUMENT"],
      ["context.setLora(null)", () => context.setLora(null as never), "ERR_INVALID_ARGUMENT"],
      ["context.setLora([{path: 5}])", () => context.setLora([{ path: 5 as never }]), "ERR_INVALID_ARGUMENT"],
      ["context.setLora(missing file)", () => context.setLora([{ path: path.join(tmp, "none.gguf") }]), ["ERR_FILE_NOT_FOUND", "ERR_MODEL_LOAD", "ERR_GGUF_INVALID"]],
    );
    await runCases(cases);
    expect(session.length).toBe(n);
  });
});
