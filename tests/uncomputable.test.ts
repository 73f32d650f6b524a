/**
 * Models that load but that ggml cannot compute are refused before they decode (issue 25):
 * createContext builds the context's graphs and checks every node against the backend it runs
 * on (native/GraphCheck.cc), setLora does the same with the adapters applied, and an encoder
 * without a decoder (t5encoder) gets no generation context. Without these checks each case below
 * ended the whole process at the first decode (checked by hand against a build without them, 2026-12: SIGABRT
 * "binary_op: unsupported types" for the F16/BF16/Q8_0 norm weights and the F16 bias, SIGSEGV
 * for the I32/F64 matrices (a null vec_dot), SIGABRT in get_rows for the I64 embedding table,
 * and GGML_ASSERT "llama_encode must be called first" for T5).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { GgmlType, LlamaError, ggufValue, loadModel, quantize, type Model, type Session } from "../src/index.js";
import { writeRandomLoraAdapter } from "../src/fixtures/lora.js";
import { fixturePath } from "./helpers/fixtures.js";
import { writeRetyped, writeTinyMamba, writeTinyT5 } from "./helpers/uncomputable.js";
import { writeSmallGpt2, writeSmallGpt2Vocab } from "./fuzz/small-gpt2.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-uncomputable-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function rejection(promise: Promise<unknown>): Promise<LlamaError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected a rejection").toBeInstanceOf(LlamaError);
  return err as LlamaError;
}

async function greedy(model: Model, prompt = "Hello world", n = 4): Promise<number[]> {
  using context = await model.createContext({ contextSize: 32, threads: 1 });
  using session = context.createSession();
  await session.prompt(prompt);
  const { tokens } = await session.generate({ temperature: 0, maxTokens: n }).collect();
  return tokens;
}

let gpt2: string;
beforeAll(async () => {
  const vocab = path.join(tmp, "vocab.gguf");
  gpt2 = path.join(tmp, "gpt2.gguf");
  await writeSmallGpt2Vocab(vocab, 300);
  await writeSmallGpt2(gpt2, vocab, { nEmbd: 32, nHead: 2, nLayer: 1, nCtx: 32, seed: 3 });
});

describe("tensor types ggml's CPU backend has no kernel for, where the graph uses them", () => {
  // [tensor, stored type, the op that uses it in GPT-2's graph]: types that ggml computes with
  // elsewhere, but not in that op. Found by building the context's graph.
  const GRAPH_CASES: Array<[string, GgmlType, string]> = [
    ["blk.0.attn_norm.weight", GgmlType.F16, "MUL"],
    ["output_norm.weight", GgmlType.BF16, "MUL"],
    ["output_norm.weight", GgmlType.Q8_0, "MUL"],
    ["blk.0.attn_qkv.bias", GgmlType.F16, "ADD"],
    ["blk.0.ffn_down.bias", GgmlType.F16, "ADD"],
  ];

  it.each(GRAPH_CASES)("%s stored as type %i: loads, and createContext is refused with ERR_UNSUPPORTED naming it (%s)", async (tensor, type, op) => {
    const file = path.join(tmp, `${tensor}-${type}.gguf`);
    await writeRetyped(gpt2, file, { [tensor]: type });
    using model = await loadModel(file);
    const typeName = GgmlType[type].toLowerCase();
    const err = await rejection(model.createContext({ contextSize: 32 }));
    expect(err.code).toBe("ERR_UNSUPPORTED");
    expect(err.message).toContain(`tensor ${tensor} is stored as ${typeName}`);
    expect(err.message).toContain(`in ${op}:`);
    expect(err.message).toMatch(/would abort the process/);
    // The same for an embedding context, and the model stays usable for what needs no graph.
    expect((await rejection(model.createEmbeddingContext({ pooling: "mean" }))).code).toBe("ERR_UNSUPPORTED");
    expect(model.tokenize("Hello").length).toBeGreaterThan(0);
  });

  // Types no CPU kernel computes with in any role (no dot product): refused at load. The I32
  // embedding table was a fuzz find: get_rows then yields i32 activations, no backend supports
  // the next MUL_MAT, and ggml's scheduler asserted while createContext reserved the graph.
  const TYPE_CASES: Array<[string, GgmlType]> = [
    ["blk.0.ffn_up.weight", GgmlType.I32],
    ["blk.0.attn_output.weight", GgmlType.F64],
    ["blk.0.ffn_up.weight", GgmlType.Q8_1],
    ["token_embd.weight", GgmlType.I64],
    ["token_embd.weight", GgmlType.I32],
    ["output_norm.bias", GgmlType.I8],
  ];

  it.each(TYPE_CASES)("%s stored as type %i is refused at load with ERR_UNSUPPORTED, and loads for its vocabulary", async (tensor, type) => {
    const file = path.join(tmp, `type-${tensor}-${type}.gguf`);
    await writeRetyped(gpt2, file, { [tensor]: type });
    const err = await rejection(loadModel(file));
    expect(err.code).toBe("ERR_UNSUPPORTED");
    expect(err.message).toContain(`tensor ${tensor} is stored as ${GgmlType[type].toLowerCase()}, a type ggml's CPU backend cannot compute with`);
    using vocab = await loadModel(file, { vocabOnly: true });
    expect(vocab.detokenize(vocab.tokenize("Hello"))).toBe("Hello");
  });

  it("the unmutated model, and types the kernels do take (an F16 position table, F16 matrices), still generate", async () => {
    using base = await loadModel(gpt2);
    const expected = await greedy(base);
    expect(expected).toHaveLength(4);
    const f16 = path.join(tmp, "f16-ok.gguf");
    await writeRetyped(gpt2, f16, { "position_embd.weight": GgmlType.F16, "blk.0.ffn_up.weight": GgmlType.F16, "blk.0.attn_qkv.weight": GgmlType.BF16 });
    using model = await loadModel(f16);
    expect(await greedy(model)).toHaveLength(4);
  });

  it("every quantisation, KV cache type and flash attention setting of a valid model passes the check", async () => {
    for (const type of ["Q8_0", "Q4_0", "Q4_K_M", "IQ4_NL", "BF16"] as const) {
      const out = path.join(tmp, `q-${type}.gguf`);
      await quantize(fixturePath("gpt2-tiny-f32"), out, { type });
      using model = await loadModel(out);
      expect(await greedy(model), type).toHaveLength(4);
    }
    // A head size of 64: the quantised cache types need a multiple of their block size (32).
    using model = await loadModel(fixturePath("gpt2-wide-f16"));
    for (const kvCacheType of ["f32", "f16", "bf16", "q8_0", "q4_0", "q5_1", "iq4_nl"] as const) {
      for (const flashAttention of ["on", "off"] as const) {
        if (flashAttention === "off" && kvCacheType !== "f32" && kvCacheType !== "f16" && kvCacheType !== "bf16") continue;
        using context = await model.createContext({ contextSize: 32, kvCacheType, flashAttention, sequences: 2 });
        using session = context.createSession();
        await session.prompt("Hello");
        const { tokens } = await session.generate({ temperature: 0, maxTokens: 2 }).collect();
        expect(tokens, `${kvCacheType} ${flashAttention}`).toHaveLength(2);
      }
    }
  });

  it("an RMSNorm weight (Llama) stored as F16 is refused the same way", async () => {
    const file = path.join(tmp, "llama-rms-f16.gguf");
    await writeRetyped(fixturePath("llama-tiny-f32"), file, { "blk.1.ffn_norm.weight": GgmlType.F16 });
    using model = await loadModel(file);
    const err = await rejection(model.createContext({ contextSize: 32 }));
    expect(err.code).toBe("ERR_UNSUPPORTED");
    expect(err.message).toContain("tensor blk.1.ffn_norm.weight is stored as f16");
  });

  it("head sizes the architecture's graph asserts equal, when they differ, are refused at load", async () => {
    // BERT's weights are shaped by the embedding size only, so llama.cpp loads a key head size
    // that differs from the value head size, and then aborts in createContext, while it builds
    // the graph (src/models/bert.cpp asserts them equal). A fuzz find (key_length 0).
    for (const keyLength of [0, 2]) {
      const file = path.join(tmp, `heads-${keyLength}.gguf`);
      await writeRetyped(fixturePath("bert-tiny-f32"), file, {}, { "bert.attention.key_length": ggufValue.uint32(keyLength) });
      const err = await rejection(loadModel(file));
      expect(err.code).toBe("ERR_GGUF_INVALID");
      expect(err.message).toMatch(new RegExp(`architecture bert needs the value head size .*\\(\\d+\\) to equal the key head size .*\\(${keyLength}\\)`));
    }
  });

  it("a model without a vocabulary (tokenizer.ggml.model \"none\") is refused at load: llama.cpp aborts on its token operations", async () => {
    // (llama.vocab_size gives llama.cpp the token count the weights need; a fuzz find.)
    const file = path.join(tmp, "no-vocab.gguf");
    await writeRetyped(fixturePath("llama-tiny-f32"), file, {}, { "tokenizer.ggml.model": ggufValue.string("none") });
    const err = await rejection(loadModel(file));
    expect(err.code).toBe("ERR_UNSUPPORTED");
    expect(err.message).toMatch(/has no vocabulary/);
  });

  it("a negative normalisation epsilon is refused at load (ggml asserts eps >= 0 at decode)", async () => {
    const file = path.join(tmp, "negative-eps.gguf");
    await writeRetyped(gpt2, file, {}, { "gpt2.attention.layer_norm_epsilon": ggufValue.float32(-1e-5) });
    const err = await rejection(loadModel(file));
    expect(err.code).toBe("ERR_GGUF_INVALID");
    expect(err.message).toMatch(/gpt2\.attention\.layer_norm_epsilon is -0\.00001.*must be >= 0/);
  });
});

describe("LoRA adapters", () => {
  it("an adapter with an I32 matrix is refused by setLora, and the context keeps its previous adapters", async () => {
    const base = fixturePath("llama-tiny-f32");
    const good = fixturePath("lora-llama-tiny");
    const bad = path.join(tmp, "lora-i32.gguf");
    const source = path.join(tmp, "lora-source.gguf");
    await writeRandomLoraAdapter(source, { base, rank: 4, seed: 8, targets: ["blk.0.attn_q.weight", "blk.1.ffn_up.weight"] });
    await writeRetyped(source, bad, { "blk.1.ffn_up.weight.lora_a": GgmlType.I32 });
    using model = await loadModel(base);
    using context = await model.createContext({ contextSize: 32, threads: 1 });
    const run = async () => {
      using session = context.createSession();
      await session.prompt("Once upon a time");
      return (await session.generate({ temperature: 0, maxTokens: 4 }).collect()).tokens;
    };
    const plain = await run();
    await context.setLora([{ path: good, scale: 1 }]);
    const adapted = await run();
    expect(adapted).not.toEqual(plain);
    const err = await rejection(context.setLora([{ path: bad, scale: 1 }]));
    expect(err.code).toBe("ERR_UNSUPPORTED");
    expect(err.message).toContain("tensor blk.1.ffn_up.weight.lora_a is stored as i32");
    expect(err.message).toContain(bad);
    expect(await run()).toEqual(adapted);
    await context.setLora([]);
    expect(await run()).toEqual(plain);
  });
});

describe("architectures that abort at the first decode", () => {
  it("a T5 (encoder-decoder) model loads and its context runs the encoder and the decoder; an embedding context is refused", async () => {
    // Until issue 20, createContext refused T5 (decoding without llama_encode first aborts the
    // process); tests/t5.test.ts checks what the context computes against a reference.
    const file = path.join(tmp, "t5.gguf");
    await writeTinyT5(file, { seed: 1 });
    using model = await loadModel(file);
    expect(model.info).toMatchObject({ architecture: "t5", hasEncoder: true, hasDecoder: true, vocabType: "ugm", decoderStartToken: 0 });
    expect(Array.from(model.tokenize("Hello world"))).toContain(1); // the UGM vocabulary appends </s>
    using context = await model.createContext({ contextSize: 32 });
    using session = context.createSession();
    await session.prompt("Hello world");
    expect(Array.from(session.tokens)).toEqual([0]); // the decoder starts with <pad>
    const logits = session.logits();
    expect(logits).toHaveLength(model.info.vocabSize);
    expect(logits.every(Number.isFinite)).toBe(true);
    // The default topK (40) is more than the 15-token vocabulary: it keeps every token.
    const { tokens } = await session.generate({ temperature: 0, maxTokens: 4 }).collect();
    expect(tokens.length).toBeLessThanOrEqual(4); // (it may stop at once: </s> is one of 15 tokens)
    const err = await rejection(model.createEmbeddingContext({ pooling: "mean" }));
    expect(err.code).toBe("ERR_UNSUPPORTED");
    expect(err.message).toMatch(/architecture t5 is an encoder-decoder model/);
  });

  it("a T5 whose encoder (or decoder) holds a tensor ggml cannot use is refused at createContext, naming it", async () => {
    // The encoder's graph runs only in llama_encode, which no reserve builds: the graph check
    // builds it too. Without that, the first prompt would abort the process in ggml's CPU backend.
    for (const name of ["enc.blk.0.attn_norm.weight", "enc.output_norm.weight", "dec.blk.0.cross_attn_norm.weight"]) {
      const file = path.join(tmp, "t5-f16-norm.gguf");
      await writeRetyped(fixturePath("t5-tiny-f32"), file, { [name]: GgmlType.F16 });
      using model = await loadModel(file);
      const err = await rejection(model.createContext({ contextSize: 32 }));
      expect(err.code).toBe("ERR_UNSUPPORTED");
      expect(err.message).toContain(`tensor ${name} is stored as f16`);
      if (name.startsWith("enc.")) expect(err.message).toContain("in its encoder");
    }
  });

  it("a recurrent model (Mamba) runs two sequences at once, rewinds and forks without aborting, and continues as a fresh session would", async () => {
    // llama.cpp's recurrent state cannot drop a tail: the engine starts such a sequence over.
    const vocab = path.join(tmp, "vocab.gguf");
    const file = path.join(tmp, "mamba.gguf");
    await writeTinyMamba(file, vocab, 1);
    using model = await loadModel(file);
    expect(model.info).toMatchObject({ architecture: "mamba", recurrent: true });
    using context = await model.createContext({ contextSize: 64, sequences: 3, threads: 1 });
    const greedy = (s: Session, n: number) => s.generate({ temperature: 0, maxTokens: n }).collect().then((r) => r.tokens);
    using a = context.createSession();
    using b = context.createSession();
    await Promise.all([a.prompt("Hello world"), b.prompt("Hello there")]);
    const [ga, gb] = await Promise.all([greedy(a, 4), greedy(b, 4)]);
    expect([ga.length, gb.length]).toEqual([4, 4]);
    a.rewind(3);
    const history = Array.from(a.tokens);
    const continued = await greedy(a, 4);
    {
      using fresh = context.createSession();
      await fresh.prompt(Int32Array.from(history));
      expect(await greedy(fresh, 4)).toEqual(continued);
    }
    b.dispose();
    using fork = await a.fork();
    expect(await greedy(fork, 3)).toEqual(await greedy(a, 3));
  });

  it("a T5 encoder computes embeddings, and a generation context for it is refused", async () => {
    const file = path.join(tmp, "t5encoder.gguf");
    await writeTinyT5(file, { seed: 2, encoderOnly: true });
    using model = await loadModel(file);
    expect(model.info).toMatchObject({ architecture: "t5encoder", hasEncoder: true, hasDecoder: false });
    const err = await rejection(model.createContext({ contextSize: 32 }));
    expect(err.code).toBe("ERR_UNSUPPORTED");
    expect(err.message).toMatch(/encoder without a decoder.*createEmbeddingContext/);
    using embedder = await model.createEmbeddingContext({ pooling: "mean" });
    const vector = (await embedder.embed("Hello world", { normalize: true })) as Float32Array;
    expect(vector).toHaveLength(16);
    expect(vector.every(Number.isFinite)).toBe(true);
    expect(Math.hypot(...vector)).toBeCloseTo(1, 4);
  });
});
