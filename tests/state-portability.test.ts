/**
 * Saved session states are portable between contexts of the same model: any sequence count, a
 * unified KV cache or not, flash attention on or off (V stored transposed or not). The restored
 * session continues exactly as the original: its greedy continuation is the same, and its logits
 * (both those saved and those computed over the restored KV cache) are within 1e-4 of a fresh
 * evaluation in the target context. States from another model, another KV cache type or another
 * format version are refused with ERR_STATE naming what differs; truncated, corrupted and
 * structurally mutated states (with a valid checksum, so that the parsers are reached) are
 * refused or loaded, never a crash.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LlamaError, loadModel, type ContextOptions, type Model, type Session } from "../src/index.js";
import { fixturePath, type FixtureName } from "./helpers/fixtures.js";
import { maxAbsDiff, mulberry32 } from "./helpers/math.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-state-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const HEADER_BYTES = 32; // magic, version, reserved, payload size, checksum

/** The checksum saveState writes over the payload (native/SessionState.cc: Checksum). */
function checksum(p: Uint8Array): bigint {
  const MASK = (1n << 64n) - 1n;
  const MUL = 0x9e3779b97f4a7c15n;
  let h = 0x6c6c616d614e4150n;
  const mix = (w: bigint) => {
    h ^= w;
    h = (h * MUL) & MASK;
    h ^= h >> 29n;
  };
  const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
  let i = 0;
  for (; i + 8 <= p.length; i += 8) mix(view.getBigUint64(i, true));
  if (i < p.length) {
    let w = 0n;
    for (let k = p.length - 1; k >= i; k--) w = (w << 8n) | BigInt(p[k]);
    mix(w);
  }
  mix(BigInt(p.length));
  return h;
}

/** Writes a valid checksum into a (mutated) state, so that it reaches the structural parsers. */
function reseal(state: Buffer): Buffer {
  state.writeBigUInt64LE(BigInt(state.length - HEADER_BYTES), 16);
  state.writeBigUInt64LE(checksum(state.subarray(HEADER_BYTES)), 24);
  return state;
}

/** Where the memory section of a state starts (after the model description and the session). */
function memoryOffset(state: Buffer): number {
  let at = HEADER_BYTES;
  const archLen = state.readUInt32LE(at);
  at += 4 + archLen;
  const nVocab = state.readUInt32LE(at);
  at += 44;
  const nTokens = state.readUInt32LE(at);
  const hasLogits = state.readUInt32LE(at + 8);
  return at + 12 + 4 * nTokens + (hasLogits ? 4 * nVocab : 0);
}

async function expectState(p: Promise<unknown>, message: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected a refusal").toBeInstanceOf(LlamaError);
  expect((err as LlamaError).code).toBe("ERR_STATE");
  expect((err as LlamaError).message).toMatch(message);
}

type Layout = Pick<ContextOptions, "sequences" | "unifiedKvCache" | "flashAttention">;

const CASES: Array<[string, Layout, Layout]> = [
  ["1 → 4 sequences", { sequences: 1 }, { sequences: 4 }],
  ["4 → 1 sequences", { sequences: 4 }, { sequences: 1 }],
  ["2 → 8 sequences", { sequences: 2 }, { sequences: 8 }],
  ["4 sequences, not unified → unified", { sequences: 4 }, { sequences: 4, unifiedKvCache: true }],
  ["3 sequences unified → 2 not unified", { sequences: 3, unifiedKvCache: true }, { sequences: 2 }],
  ["flash attention on → off (V transposed)", { sequences: 2, flashAttention: "on" }, { sequences: 3, flashAttention: "off" }],
  ["flash attention off, unified → on, 1 sequence", { sequences: 4, unifiedKvCache: true, flashAttention: "off" }, { sequences: 1, flashAttention: "on" }],
];

const MODELS: Array<{ fixture: FixtureName; kvCacheType: "f32" | "f16"; text: string }> = [
  { fixture: "gpt2-tiny-f32", kvCacheType: "f32", text: "The pizza came out of the oven and it tasted" },
  { fixture: "llama-tiny-f32", kvCacheType: "f16", text: "Once upon a time, a little dragon found" },
];

/** Sessions that take the first `n` sequences of a context and hold some tokens. */
async function fill(context: { createSession(): Session }, n: number): Promise<Session[]> {
  const sessions: Session[] = [];
  for (let i = 0; i < n; i++) {
    const s = context.createSession();
    await s.prompt(`Filler number ${i} holds a few tokens`);
    sessions.push(s);
  }
  return sessions;
}

