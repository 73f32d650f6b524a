/**
 * quantize(): llama.cpp's llama_model_quantize behind a Promise. The outputs are checked
 * against an independent derivation of llama.cpp's tensor-type rules (which tensors stay F32,
 * the tied output/token_embd promotion, the fallback for rows that do not fill a block) and the
 * ggml block sizes in src/gguf/types.ts; llama.cpp must load and run them; and the quantised
 * model must mostly pick the same next token as the F32 one.
 * scripts/check-quantize-sizes.mjs compares the sizes with llama.cpp's own llama-quantize tool.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

import { AbortError, LlamaError, loadModel, quantize, type QuantType, type QuantizeResult } from "../src/index.js";
import { GgmlType, alignUp, ggmlTypeInfo, readGguf, tensorByteSize, type GgufFile, type GgufTensorInfo } from "../src/gguf/index.js";
import { FIXTURES, fixturePath } from "./helpers/fixtures.js";
import { writeSmallGpt2, writeSmallGpt2Vocab } from "./fuzz/small-gpt2.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-quantize-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const F32 = fixturePath("gpt2-tiny-f32");

/** The ftypes whose rules are re-derived here (no imatrix, not MoE, not Falcon). */
type DerivedType = "Q8_0" | "Q4_0" | "Q6_K";
const DEFAULT_TYPE: Record<DerivedType, GgmlType> = { Q8_0: GgmlType.Q8_0, Q4_0: GgmlType.Q4_0, Q6_K: GgmlType.Q6_K };

/**
 * The type llama.cpp gives a tensor (src/llama-quant.cpp, read by hand): only 2-D+ "*weight"
 * tensors that are not norms nor position embeddings are quantised; output.weight, and
 * token_embd.weight when the output is tied to it, get Q8_0 when their rows do not fill a block
 * of the default type and Q6_K otherwise (unless the default is Q8_0); a row length that is
 * not a multiple of the block size falls back (Q6_K -> Q8_0; a 32-block type -> F16).
 */
function expectedType(t: GgufTensorInfo, tied: boolean, ftype: DerivedType): GgmlType {
  const quantisable =
    t.shape.length >= 2 && t.name.endsWith("weight") && !t.name.includes("_norm.weight") && t.name !== "position_embd.weight";
  if (!quantisable) return t.type;
  const blockOf = (type: GgmlType) => ggmlTypeInfo(type)!.blockSize;
  const rowLength = t.shape[0];
  let type = DEFAULT_TYPE[ftype];
  if (t.name === "output.weight" || (tied && t.name === "token_embd.weight")) {
    if (rowLength % blockOf(type) !== 0) type = GgmlType.Q8_0;
    else if (type !== GgmlType.Q8_0) type = GgmlType.Q6_K;
  }
  if (rowLength % blockOf(type) !== 0) {
    if (type === GgmlType.Q6_K) type = GgmlType.Q8_0;
    if (rowLength % blockOf(type) !== 0) type = GgmlType.F16;
  }
  return type;
}

/** Expected tensor types of a quantised file, and the bytes its tensor data section takes. */
function expectedLayout(input: GgufFile, ftype: DerivedType): { types: Record<string, string>; dataBytes: number } {
  const tied = !input.tensors.some((t) => t.name === "output.weight");
  const types: Record<string, string> = {};
  let dataBytes = 0;
  for (const t of input.tensors) {
    const type = expectedType(t, tied, ftype);
    types[t.name] = GgmlType[type];
    dataBytes += alignUp(tensorByteSize(type, t.shape), 32); // each tensor is padded to the alignment
  }
  return { types, dataBytes };
}

async function checkLayout(result: QuantizeResult, ftype: DerivedType): Promise<void> {
  const [input, output] = await Promise.all([readGguf(result.input, { maxArrayLength: 0 }), readGguf(result.output, { maxArrayLength: 0 })]);
  const expected = expectedLayout(input, ftype);
  expect(Object.fromEntries(output.tensors.map((t) => [t.name, t.typeName]))).toEqual(expected.types);
  // The header grows by general.quantization_version; the data section is exactly the expected one.
  expect(output.fileSize - output.dataOffset).toBe(expected.dataBytes);
  const expectedSize = input.dataOffset + expected.dataBytes;
  expect(Math.abs(result.outputBytes - expectedSize) / expectedSize).toBeLessThan(0.01);
  expect(result.outputBytes).toBe(output.fileSize);
  expect(output.metadata["general.quantization_version"]).toEqual({ type: "uint32", value: 2 });
  console.info(`${ftype}: ${result.inputBytes} -> ${result.outputBytes} bytes (derived ${expectedSize}, ${result.seconds.toFixed(2)} s)`);
}

