/**
 * The GGUF reader and writer against independent implementations: @huggingface/gguf and
 * llama.cpp itself (its metadata view of a loaded model). And the model loader against
 * malformed files: 1,000 seeded mutations of a small GPT-2, loaded in a watched child process,
 * must each load or fail with a LlamaError, without crashing, hanging or leaking.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { gguf } from "@huggingface/gguf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { GgufError, LlamaError, loadModel, quantize } from "../src/index.js";
import {
  GgmlType,
  readGguf,
  readTensorBytes,
  ggufValue,
  writeGguf,
  type GgufMetadata,
  type GgufScalarValue,
  type GgufValue,
} from "../src/gguf/index.js";
import { GGUF_SCALAR_TYPE_IDS } from "../src/gguf/types.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";
import { loadFilesInChild, runLoaderFuzz } from "./fuzz/loader-fuzz.js";
import { writeSmallGpt2, writeSmallGpt2Vocab } from "./fuzz/small-gpt2.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-gguf-llama-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const MODELS_DIR = path.join(repoRoot, "vendor", "llama.cpp", "models");
const VOCAB_FILES = fs
  .readdirSync(MODELS_DIR)
  .filter((f) => /^ggml-vocab-.*\.gguf$/.test(f))
  .sort();

const GGUF_ARRAY = 9;

/** A metadata value in a form both readers can be compared in (64-bit integers as bigints). */
function comparable(type: string, value: unknown): unknown {
  if (type === "uint64" || type === "int64") return BigInt(value as number | bigint);
  return value;
}

/**
 * @huggingface/gguf decodes strings with TextDecoder, which drops a leading byte-order mark
 * (U+FEFF); our reader keeps the bytes that are in the file (llama.cpp agrees: see below).
 */
function withoutBom(value: unknown): unknown {
  return typeof value === "string" && value.startsWith("\uFEFF") ? value.slice(1) : value;
}

/** Number of items that differ between our array and the other reader's. */
function arrayMismatches(ours: GgufValue & { type: "array" }, theirs: unknown[]): number {
  if (ours.value.length !== theirs.length) return Infinity;
  let bad = 0;
  for (let i = 0; i < theirs.length; i++) {
    const a = withoutBom(comparable(ours.itemType, ours.value[i]));
    if (a !== theirs[i] && !(Number.isNaN(a) && Number.isNaN(theirs[i]))) bad++;
  }
  return bad;
}

/** How llama.cpp prints a scalar (gguf_kv_to_str in src/llama-impl.cpp: std::to_string, "%f" for floats). */
function llamaString(v: GgufScalarValue): string {
  if (v.type === "string") return v.value;
  if (v.type === "bool") return v.value ? "true" : "false";
  if (v.type === "float32" || v.type === "float64") return v.value.toFixed(6);
  return String(v.value);
}

