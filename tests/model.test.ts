import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { AbortError, GgufError, LlamaError, loadModel, type Model } from "../src/index.js";
import { readGguf } from "../src/gguf/index.js";
import { FIXTURES, fixturePath } from "./helpers/fixtures.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-model-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("loadModel", () => {
  let model: Model;
  const file = fixturePath("gpt2-tiny-f32");
  beforeAll(async () => {
    model = await loadModel(file);
  });
  afterAll(() => model?.dispose());

  it("reports what the model is", () => {
    const shape = FIXTURES["gpt2-tiny-f32"];
    expect(model.info).toMatchObject({
      architecture: "gpt2",
      vocabSize: 50257,
      vocabType: "bpe",
      trainContextSize: shape.nCtx,
      embeddingSize: shape.nEmbd,
      layers: shape.nLayer,
      heads: shape.nHead,
      headsKv: shape.nHead,
      learnedPositions: true,
      fileSizeBytes: fs.statSync(file).size,
    });
    expect(model.info.fileType).toContain("F32");
    // Parameters: token and position embeddings, 12·d² + 13·d per block, the final norm.
    const d = shape.nEmbd;
    const expected = 50257 * d + shape.nCtx * d + shape.nLayer * (12 * d * d + 13 * d) + 2 * d;
    expect(model.info.parameters).toBe(expected);
    expect(model.info.sizeBytes).toBe(expected * 4);
    expect(model.path).toBe(path.resolve(file));
  });

  it("exposes every GGUF key except the large tokenizer arrays", async () => {
    const header = await readGguf(file);
    const keys = Object.keys(header.metadata).filter((k) => !["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"].includes(k));
    expect(Object.keys(model.metadata).sort()).toEqual(keys.sort());
    expect(model.metadata["general.architecture"]).toBe("gpt2");
    expect(model.metadata["gpt2.context_length"]).toBe(FIXTURES["gpt2-tiny-f32"].nCtx);
    expect(model.metadata["tokenizer.ggml.model"]).toBe("gpt2");
    expect(model.metadata).not.toHaveProperty("tokenizer.ggml.tokens");
  });

  it("knows GPT-2's special tokens", () => {
    expect(model.specialTokens.eos).toBe(50256);
    expect(model.specialTokens.bos).toBe(50256);
    expect(model.isEndOfGeneration(50256)).toBe(true);
    expect(model.isEndOfGeneration(15496)).toBe(false);
  });

  it("reports progress from 0 to 1", async () => {
    const seen: number[] = [];
    const m = await loadModel(file, { onProgress: (p) => seen.push(p) });
    m.dispose();
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.at(-1)).toBe(1);
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1]);
  });

  it("loads with and without mmap to the same model", async () => {
    const m = await loadModel(file, { useMmap: false });
    expect(m.info).toEqual(model.info);
    m.dispose();
  });

  it("can be aborted with an AbortSignal", async () => {
    const already = new AbortController();
    already.abort();
    await expect(loadModel(file, { signal: already.signal })).rejects.toBeInstanceOf(AbortError);
    // Aborted while the native load is queued or running.
    const controller = new AbortController();
    const p = loadModel(file, { signal: controller.signal });
    controller.abort();
    await expect(p).rejects.toBeInstanceOf(AbortError);
    // Aborted from the progress callback.
    const fromProgress = new AbortController();
    const q = loadModel(file, { signal: fromProgress.signal, onProgress: () => fromProgress.abort() });
    await expect(q).rejects.toMatchObject({ code: "ERR_ABORTED" });
  });
});

describe("bad model files", () => {
  it("rejects a missing file with ERR_FILE_NOT_FOUND", async () => {
    const err = await loadModel(path.join(tmp, "nope.gguf")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LlamaError);
    expect(err).toMatchObject({ code: "ERR_FILE_NOT_FOUND" });
    expect((err as Error).message).toContain("nope.gguf");
  });

  it("rejects a directory", async () => {
    await expect(loadModel(tmp)).rejects.toMatchObject({ code: "ERR_FILE_UNREADABLE" });
  });

  it("rejects a file that is not GGUF with ERR_GGUF_INVALID", async () => {
    const file = path.join(tmp, "not.gguf");
    fs.writeFileSync(file, "this is a text file, not a model\n".repeat(10));
    const err = await loadModel(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GgufError);
    expect((err as Error).message).toMatch(/not a GGUF file/);
  });

  it("rejects an empty file", async () => {
    const file = path.join(tmp, "empty.gguf");
    fs.writeFileSync(file, "");
    await expect(loadModel(file)).rejects.toMatchObject({ code: "ERR_GGUF_INVALID" });
  });

  it("rejects truncated GGUF files (header and tensor data) with a typed error", async () => {
    const bytes = fs.readFileSync(fixturePath("gpt2-tiny-f32"));
    for (const fraction of [0.001, 0.3, 0.9, 0.999]) {
      const file = path.join(tmp, `truncated-${fraction}.gguf`);
      fs.writeFileSync(file, bytes.subarray(0, Math.floor(bytes.length * fraction)));
      const err = await loadModel(file).catch((e: unknown) => e);
      expect(err, `truncated at ${fraction}`).toBeInstanceOf(LlamaError);
      expect((err as LlamaError).code).toBe("ERR_GGUF_INVALID");
    }
  });

  it("rejects bad arguments with ERR_INVALID_ARGUMENT", async () => {
    await expect(loadModel("" as string)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(loadModel(42 as unknown as string)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(loadModel(fixturePath("gpt2-tiny-f32"), { useMmap: "yes" as unknown as boolean })).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
    });
  });
});