/** Loads a model, checks llama.cpp's idea of its type, and greedily generates a few tokens. */
async function generates(file: string, fileTypeName: string): Promise<number[]> {
  using model = await loadModel(file);
  expect(model.info.fileType).toContain(fileTypeName);
  const context = await model.createContext({ contextSize: 64, threads: 1 });
  const session = context.createSession();
  await session.prompt("The weather today is");
  const r = await session.generate({ maxTokens: 4, temperature: 0 }).collect();
  expect(r.tokens.length).toBeGreaterThan(0);
  return r.tokens;
}

const PROMPTS = [
  "Hello", "The pizza came out of the oven", "Once upon a time", "In 1492, Columbus", "The quick brown fox",
  "def main():", "import numpy as np", "My favourite colour is", "The capital of France is", "She opened the door and",
  "1, 2, 3, 4,", "To be or not to be", "The stock market fell", "Water boils at", "Dear Sir or Madam,",
  "Zürich and Tokyo are", "The cat sat on the", "Machine learning is", "Breaking news:", "Thank you for",
];

/** The F32 model's most likely next token after each prompt. */
async function topTokens(file: string): Promise<number[]> {
  using model = await loadModel(file);
  const context = await model.createContext({ contextSize: 64, threads: 1 });
  const out: number[] = [];
  for (const text of PROMPTS) {
    using session = context.createSession();
    await session.prompt(text);
    const logits = session.logits();
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    out.push(best);
  }
  return out;
}

describe("quantize() Q8_0 and Q4_0 of the tiny GPT-2", () => {
  const results: Partial<Record<QuantType, QuantizeResult>> = {};
  beforeAll(async () => {
    for (const type of ["Q8_0", "Q4_0"] as const) {
      results[type] = await quantize(F32, path.join(tmp, `tiny-${type}.gguf`), { type, threads: 2 });
    }
  });

  for (const type of ["Q8_0", "Q4_0"] as const) {
    it(`${type}: the tensor types and file size llama.cpp's rules give; llama.cpp loads and runs it`, async () => {
      const r = results[type]!;
      expect(r).toMatchObject({ type, input: path.resolve(F32), output: path.join(tmp, `tiny-${type}.gguf`) });
      expect(r.inputBytes).toBe(fs.statSync(F32).size);
      await checkLayout(r, type);
      // token_embd (tied output, rows of 64) is Q8_0 in both; 8 block matrices take the type.
      expect(r.tensorTypes).toEqual(type === "Q8_0" ? { F32: 19, Q8_0: 9 } : { F32: 19, Q8_0: 1, Q4_0: 8 });
      await generates(r.output, type);
    });
  }

  it("picks the F32 model's next token on most of 20 prompts", async () => {
    const reference = await topTokens(F32);
    for (const type of ["Q8_0", "Q4_0"] as const) {
      const quantised = await topTokens(results[type]!.output);
      const agree = quantised.filter((t, i) => t === reference[i]).length / PROMPTS.length;
      console.info(`${type}: top-1 agreement with F32 on ${PROMPTS.length} prompts: ${(agree * 100).toFixed(0)}%`);
      expect(agree).toBeGreaterThan(0.5);
    }
  });
});