describe("every ggml-vocab-*.gguf in llama.cpp reads like independent readers read it", () => {
  it("has the vocabulary files to test", () => {
    expect(VOCAB_FILES.length).toBeGreaterThanOrEqual(15);
  });

  for (const name of VOCAB_FILES) {
    it(`${name}: the same keys, types and values as @huggingface/gguf`, async () => {
      const file = path.join(MODELS_DIR, name);
      const [ours, theirs] = await Promise.all([readGguf(file), gguf(file, { allowLocalFile: true, typedMetadata: true })]);
      expect(ours.version).toBe(theirs.metadata.version);
      expect(BigInt(Object.keys(ours.metadata).length)).toBe(theirs.metadata.kv_count);
      expect(BigInt(ours.tensors.length)).toBe(theirs.metadata.tensor_count);
      for (const [key, value] of Object.entries(ours.metadata)) {
        const other = theirs.typedMetadata[key];
        expect(other, key).toBeDefined();
        if (value.type === "array") {
          expect(other.type, key).toBe(GGUF_ARRAY);
          expect(other.subType, key).toBe(GGUF_SCALAR_TYPE_IDS[value.itemType]);
          expect(arrayMismatches(value, other.value as unknown[]), key).toBe(0);
        } else {
          expect(other.type, key).toBe(GGUF_SCALAR_TYPE_IDS[value.type]);
          expect(withoutBom(comparable(value.type, value.value)), key).toEqual(other.value);
        }
      }
      ours.tensors.forEach((t, i) => {
        const o = theirs.tensorInfos[i];
        expect({ name: t.name, shape: t.shape.map(BigInt), type: t.type as number, offset: BigInt(t.offset - ours.dataOffset) }).toEqual({
          name: o.name, shape: o.shape, type: o.dtype as number, offset: o.offset,
        });
      });
    });
  }

  // llama.cpp's view costs a vocabulary load (up to ~1 s for the 256k-token files): the small files.
  for (const name of VOCAB_FILES.filter((f) => fs.statSync(path.join(MODELS_DIR, f)).size < 2_000_000)) {
    it(`${name}: llama.cpp (vocab-only load) sees the same scalar values and vocabulary size`, async () => {
      const file = path.join(MODELS_DIR, name);
      const ours = await readGguf(file);
      using model = await loadModel(file, { vocabOnly: true });
      for (const [key, value] of Object.entries(ours.metadata)) {
        // llama.cpp keeps scalars only in its metadata view.
        expect(model.native.metaString(key), key).toBe(value.type === "array" ? null : llamaString(value));
      }
      const tokens = ours.metadata["tokenizer.ggml.tokens"];
      if (tokens.type !== "array") throw new Error("tokenizer.ggml.tokens is not an array");
      expect(model.info.vocabSize).toBe(tokens.value.length);
      const bos = ours.metadata["tokenizer.ggml.bos_token_id"];
      if (bos) expect(model.specialTokens.bos).toBe(bos.value);
      // Tokens that start with a byte-order mark keep it, as in llama.cpp (SPM pieces are the token text).
      if (model.info.vocabType === "spm") {
        (tokens.value as string[]).forEach((text, id) => {
          if (text.startsWith("\uFEFF")) expect(Buffer.from(model.tokenToBytes(id)).toString("hex")).toBe(Buffer.from(text).toString("hex"));
        });
      }
    });
  }
});

describe("llama.cpp reads what writeGguf writes", () => {
  const EXTRA: GgufMetadata = {
    "test.u8": ggufValue.uint8(250),
    "test.i8": ggufValue.int8(-100),
    "test.u16": ggufValue.uint16(65000),
    "test.i16": ggufValue.int16(-32000),
    "test.u32": ggufValue.uint32(4_000_000_000),
    "test.i32": ggufValue.int32(-2_000_000_000),
    "test.f32": ggufValue.float32(Math.fround(3.25)),
    "test.bool": ggufValue.bool(true),
    "test.string": ggufValue.string("héllo, \"wörld\" 🚀"),
    "test.u64": ggufValue.uint64(2n ** 63n + 5n),
    "test.i64": ggufValue.int64(-(2n ** 62n)),
    "test.f64": ggufValue.float64(-1234.5678125),
    "test.arr.u8": ggufValue.array("uint8", [1, 2, 255]),
    "test.arr.i32": ggufValue.array("int32", [-1, 0, 1]),
    "test.arr.f32": ggufValue.array("float32", [0.5, -2]),
    "test.arr.string": ggufValue.array("string", ["a", "b c", ""]),
    "test.arr.bool": ggufValue.array("bool", [true, false]),
    "test.arr.u64": ggufValue.array("uint64", [0, 2n ** 64n - 1n]),
    "test.arr.f64": ggufValue.array("float64", [1e-300]),
  };
  let file: string;

  beforeAll(async () => {
    // A small model whose tensors are copied into a file with extra keys of every type.
    const vocab = path.join(tmp, "vocab300.gguf");
    const base = path.join(tmp, "base.gguf");
    await writeSmallGpt2Vocab(vocab, 300);
    await writeSmallGpt2(base, vocab, { nEmbd: 32, nHead: 2, nLayer: 1, nCtx: 32, seed: 5 });
    const header = await readGguf(base);
    file = path.join(tmp, "extra-keys.gguf");
    await writeGguf(file, {
      metadata: { ...header.metadata, ...EXTRA },
      tensors: header.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type, data: () => readChunks(base, t) })),
    });
  });

  it("loads the model with every metadata type, and its metadata view agrees", async () => {
    using model = await loadModel(file);
    for (const [key, value] of Object.entries(EXTRA)) {
      expect(model.native.metaString(key), key).toBe(value.type === "array" ? null : llamaString(value));
    }
    // Our reader (model.metadata) gives the typed values back, arrays included.
    expect(model.metadata["test.u64"]).toBe(2n ** 63n + 5n);
    expect(model.metadata["test.arr.u64"]).toEqual([0, 2n ** 64n - 1n]);
    expect(model.metadata["test.arr.string"]).toEqual(["a", "b c", ""]);
    expect(model.info.vocabSize).toBe(301);
    const context = await model.createContext({ contextSize: 32, threads: 1 });
    const session = context.createSession();
    await session.prompt("the cat");
    const r = await session.generate({ maxTokens: 3, temperature: 0 }).collect();
    expect(r.tokens.length).toBe(3);
  });

  it("@huggingface/gguf reads the same file back", async () => {
    const theirs = await gguf(file, { allowLocalFile: true, typedMetadata: true });
    for (const [key, value] of Object.entries(EXTRA)) {
      const other = theirs.typedMetadata[key];
      if (value.type === "array") {
        expect(other.subType, key).toBe(GGUF_SCALAR_TYPE_IDS[value.itemType]);
        expect(arrayMismatches(value, other.value as unknown[]), key).toBe(0);
      } else {
        expect(comparable(value.type, value.value), key).toEqual(other.value);
      }
    }
  });
});

