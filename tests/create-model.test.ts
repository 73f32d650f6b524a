/**
 * createModel() (src/create-model.ts) and the `llama-napi create-model` / `llama-napi train`
 * commands (src/cli/train.ts, run in process): nanoGPT's initialisation checked by the statistics
 * of the written tensors, a model trained from nothing starting at the uniform loss ln(512).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { createModel, loadModel, train, type Model } from "../src/index.js";
import { runCreateModel, runTrain } from "../src/cli/train.js";
import { readGguf } from "../src/gguf/index.js";
import { repoRoot } from "./helpers/fixtures.js";
import { expectCode, randomTokens, tensorValues } from "./helpers/train.js";

const STORIES = path.join(repoRoot, "models", "stories260K.gguf");
const GPT2_VOCAB = path.join(repoRoot, "vendor", "llama.cpp", "models", "ggml-vocab-gpt-2.gguf");
const CTX = 256;
let dir: string;

const load = (file: string): Promise<Model> => loadModel(file, { useMmap: false });

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-create-"));
});

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("createModel", () => {
  /** Mean and standard deviation of an array. */
  const stats = (a: ArrayLike<number>) => {
    let sum = 0;
    for (let i = 0; i < a.length; i++) sum += a[i]!;
    const mean = sum / a.length;
    let sq = 0;
    for (let i = 0; i < a.length; i++) sq += (a[i]! - mean) ** 2;
    return { mean, std: Math.sqrt(sq / a.length) };
  };

  it("writes an F32 GPT-2 with nanoGPT's initialisation and the given vocabulary", async () => {
    const file = path.join(dir, "new-gpt2.gguf");
    await createModel(file, { architecture: "gpt2", layers: 3, embeddingSize: 64, heads: 4, contextSize: 256, vocabularyFrom: STORIES, seed: 1 });
    const gguf = await readGguf(file, { maxArrayLength: 1 << 20 });
    const stories = await readGguf(STORIES, { maxArrayLength: 1 << 20 });
    expect(gguf.metadata["general.architecture"]?.value).toBe("gpt2");
    expect(gguf.metadata["gpt2.block_count"]?.value).toBe(3);
    expect(gguf.metadata["tokenizer.ggml.tokens"]?.value).toEqual(stories.metadata["tokenizer.ggml.tokens"]?.value);
    expect(new Set(gguf.tensors.map((t) => t.typeName.toUpperCase()))).toEqual(new Set(["F32"]));
    expect(gguf.tensors.map((t) => t.name)).toContain("output.weight");
    const qkv = stats(await tensorValues(file, "blk.1.attn_qkv.weight"));
    expect(Math.abs(qkv.mean)).toBeLessThan(1e-3);
    expect(qkv.std).toBeGreaterThan(0.02 * 0.97);
    expect(qkv.std).toBeLessThan(0.02 * 1.03);
    const proj = stats(await tensorValues(file, "blk.2.ffn_down.weight"));
    const projStd = 0.02 / Math.sqrt(2 * 3);
    expect(proj.std).toBeGreaterThan(projStd * 0.97);
    expect(proj.std).toBeLessThan(projStd * 1.03);
    expect(stats(await tensorValues(file, "blk.0.attn_output.weight")).std).toBeLessThan(projStd * 1.03);
    for (const name of ["blk.0.attn_qkv.bias", "blk.2.ffn_up.bias", "output_norm.bias"]) expect([...(await tensorValues(file, name))].every((v) => v === 0)).toBe(true);
    for (const name of ["blk.0.attn_norm.weight", "output_norm.weight"]) expect([...(await tensorValues(file, name))].every((v) => v === 1)).toBe(true);
  });

  it("makes a Llama that starts near the uniform loss ln(512) and learns from nothing", async () => {
    const file = path.join(dir, "learn-llama.gguf");
    await createModel(file, { architecture: "llama", layers: 2, embeddingSize: 64, heads: 4, contextSize: 256, vocabularyFrom: STORIES, seed: 2 });
    const model = await load(file);
    const text = "Once upon a time there was a little dog. The dog liked to run in the park. ".repeat(40);
    const summary = await train(model, text, { epochs: 3, learningRate: 3e-3, batchSize: 128, threads: 1 });
    const steps = summary.history.steps;
    // Weights of std 0.02 give near-uniform predictions over the 512 tokens.
    expect(Math.abs(steps[0]!.loss - Math.log(512))).toBeLessThan(0.05);
    expect(steps[steps.length - 1]!.loss).toBeLessThan(steps[0]!.loss - 1);
    model.dispose();
  });

  it("refuses to train a GPT-2 (no LayerNorm/GELU backward in ggml) with ERR_UNSUPPORTED instead of aborting", async () => {
    const file = path.join(dir, "new-gpt2-small.gguf");
    await createModel(file, { architecture: "gpt2", layers: 1, embeddingSize: 32, heads: 2, vocabularyFrom: STORIES });
    const model = await load(file);
    await expectCode(train(model, randomTokens(CTX + 1, 12), { threads: 1 }), "ERR_UNSUPPORTED", /LayerNorm/);
    model.dispose();
  });

  it("without vocabularyFrom, a Llama gets stories260K's vocabulary and a GPT-2 GPT-2's (both in the package)", async () => {
    for (const [architecture, vocabSize, text] of [["llama", 512, "Once upon a time"], ["gpt2", 50257, "Hello world"]] as const) {
      const file = path.join(dir, `default-vocab-${architecture}.gguf`);
      await createModel(file, { architecture, layers: 1, embeddingSize: 32, heads: 2 });
      using model = await loadModel(file, { vocabOnly: true });
      expect(model.info.vocabSize).toBe(vocabSize);
      const reference = await loadModel(architecture === "llama" ? STORIES : GPT2_VOCAB, { vocabOnly: true });
      expect(model.tokenize(text)).toEqual(reference.tokenize(text));
      reference.dispose();
    }
  });

  it("refuses bad options naming the nearest one", async () => {
    await expectCode(createModel(path.join(dir, "x.gguf"), { layer: 2 } as never), "ERR_INVALID_ARGUMENT", /did you mean "layers"/);
    await expectCode(createModel(path.join(dir, "x.gguf"), { embeddingSize: 30, heads: 4 }), "ERR_INVALID_ARGUMENT", /heads must divide/);
  });
});