describe("quantize() K-quants", () => {
  let wide: string;
  beforeAll(async () => {
    // n_embd 256: every matrix row fills K-quant blocks of 256. A 300-token vocabulary keeps it small.
    const vocab = path.join(tmp, "vocab300.gguf");
    await writeSmallGpt2Vocab(vocab, 300);
    wide = path.join(tmp, "gpt2-e256.gguf");
    await writeSmallGpt2(wide, vocab, { nEmbd: 256, nHead: 4, nLayer: 2, nCtx: 64, seed: 11 });
  });

  it("Q6_K on n_embd 256: every matrix becomes Q6_K, and llama.cpp runs it", async () => {
    const r = await quantize(wide, path.join(tmp, "e256-q6k.gguf"), { type: "Q6_K", threads: 2 });
    await checkLayout(r, "Q6_K");
    expect(r.tensorTypes).toEqual({ F32: 19, Q6_K: 9 });
    await generates(r.output, "Q6_K");
  });

  it("Q6_K on n_embd 64 falls back to Q8_0 where a row does not fill a 256-block, like llama.cpp", async () => {
    const r = await quantize(F32, path.join(tmp, "tiny-q6k.gguf"), { type: "Q6_K", threads: 2 });
    await checkLayout(r, "Q6_K");
    // Only ffn_down (rows of 4 * 64 = 256) keeps Q6_K.
    expect(r.tensorTypes).toEqual({ F32: 19, Q8_0: 7, Q6_K: 2 });
    await generates(r.output, "Q6_K");
  });

  it("Q4_K_M, Q3_K_S and IQ4_NL make files llama.cpp loads and runs", async () => {
    // llama_ftype_name's names for them.
    const names = { Q4_K_M: "Q4_K - Medium", Q3_K_S: "Q3_K - Small", IQ4_NL: "IQ4_NL - 4.5 bpw" } as const;
    for (const type of ["Q4_K_M", "Q3_K_S", "IQ4_NL"] as const) {
      const r = await quantize(wide, path.join(tmp, `e256-${type}.gguf`), { type, threads: 2 });
      expect(r.outputBytes).toBeLessThan(r.inputBytes / 4);
      await generates(r.output, names[type]);
    }
  });
});