describe("loadModel on malformed files", () => {
  let base: string;
  beforeAll(async () => {
    const vocab = path.join(tmp, "fuzz-vocab.gguf");
    base = path.join(tmp, "fuzz-base.gguf");
    await writeSmallGpt2Vocab(vocab, 300);
    await writeSmallGpt2(base, vocab, { nEmbd: 32, nHead: 2, nLayer: 1, nCtx: 32, seed: 3 });
  });

  it("loads the unmutated fuzz base (so mutations start from a valid file)", async () => {
    using model = await loadModel(base);
    expect(model.info.layers).toBe(1);
    expect(fs.statSync(base).size).toBeLessThan(150_000);
  });

  it("survives 1,000 seeded byte-level mutations through decode: each runs or fails with a LlamaError; no crash, hang or leak", async () => {
    const report = await runLoaderFuzz({ base, seed: 20240601, count: 1000, timeoutMs: 15_000, saveFailuresTo: path.join(repoRoot, "tests", "fuzz", "new-failures") });
    console.info(
      `loader fuzz (bytes): ${report.count} mutations in ${report.seconds.toFixed(1)} s, outcomes ${JSON.stringify(report.outcomes)}, ` +
        `slowest ${report.slowestMs.toFixed(0)} ms, RSS ${(report.rssAfterWarmup / 2 ** 20).toFixed(0)} -> ${(report.rssMax / 2 ** 20).toFixed(0)} MiB`,
    );
    expect(report.failures).toEqual([]);
    expect(report.results.filter((r) => r !== undefined).length).toBe(1000);
    // The mutations exercise every path: some load and generate, most are refused.
    expect(report.outcomes.generated).toBeGreaterThan(10);
    expect(report.outcomes.ERR_GGUF_INVALID).toBeGreaterThan(500);
    // Memory stays bounded: after the first 50 inputs the child grows by less than 64 MiB. Not
    // under npm run test:asan: ASan's allocator holds freed memory in quarantine (RSS grew
    // 239 MiB there), and LeakSanitizer checks the child for leaks instead.
    if (process.env.LLAMA_NAPI_SANITIZER === undefined) expect(report.rssMax - report.rssAfterWarmup).toBeLessThan(64 * 2 ** 20);
  }, 180_000);

  it("survives 1,000 structure-aware mutations through decode (tensor types, shapes, offsets; value types, lengths)", async () => {
    const report = await runLoaderFuzz({ base, seed: 25, count: 1000, timeoutMs: 15_000, mutator: "structure", saveFailuresTo: path.join(repoRoot, "tests", "fuzz", "new-failures") });
    console.info(`loader fuzz (structure): ${report.count} mutations in ${report.seconds.toFixed(1)} s, outcomes ${JSON.stringify(report.outcomes)}, slowest ${report.slowestMs.toFixed(0)} ms`);
    expect(report.failures).toEqual([]);
    expect(report.results.filter((r) => r !== undefined).length).toBe(1000);
    // Enough of them get through the load to a decode, and to each refusal of issue 25.
    expect(report.outcomes.generated).toBeGreaterThan(50);
    expect(report.outcomes["loaded/ERR_UNSUPPORTED"]).toBeGreaterThan(20); // the graph check, at createContext
    expect(report.outcomes.ERR_UNSUPPORTED).toBeGreaterThan(20); // tensor types no kernel computes with, at load
  }, 180_000);

  it("refuses every file in the crash corpus (tests/fuzz/corpus) with a LlamaError that says why", async () => {
    const dir = path.join(repoRoot, "tests", "fuzz", "corpus");
    const files = fs.readdirSync(dir).filter((f) => f.endsWith(".gguf")).map((f) => path.join(dir, f));
    expect(files.length).toBeGreaterThanOrEqual(15);
    // What each find is refused with (by file name), and what the message says.
    const expected = (f: string): [string, RegExp] =>
      f.includes("token-embd-i32") ? ["ERR_UNSUPPORTED", /token_embd\.weight is stored as i32/]
      : f.includes("pooling-type") ? ["ERR_GGUF_INVALID", /pooling_type is 65535, not a pooling type/]
      : f.includes("rwkv-tokenizer-loop") ? ["ERR_GGUF_INVALID", /RWKV tokenizer loops forever/]
      : f.includes("head-size-mismatch") ? ["ERR_GGUF_INVALID", /architecture bert needs the value head size .* to equal the key head size/]
      : f.includes("vocab-none") ? ["ERR_UNSUPPORTED", /has no vocabulary/]
      : f.includes("t5encoder-rel-bias-missing") ? ["ERR_GGUF_INVALID", /needs the relative position bias of the first encoder layer/]
      : f.includes("wordpiece-without-bos") ? ["ERR_GGUF_INVALID", /adds a BOS .* token to every text .* has no such token/]
      : ["ERR_GGUF_INVALID", /block_count|same string|general.file_type|more elements than a 64-bit count/];
    // In a child process, through decode: before the fixes each of these aborted or hung the process.
    const report = await loadFilesInChild(files, 15_000);
    expect(report.failures).toEqual([]);
    expect(report.results).toEqual(files.map((f) => expected(f)[0]));
    // And in this process, with the message that says what is wrong.
    for (const f of files) {
      const err = await loadModel(f).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LlamaError);
      if (expected(f)[0] === "ERR_GGUF_INVALID") expect(err).toBeInstanceOf(GgufError);
      expect((err as LlamaError).message).toMatch(expected(f)[1]);
    }
  });
});