for (const { fixture, kvCacheType, text } of MODELS) {
  describe(`state portability: ${fixture} (KV cache ${kvCacheType})`, () => {
    let model: Model;
    const base = { contextSize: 64, threads: 1, kvCacheType } as const;
    beforeAll(async () => {
      model = await loadModel(fixturePath(fixture));
    });
    afterAll(() => model?.dispose());

    for (const [name, from, to] of CASES) {
      it(`${name}: the restored session continues exactly as the original`, async () => {
        let state: Buffer;
        let continuation: number[];
        {
          // The saved session is the last sequence of its context, the others hold tokens too.
          using source = await model.createContext({ ...base, ...from });
          const fillers = await fill(source, (from.sequences ?? 1) - 1);
          using original = source.createSession();
          await original.prompt(text);
          state = await original.saveState();
          continuation = (await original.generate({ maxTokens: 8, temperature: 0 }).collect()).tokens;
          fillers.forEach((s) => s.dispose());
        }
        const tokens = [...model.tokenize(text)];

        using target = await model.createContext({ ...base, ...to });
        // Restored into the last sequence, beside sessions that hold other tokens.
        const fillers = await fill(target, (to.sequences ?? 1) - 1);
        const restored = target.createSession();
        await restored.loadState(state);
        expect([...restored.tokens]).toEqual(tokens);
        // Saved again at once, the state is byte for byte the same: the KV cells and rows went
        // through the re-framing (and V through transposition) without a change.
        expect((await restored.saveState()).equals(state)).toBe(true);
        const savedLogits = restored.logits().slice();
        // Greedy generation reads the saved logits, then decodes over the restored KV cache.
        const generated = (await restored.generate({ maxTokens: 8, temperature: 0 }).collect()).tokens;
        expect(generated).toEqual(continuation);
        await restored.prompt(" and then", { append: true });
        const all = [...restored.tokens];
        const restoredLogits = restored.logits().slice();
        if (fillers.length > 0) {
          // A fork of the restored session holds the same cache.
          fillers.pop()!.dispose();
          using child = await restored.fork();
          expect(maxAbsDiff(child.logits(), restoredLogits)).toBeLessThan(1e-4);
          await child.prompt(" again", { append: true });
        }
        restored.dispose();

        using fresh = target.createSession();
        await fresh.prompt(tokens);
        // With the other attention kernel (flash attention on in one context, off in the other),
        // the cache of layers past the first and the saved logits carry the source kernel's
        // rounding (about 1e-3 here): no context computes exactly those numbers, so the bound is
        // looser there (the byte-for-byte check above is what shows the transposition exact).
        const sameKernel = (from.flashAttention ?? "auto") === (to.flashAttention ?? "auto");
        const tolerance = sameKernel ? 1e-4 : 1e-2;
        expect(maxAbsDiff(savedLogits, fresh.logits())).toBeLessThan(tolerance);
        await fresh.prompt(all);
        expect(maxAbsDiff(restoredLogits, fresh.logits())).toBeLessThan(tolerance);
        fillers.forEach((s) => s.dispose());
      });
    }

    it("saveStateFile / loadStateFile carry a state between contexts of different layouts", async () => {
      const file = path.join(tmp, `${fixture}.state`);
      let next: number[];
      {
        using source = await model.createContext({ ...base, sequences: 4, unifiedKvCache: true });
        await fill(source, 2);
        using original = source.createSession();
        await original.prompt(text);
        await original.saveStateFile(file);
        next = (await original.generate({ maxTokens: 6, temperature: 0 }).collect()).tokens;
      }
      using target = await model.createContext({ ...base, sequences: 1 });
      using session = target.createSession();
      await session.loadStateFile(file);
      expect((await session.generate({ maxTokens: 6, temperature: 0 }).collect()).tokens).toEqual(next);
    });

    it("a state saved with another KV cache type is refused, naming both types", async () => {
      const other = kvCacheType === "f32" ? "f16" : "f32";
      using source = await model.createContext({ ...base, kvCacheType: other });
      using original = source.createSession();
      await original.prompt(text);
      const state = await original.saveState();
      using target = await model.createContext({ ...base, sequences: 2 });
      using session = target.createSession();
      await session.prompt("Keep me");
      const before = [...session.tokens];
      await expectState(
        session.loadState(state),
        new RegExp(`KV cache of type ${other} .*this context's is ${kvCacheType}.*kvCacheType: "${other}"`),
      );
      // A refusal leaves the session as it was.
      expect([...session.tokens]).toEqual(before);
      await session.prompt(" still here", { append: true });
    });

    it("an empty session's state (no KV cells) loads anywhere", async () => {
      using source = await model.createContext({ ...base, sequences: 3 });
      using empty = source.createSession();
      const state = await empty.saveState();
      using target = await model.createContext({ ...base, sequences: 1 });
      using session = target.createSession();
      await session.prompt(text);
      await session.loadState(state);
      expect(session.length).toBe(0);
      await session.prompt(text);
    });
  });
}

