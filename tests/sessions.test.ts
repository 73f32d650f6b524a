/**
 * KV-cache sessions: fork, rewind, prefix reuse, save/restore, batched decoding, full contexts.
 * Logits are checked against the float64 reference GPT-2 (F32 model, F32 KV cache).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, type Context, type Model, type Session } from "../src/index.js";
import { loadGpt2Reference, type Gpt2Reference } from "./reference/gpt2.js";
import { fixturePath } from "./helpers/fixtures.js";
import { maxAbsDiff } from "./helpers/math.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-sessions-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("sessions on GPT-2 (checked against the reference forward pass)", () => {
  let model: Model;
  let context: Context;
  let reference: Gpt2Reference;
  const expectLogits = (session: Session) => {
    const expected = reference.forward([...session.tokens]).logits.at(-1)!;
    expect(maxAbsDiff(session.logits(), expected)).toBeLessThan(1e-3);
  };

  beforeAll(async () => {
    const file = fixturePath("gpt2-tiny-f32");
    model = await loadModel(file);
    context = await model.createContext({ contextSize: 128, sequences: 4, threads: 2, kvCacheType: "f32", flashAttention: "off" });
    reference = await loadGpt2Reference(file);
  });
  afterAll(() => model?.dispose());

  it("fork shares the prefix without evaluating it again, and both branches go on independently", async () => {
    using parent = context.createSession();
    await parent.prompt("The pizza came out of the oven");
    const before = context.stats().tokensDecoded;
    using child = await parent.fork();
    expect(context.stats().tokensDecoded).toBe(before);
    expect([...child.tokens]).toEqual([...parent.tokens]);
    expectLogits(child);

    await child.prompt(" and it tasted good", { append: true });
    await parent.prompt(" and the oven was hot", { append: true });
    expectLogits(child);
    expectLogits(parent);
  });

  it("rewind and truncate drop the tail; the session continues as if it never had it", async () => {
    using session = context.createSession();
    const base = [...model.tokenize("Once upon a time there was")];
    await session.prompt([...base, ...model.tokenize(" a dragon who")], { append: false });
    session.rewind(session.length - base.length);
    expect([...session.tokens]).toEqual(base);
    expect(() => session.logits()).toThrow(expect.objectContaining({ code: "ERR_STATE" }));
    await session.prompt(" a princess", { append: true });
    expectLogits(session);
    session.truncate(3);
    expect(session.length).toBe(3);
    await session.prompt([], { append: true });
    expectLogits(session);
    expect(() => session.rewind(4)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
  });

  it("reuses the shared prefix: only the differing suffix is evaluated", async () => {
    using session = context.createSession();
    const a = [...model.tokenize("The quick brown fox jumps over the lazy dog")];
    let r = await session.prompt(a);
    expect(r).toEqual({ evaluated: a.length, reused: 0, length: a.length });
    const b = [...a.slice(0, 6), ...model.tokenize(" cat sleeps")];
    const decodedBefore = context.stats().tokensDecoded;
    r = await session.prompt(b);
    expect(r.reused).toBe(6);
    expect(r.evaluated).toBe(b.length - 6);
    expect(context.stats().tokensDecoded - decodedBefore).toBe(b.length - 6);
    expectLogits(session);
    // The same prompt again: nothing to evaluate, the logits are still current.
    r = await session.prompt(b);
    expect(r).toEqual({ evaluated: 0, reused: b.length, length: b.length });
    expectLogits(session);
  });

  it("a session restored from saved state (buffer or file) continues exactly as the original", async () => {
    using original = context.createSession();
    await original.prompt("Save me now");
    const state = await original.saveState();
    const file = path.join(tmp, "state.bin");
    await original.saveStateFile(file);
    const next = await original.generate({ maxTokens: 8, temperature: 0 }).collect();

    using fromBuffer = context.createSession();
    await fromBuffer.loadState(state);
    expect([...fromBuffer.tokens]).toEqual([...model.tokenize("Save me now")]);
    expectLogits(fromBuffer);
    expect((await fromBuffer.generate({ maxTokens: 8, temperature: 0 }).collect()).tokens).toEqual(next.tokens);

    using fromFile = context.createSession();
    await fromFile.loadStateFile(file);
    expectLogits(fromFile);
    expect((await fromFile.generate({ maxTokens: 8, temperature: 0 }).collect()).tokens).toEqual(next.tokens);
  });

  it("rejects corrupt or foreign state with a typed error and keeps the session", async () => {
    using session = context.createSession();
    await session.prompt("Keep this");
    const state = await session.saveState();
    const bad = Buffer.from(state);
    bad.write("XXXX", 0);
    await expect(session.loadState(bad)).rejects.toMatchObject({ code: "ERR_STATE" });
    await expect(session.loadState(state.subarray(0, state.length - 10))).rejects.toMatchObject({ code: "ERR_STATE" });
    await expect(session.loadStateFile(path.join(tmp, "missing.bin"))).rejects.toMatchObject({ code: "ERR_FILE_NOT_FOUND" });
    expect([...session.tokens]).toEqual([...model.tokenize("Keep this")]);
    expectLogits(session);
  });

  it("decodes the next tokens of sessions that generate at the same time in one batch", async () => {
    const prompts = ["One", "Two words", "Three little words", "Four words in all"];
    const alone: number[][] = [];
    for (const p of prompts) {
      using s = context.createSession();
      await s.prompt(p);
      alone.push((await s.generate({ maxTokens: 16, temperature: 0 }).collect()).tokens);
    }
    const sessions = prompts.map(() => context.createSession());
    await Promise.all(sessions.map((s, i) => s.prompt(prompts[i])));
    const before = context.stats();
    const together = await Promise.all(sessions.map((s) => s.generate({ maxTokens: 16, temperature: 0 }).collect()));
    const after = context.stats();
    for (const s of sessions) s.dispose();
    expect(together.map((r) => r.tokens)).toEqual(alone);
    // 4 × 16 tokens, mostly 4 per llama_decode call (not 64 separate calls).
    expect(after.maxSequencesPerBatch).toBeGreaterThanOrEqual(4);
    expect(after.decodeCalls - before.decodeCalls).toBeLessThanOrEqual(24);
  });

  it("GPT-2 cannot shift its context: a full session ends with ERR_CONTEXT_FULL even with contextShift", async () => {
    using small = await model.createContext({ contextSize: 16, threads: 1 });
    using session = small.createSession();
    await session.prompt(new Array(14).fill(464));
    const gen = session.generate({ temperature: 0, contextShift: true });
    const err = await gen.collect().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "ERR_CONTEXT_FULL" });
    expect((err as Error).message).toMatch(/learned absolute positions/);
    expect(session.length).toBe(16);
  });

  it("supports quantised KV caches", async () => {
    // The tiny model's heads (16 wide) are narrower than a q8_0 block: a clear error.
    await expect(model.createContext({ contextSize: 64, kvCacheType: "q8_0", flashAttention: "on" })).rejects.toMatchObject({
      code: "ERR_CONTEXT_CREATE",
      message: expect.stringMatching(/block size/),
    });
    await expect(model.createContext({ kvCacheType: "q3" as "q8_0" })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    // A model with 64-wide heads: quantised K/V give logits close to an F32 cache.
    using wide = await loadModel(fixturePath("gpt2-wide-f16"));
    const logitsWith = async (kvCacheType: "f32" | "f16" | "q8_0" | "q4_0") => {
      using ctx = await wide.createContext({ contextSize: 64, threads: 2, kvCacheType, flashAttention: "on" });
      using s = ctx.createSession();
      await s.prompt("The pizza came out of the oven and it tasted good");
      return s.logits().slice();
    };
    const exact = await logitsWith("f32");
    const f16 = maxAbsDiff(await logitsWith("f16"), exact);
    const q8 = maxAbsDiff(await logitsWith("q8_0"), exact);
    const q4 = maxAbsDiff(await logitsWith("q4_0"), exact);
    console.log(`KV cache max |Δlogit| vs F32: f16 ${f16.toFixed(4)}, q8_0 ${q8.toFixed(4)}, q4_0 ${q4.toFixed(4)}`);
    // Coarser caches drift further, but stay in the same place.
    expect(q8).toBeGreaterThan(f16);
    expect(q4).toBeGreaterThan(q8);
    expect(q8).toBeLessThan(0.5);
    expect(q4).toBeLessThan(2);
  });
});

describe("context shift on a RoPE model (Llama architecture)", () => {
  it("keeps the first tokens, drops older ones and goes on generating", async () => {
    using model = await loadModel(fixturePath("llama-tiny-f32"));
    using context = await model.createContext({ contextSize: 32, threads: 1 });
    using session = context.createSession();
    await session.prompt("Hello world, this is a test");
    const first = session.tokens[0];
    const { tokens } = await session.generate({ maxTokens: 60, temperature: 0, contextShift: { keep: 1 } }).collect();
    expect(tokens.length).toBe(60);
    expect(context.stats().contextShifts).toBeGreaterThan(0);
    expect(session.length).toBeLessThanOrEqual(32);
    expect(session.tokens[0]).toBe(first);
    // Without contextShift the same session runs out of room.
    await session.prompt(new Array(31).fill(100));
    await expect(session.generate({ maxTokens: 10, temperature: 0 }).collect()).rejects.toMatchObject({ code: "ERR_CONTEXT_FULL" });
  });
});