describe("header values llama.cpp aborts on", () => {
  // One file per GGML_ASSERT that native/GgufCheck.cc mirrors; each of them aborted the process
  // (SIGABRT) before the checks existed. Loaded in a child process, so a regression is a failed
  // test instead of a dead test run.
  const VARIANTS: Record<string, GgufMetadata> = {
    "expert_count > 1024": { "gpt2.expert_count": ggufValue.uint32(2000), "gpt2.expert_used_count": ggufValue.uint32(2) },
    "experts used, none exist": { "gpt2.expert_used_count": ggufValue.uint32(2) },
    "experts, none used": { "gpt2.expert_count": ggufValue.uint32(4) },
    "expert groups >= experts": {
      "gpt2.expert_count": ggufValue.uint32(4),
      "gpt2.expert_used_count": ggufValue.uint32(2),
      "gpt2.expert_group_count": ggufValue.uint32(4),
    },
    "unknown RoPE scaling type": { "gpt2.rope.scaling.type": ggufValue.string("bogus") },
    "nextn layers > block_count": { "gpt2.nextn_predict_layers": ggufValue.uint32(5) },
    "block_count = 600": { "gpt2.block_count": ggufValue.uint32(600) },
  };

  it("refuses each with ERR_GGUF_INVALID, in loadModel and in quantize", async () => {
    const vocab = path.join(tmp, "asserts-vocab.gguf");
    const base = path.join(tmp, "asserts-base.gguf");
    await writeSmallGpt2Vocab(vocab, 300);
    await writeSmallGpt2(base, vocab, { nEmbd: 32, nHead: 2, nLayer: 1, nCtx: 32, seed: 4 });
    const header = await readGguf(base);
    const files: string[] = [];
    for (const [i, extra] of Object.values(VARIANTS).entries()) {
      const file = path.join(tmp, `assert-${i}.gguf`);
      await writeGguf(file, {
        metadata: { ...header.metadata, ...extra },
        tensors: header.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type, data: () => readChunks(base, t) })),
      });
      files.push(file);
    }
    const report = await loadFilesInChild([base, ...files], 15_000);
    expect(report.failures).toEqual([]);
    expect(report.results).toEqual(["generated", ...files.map(() => "ERR_GGUF_INVALID")]);
    for (const file of files) {
      await expect(quantize(file, path.join(tmp, "q.gguf"), { type: "Q8_0" })).rejects.toBeInstanceOf(GgufError);
    }
  });
});