describe("quantize() progress, abort and errors", () => {
  it("reports progress from 0 to 1 without blocking the event loop", async () => {
    const seen: number[] = [];
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    try {
      await quantize(fixturePath("gpt2-wide-f16"), path.join(tmp, "wide-q8.gguf"), { type: "Q8_0", threads: 2, onProgress: (p) => seen.push(p) });
    } finally {
      clearInterval(timer);
    }
    expect(seen.at(-1)).toBe(1);
    expect(seen.length).toBeGreaterThan(5);
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1]);
    expect(ticks).toBeGreaterThan(0);
  });

  it("stops between tensors on abort, rejects with AbortError and leaves no file", async () => {
    const out = path.join(tmp, "aborted.gguf");
    const controller = new AbortController();
    const seen: number[] = [];
    const p = quantize(fixturePath("gpt2-wide-f16"), out, {
      type: "Q4_K_M",
      threads: 1,
      signal: controller.signal,
      onProgress: (x) => {
        seen.push(x);
        controller.abort();
      },
    });
    await expect(p).rejects.toBeInstanceOf(AbortError);
    // llama.cpp stopped early: it never reported the last tensor done.
    expect(Math.max(...seen)).toBeLessThan(1);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    const already = new AbortController();
    already.abort();
    await expect(quantize(F32, out, { type: "Q8_0", signal: already.signal })).rejects.toMatchObject({ code: "ERR_ABORTED" });
  });

  it("refuses types that need an importance matrix with ERR_UNSUPPORTED", async () => {
    for (const type of ["IQ2_XXS", "IQ1_S", "Q2_K_S", "IQ3_XXS"]) {
      const err = await quantize(F32, path.join(tmp, "x.gguf"), { type: type as QuantType }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "ERR_UNSUPPORTED" });
      expect((err as Error).message).toMatch(/importance matrix/);
    }
  });

  it("reports llama.cpp's reason with ERR_QUANTIZE, keeping an existing output", async () => {
    const out = path.join(tmp, "requant.gguf");
    fs.writeFileSync(out, "previous contents");
    const q8 = path.join(tmp, "for-requant-q8.gguf");
    await quantize(F32, q8, { type: "Q8_0", threads: 2 });
    const err = await quantize(q8, out, { type: "Q4_0" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LlamaError);
    expect(err).toMatchObject({ code: "ERR_QUANTIZE" });
    expect((err as Error).message).toMatch(/requantizing from type q8_0 is disabled/i);
    expect(fs.readFileSync(out, "utf8")).toBe("previous contents");
    // With allowRequantize, llama.cpp does it.
    const r = await quantize(q8, out, { type: "Q4_0", allowRequantize: true, threads: 2 });
    expect(r.tensorTypes.Q4_0).toBe(8);
  });

  it("rejects bad inputs with precise codes before llama.cpp sees them", async () => {
    const out = path.join(tmp, "never.gguf");
    await expect(quantize(path.join(tmp, "missing.gguf"), out, { type: "Q8_0" })).rejects.toMatchObject({ code: "ERR_FILE_NOT_FOUND" });
    const text = path.join(tmp, "text.gguf");
    fs.writeFileSync(text, "not a model at all, just some text\n".repeat(4));
    await expect(quantize(text, out, { type: "Q8_0" })).rejects.toMatchObject({ code: "ERR_GGUF_INVALID" });
    const vocabOnly = path.join(tmp, "vocab-only.gguf");
    await writeSmallGpt2Vocab(vocabOnly, 256);
    await expect(quantize(vocabOnly, out, { type: "Q8_0" })).rejects.toMatchObject({ code: "ERR_QUANTIZE" });
    await expect(quantize(F32, path.join(tmp, "no-such-dir", "o.gguf"), { type: "Q8_0" })).rejects.toMatchObject({ code: "ERR_FILE_NOT_FOUND" });
    await expect(quantize(F32, F32, { type: "Q8_0" })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(quantize(F32, out, { type: "Q9_9" as QuantType })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(quantize(F32, out, { type: "Q8_0", threads: 0 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    expect(fs.existsSync(out)).toBe(false);
  });

  it("validates the native call's arguments", async () => {
    const { binding } = await import("../src/native.js");
    const native = binding();
    expect(() => native.quantize(F32, path.join(tmp, "n.gguf"), { type: "NOPE" })).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => native.quantize(F32, path.join(tmp, "n.gguf"), { type: "IQ2_XS" })).toThrow(expect.objectContaining({ code: "ERR_UNSUPPORTED" }));
    expect(() => native.quantize(F32, 5 as unknown as string, { type: "Q8_0" })).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => native.quantize(F32, path.join(tmp, "n.gguf"), { type: "Q8_0", threads: -1 })).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    // Aborted before it starts: rejects without writing anything.
    const job = native.quantize(F32, path.join(tmp, "n.gguf"), { type: "Q8_0" });
    job.abort();
    await expect(job.promise).rejects.toMatchObject({ code: "ERR_ABORTED" });
    expect(fs.existsSync(path.join(tmp, "n.gguf"))).toBe(false);
    expect(FIXTURES["gpt2-tiny-f32"].nEmbd).toBe(64); // the fallback expectations above assume it
  });
});

describe("llama-napi quantize", () => {
  it("quantises with plain progress lines when stderr is not a terminal, and reports the result", async () => {
    const { runQuantize } = await import("../src/cli/quantize.js");
    const out = path.join(tmp, "cli-q8.gguf");
    const lines: string[] = [];
    const spy = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    const isTTY = process.stderr.isTTY;
    process.stderr.isTTY = false;
    let code: number;
    try {
      code = await runQuantize([F32, out, "q8_0", "--threads", "1"]);
    } finally {
      spy.mockRestore();
      process.stderr.isTTY = isTTY;
    }
    expect(code).toBe(0);
    expect(lines.filter((l) => /^quantize: \d+%\n$/.test(l)).length).toBeGreaterThan(2);
    expect(lines).toContain("quantize: 100%\n");
    expect(lines.at(-1)).toMatch(/^wrote .*cli-q8\.gguf: Q8_0, .* 28 tensors \(19 F32, 9 Q8_0\)/);
    expect((await readGguf(out, { maxArrayLength: 0 })).tensors.filter((t) => t.typeName === "Q8_0").length).toBe(9);
    await expect(runQuantize([F32, out])).rejects.toThrow(/IN OUT TYPE/);
    await expect(runQuantize([F32, out, "Q7"])).rejects.toThrow(/unknown quantisation type/);
  });
});
