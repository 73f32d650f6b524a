/**
 * The option tables (src/options/) are the one source of truth: every entry is checked by the
 * API, read by the native layer (which refuses names it does not read and has no defaults of its
 * own), and reaches the CLI flags and the server's request fields that it names.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { expandAliases, flagGroup } from "../src/cli/option-flags.js";
import { generateUsage } from "../src/cli/generate.js";
import { loadModel, type Context, type Model } from "../src/index.js";
import { binding } from "../src/native.js";
import { CONTEXT_OPTIONS, EMBEDDING_CONTEXT_OPTIONS } from "../src/options/context.js";
import { GENERATE_OPTIONS } from "../src/options/generate.js";
import { LOAD_OPTIONS } from "../src/options/load.js";
import { SAMPLING_OPTIONS } from "../src/options/sampling.js";
import { entriesOf, readOptions, type OptionTable } from "../src/options/spec.js";
import { completionParams } from "../src/server/params.js";
import { fixturePath } from "./helpers/fixtures.js";

const TABLES: Record<string, OptionTable> = {
  sampling: SAMPLING_OPTIONS,
  generate: GENERATE_OPTIONS,
  context: CONTEXT_OPTIONS,
  embedding: EMBEDDING_CONTEXT_OPTIONS,
  load: LOAD_OPTIONS,
};

function thrown(f: () => unknown): { code?: string; message: string } {
  try {
    f();
  } catch (err) {
    return err as { code?: string; message: string };
  }
  throw new Error("expected a throw");
}

describe("option tables", () => {
  it("every entry refuses a value of the wrong type, naming the option", () => {
    let checked = 0;
    for (const [name, table] of Object.entries(TABLES)) {
      for (const [path] of entriesOf(table)) {
        const input: Record<string, unknown> = {};
        let node = input;
        for (const key of path.slice(0, -1)) node = node[key] = {};
        node[path[path.length - 1]!] = Symbol("bad");
        const err = thrown(() => readOptions(table, input, name));
        expect(err.code, path.join(".")).toBe("ERR_INVALID_ARGUMENT");
        expect(err.message).toContain(`${name}.${path.join(".")} must be`);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(40);
  });

  it("an unknown name is refused with the nearest known one, at every level", () => {
    expect(thrown(() => readOptions(GENERATE_OPTIONS, { temprature: 0 }, "generate options")).message).toMatch(
      /"temprature".*did you mean "temperature"/,
    );
    expect(thrown(() => readOptions(GENERATE_OPTIONS, { xtc: { probabilty: 0.5 } }, "generate options")).message).toMatch(
      /"probabilty".*did you mean "probability"/,
    );
    expect(thrown(() => readOptions(CONTEXT_OPTIONS, { contextsize: 5 }, "context options")).message).toMatch(/did you mean "contextSize"/);
    // A name nothing resembles gets no suggestion, and is still refused.
    const far = thrown(() => readOptions(LOAD_OPTIONS, { speculative: {} }, "load options"));
    expect(far.code).toBe("ERR_INVALID_ARGUMENT");
    expect(far.message).toContain('"speculative"');
  });

  it("defaults come from the table, computed ones from the model and earlier options", () => {
    const ctx = readOptions(CONTEXT_OPTIONS, { threads: 3 }, "c", { defaults: true, scope: { trainingContext: 128 } });
    expect(ctx).toMatchObject({ contextSize: 128, threads: 3, threadsBatch: 3, batchSize: 512, sequences: 1, kvCacheType: "f16" });
    expect(readOptions(CONTEXT_OPTIONS, {}, "c", { defaults: true, scope: { trainingContext: 100_000 } }).contextSize).toBe(4096);
    const emb = readOptions(EMBEDDING_CONTEXT_OPTIONS, { contextSize: 100, sequences: 4 }, "e", { defaults: true });
    expect(emb.batchSize).toBe(400);
    const s = readOptions(SAMPLING_OPTIONS, { xtc: { probability: 0.5 } }, "s", { defaults: true });
    expect(s).toMatchObject({ temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, xtc: { probability: 0.5, threshold: 0.1 } });
    expect(s.seed).toBeUndefined(); // no default: a random seed
  });
});

describe("option tables reach the native layer", () => {
  let model: Model;
  let context: Context;

  beforeAll(async () => {
    model = await loadModel(fixturePath("gpt2-tiny-f32"));
    context = await model.createContext({ contextSize: 64, threads: 1 });
  });
  afterAll(() => model?.dispose());

  it("generate() with every sampling option set runs (the native layer reads each one)", async () => {
    using session = context.createSession();
    await session.prompt("Hello there");
    const everything = {
      temperature: 0.7,
      dynamicTemperatureRange: 0.1,
      dynamicTemperatureExponent: 1.1,
      topK: 30,
      topP: 0.9,
      minP: 0.01,
      typicalP: 0.99,
      topNSigma: 3,
      minKeep: 1,
      xtc: { probability: 0.1, threshold: 0.2 },
      repeatPenalty: 1.1,
      frequencyPenalty: 0.1,
      presencePenalty: 0.1,
      penaltyLastN: 32,
      dry: { multiplier: 0.5, base: 1.5, allowedLength: 3, penaltyLastN: 16, sequenceBreakers: ["\n"] },
      logitBias: { 11: -5 },
      grammar: 'root ::= [a-z ]+',
      grammarRoot: "root",
      grammarLazy: false,
      grammarTriggers: [],
      grammarPrefill: "x",
      reasoningBudget: { tokens: -1 },
      samplerOrder: ["topK", "temperature"] as const,
      seed: 3,
    };
    // The test lists every sampling option but jsonSchema and mirostat (exclusive with grammar /
    // the filters; run below), so a new entry must be added here.
    expect(new Set([...Object.keys(everything), "jsonSchema", "mirostat"])).toEqual(new Set(Object.keys(SAMPLING_OPTIONS)));
    const r = await session.generate({ ...everything, maxTokens: 4 }).collect();
    expect(r.tokens.length).toBe(4);
    expect(r.text).toMatch(/^[a-z ]+$/);
    await session.prompt("Hello there");
    const m = await session.generate({ mirostat: { version: 1 }, jsonSchema: { type: "boolean" }, maxTokens: 3, seed: 1 }).collect();
    expect(["true", "false"].some((word) => word.startsWith(m.text) || m.text.startsWith(word))).toBe(true);
  });

  it("generate() refuses unknown options before it starts", () => {
    using session = context.createSession();
    const err = thrown(() => session.generate({ temprature: 0 } as never));
    expect(err.code).toBe("ERR_INVALID_ARGUMENT");
    expect(err.message).toMatch(/did you mean "temperature"/);
    expect(thrown(() => session.generate({ speculative: { draft: 1 } } as never)).code).toBe("ERR_INVALID_ARGUMENT");
  });

  it("createContext() and loadModel() refuse unknown options", async () => {
    await expect(model.createContext({ contextsize: 32 } as never)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT", message: expect.stringMatching(/did you mean "contextSize"/) });
    await expect(loadModel(fixturePath("gpt2-tiny-f32"), { gpulayers: 1 } as never)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT", message: expect.stringMatching(/did you mean "gpuLayers"/) });
  });

  it("the native layer refuses an option it does not read, and one whose default is missing", async () => {
    const full = readOptions(CONTEXT_OPTIONS, { contextSize: 32, threads: 1 }, "c", { defaults: true });
    const extra = new (binding().Context)();
    await expect(Promise.resolve().then(() => extra.init(model.native, { ...full, embeddings: false, bogus: 1 } as never))).rejects.toMatchObject({
      code: "ERR_INTERNAL",
      message: expect.stringContaining("bogus"),
    });
    extra.dispose();
    const { batchSize: _omitted, ...missing } = full;
    const partial = new (binding().Context)();
    await expect(Promise.resolve().then(() => partial.init(model.native, { ...missing, embeddings: false } as never))).rejects.toMatchObject({
      code: "ERR_INTERNAL",
      message: expect.stringContaining("batchSize"),
    });
    partial.dispose();
  });
});

describe("option tables reach the CLI and the server", () => {
  it("each flag sets its option through the table's check", () => {
    const flags = flagGroup(GENERATE_OPTIONS);
    const argv = expandAliases(["-n", "7", "--temp", "0.5", "--xtc-threshold", "0.3", "--stop", "a", "--stop", "b", "-s", "9"], [flags]);
    expect(argv).toContain("--max-tokens");
    const values = { "max-tokens": "7", temp: "0.5", "xtc-threshold": "0.3", stop: ["a", "b"], seed: "9" };
    expect(flags.read(values)).toEqual({ maxTokens: 7, temperature: 0.5, xtc: { threshold: 0.3 }, stop: ["a", "b"], seed: 9 });
    expect(() => flags.read({ temp: "-1" })).toThrow(/--temp must be a number from 0/);
    expect(flagGroup(LOAD_OPTIONS).read({ "gpu-layers": "max", rpc: "a:1,b:2" })).toEqual({ gpuLayers: "max", rpcServers: ["a:1", "b:2"] });
    expect(flagGroup(CONTEXT_OPTIONS).read({ "ctx-size": "99", "kv-unified": true })).toEqual({ contextSize: 99, unifiedKvCache: true });
  });

  it("the generate command's help lists every flag of its tables", () => {
    for (const table of [GENERATE_OPTIONS, CONTEXT_OPTIONS, LOAD_OPTIONS]) {
      for (const [, spec] of entriesOf(table)) if (spec.flag) expect(generateUsage).toContain(`--${spec.flag.name}`);
    }
  });

  it("each request field sets its option", () => {
    const samples: Record<string, [unknown, string, unknown]> = {
      temperature: [0.5, "temperature", 0.5],
      dynatemp_range: [0.2, "dynamicTemperatureRange", 0.2],
      dynatemp_exponent: [1.5, "dynamicTemperatureExponent", 1.5],
      top_k: [5, "topK", 5],
      top_p: [0.5, "topP", 0.5],
      min_p: [0.1, "minP", 0.1],
      typical_p: [0.9, "typicalP", 0.9],
      top_n_sigma: [2, "topNSigma", 2],
      min_keep: [2, "minKeep", 2],
      xtc_probability: [0.5, "xtc", { probability: 0.5 }],
      xtc_threshold: [0.2, "xtc", { threshold: 0.2 }],
      repeat_penalty: [1.2, "repeatPenalty", 1.2],
      frequency_penalty: [0.5, "frequencyPenalty", 0.5],
      presence_penalty: [-0.5, "presencePenalty", -0.5],
      repeat_last_n: [-1, "penaltyLastN", -1],
      dry_multiplier: [0.8, "dry", { multiplier: 0.8 }],
      dry_base: [2, "dry", { base: 2 }],
      dry_allowed_length: [4, "dry", { allowedLength: 4 }],
      dry_penalty_last_n: [8, "dry", { penaltyLastN: 8 }],
      dry_sequence_breakers: [["x"], "dry", { sequenceBreakers: ["x"] }],
      logit_bias: [{ "5": -100, "6": 2 }, "logitBias", [[5, -Infinity], [6, 2]]],
      grammar: ["root ::= \"a\"", "grammar", 'root ::= "a"'],
      response_format: [{ type: "json_object" }, "jsonSchema", '{"type":"object"}'],
      seed: [-1, "seed", 4294967295],
      max_tokens: [3, "maxTokens", 3],
      stop: ["x", "stop", ["x"]],
    };
    const fields = [...entriesOf(GENERATE_OPTIONS)].flatMap(([, spec]) => (spec.field ? [spec.field.name] : []));
    expect(new Set(fields)).toEqual(new Set(Object.keys(samples)));
    for (const [field, [value, option, expected]] of Object.entries(samples)) {
      const params = completionParams({ prompt: "x", [field]: value });
      const got = option === "maxTokens" ? params.maxTokens : option === "stop" ? params.stop : (params.sampling as Record<string, unknown>)[option];
      expect(got, field).toEqual(expected);
    }
    expect(() => completionParams({ prompt: "x", top_p: 2 })).toThrow(/top_p must be a number from 0 to 1/);
    expect(completionParams({ prompt: "x", response_format: { type: "text" } }).sampling.jsonSchema).toBeUndefined();
  });
});