describe("states that are refused", () => {
  let gpt2: Model;
  let llama: Model;
  let wide: Model;
  let good: Buffer;
  beforeAll(async () => {
    gpt2 = await loadModel(fixturePath("gpt2-tiny-f32"));
    llama = await loadModel(fixturePath("llama-tiny-f32"));
    wide = await loadModel(fixturePath("gpt2-wide-f16"));
    using context = await gpt2.createContext({ contextSize: 64, threads: 1, sequences: 2 });
    using session = context.createSession();
    await session.prompt("A state to refuse in many ways");
    good = await session.saveState();
  });
  afterAll(() => {
    gpt2?.dispose();
    llama?.dispose();
    wide?.dispose();
  });

  it("from another model: ERR_STATE naming what differs", async () => {
    {
      using context = await llama.createContext({ contextSize: 64, threads: 1 });
      using session = context.createSession();
      await expectState(
        session.loadState(good),
        /different model: architecture gpt2 \(this model: llama\); vocabulary size 50257 \(this model: 32000\)/,
      );
    }
    using context = await wide.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    await expectState(session.loadState(good), /different model: layer count 2 \(this model: 4\); embedding size 64 \(this model: 384\)/);
  });

  it("from another format version: ERR_STATE naming the version found and the one expected", async () => {
    using context = await gpt2.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    const old = Buffer.from(good);
    old.writeUInt32LE(1, 8);
    await expectState(session.loadState(old), /format version 1, from an older llama-napi; this version reads format version 2/);
    const newer = Buffer.from(good);
    newer.writeUInt32LE(3, 8);
    await expectState(session.loadState(newer), /format version 3, from a newer llama-napi; this version reads format version 2/);
  });

  it("more tokens than a session of the target context holds: ERR_CONTEXT_FULL", async () => {
    using context = await gpt2.createContext({ contextSize: 4, threads: 1 });
    using session = context.createSession();
    await expect(session.loadState(good)).rejects.toMatchObject({ code: "ERR_CONTEXT_FULL" });
  });

  it("truncated, extended or corrupted: ERR_STATE, and the session is kept", async () => {
    using context = await gpt2.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    await session.prompt("Keep this session");
    const tokens = [...session.tokens];
    for (const length of [0, 8, 12, 31, 32, 40, memoryOffset(good), good.length >> 1, good.length - 1]) {
      await expectState(session.loadState(good.subarray(0, length)), /invalid|truncated/);
    }
    await expectState(session.loadState(Buffer.concat([good, Buffer.from([0])])), /too many/);
    const flipped = Buffer.from(good);
    flipped[good.length - 5] ^= 0x10;
    await expectState(session.loadState(flipped), /checksum/);
    expect([...session.tokens]).toEqual(tokens);
  });

  it("structurally mutated states with a valid checksum: a typed error or a load, never a crash", async () => {
    using context = await gpt2.createContext({ contextSize: 64, threads: 1, sequences: 2 });
    using session = context.createSession();
    const mem = memoryOffset(good);
    const rand = mulberry32(2025);
    const u32s = [0, 1, 2, 3, 12, 0x7fffffff, 0xffffffff, 0x10000, 64];
    const outcomes: Record<string, number> = {};
    const N = 600;
    for (let i = 0; i < N; i++) {
      const copy = Buffer.from(good);
      const edits = 1 + Math.floor(rand() * 3);
      for (let k = 0; k < edits; k++) {
        // Mostly the memory section's headers, cells and layer headers; sometimes anywhere.
        const region = rand();
        const span = region < 0.6 ? [mem, Math.min(copy.length, mem + 200)] : region < 0.8 ? [HEADER_BYTES, mem] : [mem, copy.length];
        const at = span[0] + Math.floor(rand() * (span[1] - span[0] - 4));
        if (rand() < 0.5) copy.writeUInt32LE(u32s[Math.floor(rand() * u32s.length)], at & ~3);
        else copy[at] ^= 1 << Math.floor(rand() * 8);
      }
      // Sometimes cut the mutant short as well.
      const mutant = reseal(rand() < 0.15 ? Buffer.from(copy.subarray(0, mem + Math.floor(rand() * (copy.length - mem)))) : copy);
      try {
        await session.loadState(mutant);
        outcomes.loaded = (outcomes.loaded ?? 0) + 1;
      } catch (err) {
        expect(err).toBeInstanceOf(LlamaError);
        const code = (err as LlamaError).code;
        outcomes[code] = (outcomes[code] ?? 0) + 1;
      }
    }
    console.log(`state-portability: ${N} structural mutants: ${JSON.stringify(outcomes)}`);
    expect(Object.keys(outcomes).every((k) => ["loaded", "ERR_STATE", "ERR_CONTEXT_FULL"].includes(k))).toBe(true);
    // The session still works and loads the good state.
    await session.loadState(good);
    expect((await session.generate({ maxTokens: 4, temperature: 0 }).collect()).tokens).toHaveLength(4);
  });
});