async function* readChunks(from: string, t: Parameters<typeof readTensorBytes>[1]): AsyncGenerator<Uint8Array> {
  yield await readTensorBytes(from, t);
}

describe("llama-napi inspect", () => {
  it("reports the parameter count @huggingface/gguf and llama.cpp compute, and every tensor", async () => {
    const { inspectReport, formatReport } = await import("../src/cli/inspect.js");
    const file = fixturePath("gpt2-tiny-f16");
    const report = inspectReport(file, await readGguf(file, { maxArrayLength: 16 }));
    const theirs = await gguf(file, { allowLocalFile: true, computeParametersCount: true });
    expect(report.parameters).toBe(theirs.parameterCount);
    using model = await loadModel(file, { vocabOnly: false });
    expect(report.parameters).toBe(model.info.parameters);
    expect(report.tensors.map((t) => t.name)).toEqual(theirs.tensorInfos.map((t) => t.name));
    // Per-type bytes add up to the tensor data; F16 holds the 2-D weights.
    expect(Object.values(report.types).reduce((n, e) => n + e.bytes, 0)).toBe(report.tensorBytes);
    expect(report.types.F16.tensors).toBe(10);
    const text = formatReport(report);
    expect(text).toContain("[50257 strings]");
    expect(text).toContain(`Parameters: ${report.parameters.toLocaleString("en-US")}`);
    expect(text).toMatch(/token_embd\.weight\s+\[64, 50257\]\s+F16/);
  });

  it("--json is valid JSON, with 64-bit values as decimal strings", async () => {
    const { inspectReport, toJson } = await import("../src/cli/inspect.js");
    const file = path.join(tmp, "json.gguf");
    await writeGguf(file, {
      metadata: {
        "test.u64": ggufValue.uint64(2n ** 63n + 5n),
        "test.arr.u64": ggufValue.array("uint64", [0, 2n ** 64n - 1n]),
        "test.long": ggufValue.array("int32", Array.from({ length: 100 }, (_, i) => i)),
      },
      tensors: [{ name: "w", shape: [32, 2], type: GgmlType.Q8_0, data: new Uint8Array(68) }],
    });
    const parsed = JSON.parse(toJson(inspectReport(file, await readGguf(file, { maxArrayLength: 16 }))));
    expect(parsed.metadata["test.u64"]).toEqual({ type: "uint64", value: "9223372036854775813" });
    expect(parsed.metadata["test.arr.u64"]).toEqual({ type: "array", itemType: "uint64", length: 2, value: [0, "18446744073709551615"] });
    expect(parsed.metadata["test.long"]).toEqual({ type: "array", itemType: "int32", length: 100 });
    expect(parsed.tensors).toEqual([{ name: "w", shape: [32, 2], type: "Q8_0", offset: parsed.dataOffset, bytes: 68 }]);
    expect(parsed.types).toEqual({ Q8_0: { tensors: 1, bytes: 68, parameters: 64 } });
  });
});