describe("llama-napi train / create-model (CLI, in process)", () => {
  it("creates a model, trains it on a text file, writes the model and a loss-curve page", async () => {
    const created = path.join(dir, "cli-new.gguf");
    expect(await runCreateModel([created, "--arch", "llama", "--layers", "1", "--embd", "32", "--heads", "2", "--vocab-from", STORIES, "--seed", "3"])).toBe(0);
    const header = await readGguf(created, { maxArrayLength: 0 });
    expect(header.metadata["general.architecture"]?.value).toBe("llama");
    expect(header.metadata["llama.block_count"]?.value).toBe(1);
    expect(header.metadata["llama.embedding_length"]?.value).toBe(32);

    const data = path.join(dir, "text.txt");
    fs.writeFileSync(data, "A bird sang in the tall tree every morning. ".repeat(60));
    const out = path.join(dir, "cli-trained.gguf");
    const curve = path.join(dir, "curve.html");
    const code = await runTrain(["-m", created, "--data", data, "-o", out, "--epochs", "2", "--lr", "0.01", "-b", "128", "-t", "1", "--val-split", "0.2", "--curve", curve]);
    expect(code).toBe(0);
    const trained = await load(out);
    expect(trained.info.layers).toBe(1);
    trained.dispose();
    const html = fs.readFileSync(curve, "utf8");
    const points = /<polyline class="loss" points="([^"]*)"/.exec(html)![1]!.trim().split(" ");
    // 60 sentences of ~11 tokens: 2 training windows at most, 2 steps each, 2 epochs.
    expect(points.length).toBeGreaterThanOrEqual(4);
    expect(html.match(/<circle class="val"/g)).toHaveLength(2);
  });

  it("reports a bad flag value naming the flag", async () => {
    await expect(runTrain(["-m", STORIES, "--data", STORIES, "-o", path.join(dir, "x.gguf"), "--lr=0"])).rejects.toThrow(/--lr must be a number > 0/);
    await expect(runTrain(["-m", STORIES, "--data", STORIES, "-o", path.join(dir, "x.gguf"), "--optimizer", "adam"])).rejects.toThrow(/--optimizer must be one of/);
  });
});
