/**
 * Images and audio in sessions (src/media.ts, native/Projector.cc, native/EngineMedia.cc), on
 * random-weight projectors written by src/fixtures/mtmd.ts ("gemma3" vision: SigLIP, average
 * pooling, projection; "ultravox" audio: Whisper encoder, frame stacking, SwiGLU), each paired
 * with a random Llama text model of the projector's output width.
 *
 * Independent checks: a media chunk changes the next-token logits, and the same bytes give the
 * same logits whatever came before; prefix reuse across media compares their bytes (SHA-256); the
 * history's media positions are -1 and rewind never keeps half a chunk; bad media and projectors
 * are typed errors.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LLAMA2_CHAT_TEMPLATE, writeRandomLlama } from "../src/fixtures/llama.js";
import { encodePng, encodeWav, testImagePixels, testToneSamples, visionTokenCount, writeAudioProjector, writeVisionProjector } from "../src/fixtures/mtmd.js";
import { loadModel, type Context, type Model, type Session } from "../src/index.js";
import { maxAbsDiff } from "./helpers/math.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-media-"));
const TEXT_EMBD = 64;
const files = {
  text: path.join(tmp, "text.gguf"),
  vision: path.join(tmp, "vision.gguf"),
  audio: path.join(tmp, "audio.gguf"),
  narrow: path.join(tmp, "narrow.gguf"),
};
const png = (seed: number, w = 96, h = 80) => encodePng(w, h, testImagePixels(w, h, seed));

let model: Model;
let context: Context;

/** Runs `fn` with a new session of the shared context, disposed afterwards whatever happens. */
async function withSession(fn: (session: Session) => Promise<void>): Promise<void> {
  const session = context.createSession();
  try {
    await fn(session);
  } finally {
    session.dispose();
  }
}

beforeAll(async () => {
  await writeRandomLlama(files.text, { nEmbd: TEXT_EMBD, nHead: 4, nHeadKv: 2, nLayer: 2, nCtx: 1024, nFf: 192, seed: 31, chatTemplate: LLAMA2_CHAT_TEMPLATE });
  await writeVisionProjector(files.vision, { textEmbd: TEXT_EMBD, seed: 32 });
  await writeAudioProjector(files.audio, { textEmbd: TEXT_EMBD, seed: 33 });
  await writeVisionProjector(files.narrow, { textEmbd: 48, seed: 34 });
  model = await loadModel(files.text, { projector: files.vision });
  context = await model.createContext({ contextSize: 512, sequences: 2, threads: 2 });
}, 120_000);

afterAll(() => {
  model?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("a vision projector (gemma3 layout)", () => {
  it("says what it takes in model.info.projector", () => {
    expect(model.info.projector).toMatchObject({ path: files.vision, type: "gemma3", image: true, audio: false });
  });

  it("evaluates an image between text, as the projector's tokens", async () => {
    await withSession(async (session) => {
      const r = await session.prompt(["Look: ", { image: png(1) }, " What is it?"]);
      const tokens = session.tokens;
      const media = [...tokens].filter((t) => t === -1).length;
      expect(media).toBe(visionTokenCount({ textEmbd: TEXT_EMBD, seed: 32 }));
      expect(r.media).toEqual([media]);
      expect(r.evaluated).toBe(tokens.length);
      expect(r.length).toBe(tokens.length);
      const withImage = session.logits().slice();
      // Another image at the same place changes what comes next.
      await session.prompt(["Look: ", { image: png(2) }, " What is it?"]);
      expect(maxAbsDiff(session.logits(), withImage)).toBeGreaterThan(1e-3);
    });
  });

  it("reuses the cached prefix up to the first media item that differs, by its bytes", async () => {
    await withSession(async (session) => {
      const file = path.join(tmp, "one.png");
      fs.writeFileSync(file, png(3));
      const first = await session.prompt(["A: ", { image: file }, " then ", { image: png(4) }, " end"]);
      const n = visionTokenCount({ textEmbd: TEXT_EMBD, seed: 32 });
      expect(first.media).toEqual([n, n]);
      const reference = session.logits().slice();
      // The same bytes (from a path, then a buffer): everything reused, nothing evaluated.
      const again = await session.prompt(["A: ", { image: png(3) }, " then ", { image: png(4) }, " end"]);
      expect(again).toMatchObject({ reused: first.length, evaluated: 0, length: first.length });
      expect(maxAbsDiff(session.logits(), reference)).toBeLessThan(1e-4);
      // A different second image: reuse stops at its start.
      const changed = await session.prompt(["A: ", { image: png(3) }, " then ", { image: png(5) }, " end"]);
      const start = [...session.tokens].indexOf(-1, [...session.tokens].indexOf(-1) + n);
      expect(changed.reused).toBe(start);
      // Back to the first: the same logits as the first time (from a fresh encode of the chunk).
      await session.prompt(["A: ", { image: png(3) }, " then ", { image: png(4) }, " end"]);
      expect(maxAbsDiff(session.logits(), reference)).toBeLessThan(1e-4);
    });
  });

  it("gives the same logits in a fresh session and after append", async () => {
    const a = context.createSession();
    await a.prompt(["Hello ", { image: png(6) }, " there"]);
    const fresh = a.logits().slice();
    a.dispose();
    const b = context.createSession();
    await b.prompt("Hello ");
    await b.prompt([{ image: png(6) }, " there"], { append: true });
    expect(maxAbsDiff(b.logits(), fresh)).toBeLessThan(1e-4);
    b.dispose();
  });

  it("generates after an image, and rewinds to before it (never half a chunk)", async () => {
    await withSession(async (session) => {
      await session.prompt(["Describe ", { image: png(7) }, " please"]);
      const text = await session.generate({ maxTokens: 4, temperature: 0 }).text();
      expect(typeof text).toBe("string");
      const tokens = [...session.tokens];
      const start = tokens.indexOf(-1);
      session.rewind(tokens.length - (start + 3)); // into the chunk
      expect(session.tokens.length).toBe(start);
      expect([...session.tokens]).not.toContain(-1);
    });
  });

  it("refuses what it cannot take, with typed errors, and the session stays usable", async () => {
    await withSession(async (session) => {
      await session.prompt("Hi");
      const cases: Array<[unknown, string]> = [
        [["x", { audio: encodeWav(testToneSamples(0.5)) }], "ERR_UNSUPPORTED"],
        [["x", { image: new Uint8Array(0) }], "ERR_MEDIA_INVALID"],
        [["x", { image: png(8).subarray(0, 40) }, "y"], "ERR_MEDIA_INVALID"],
        [["x", { image: Buffer.from("not an image at all") }, "y"], "ERR_MEDIA_INVALID"],
        [["x", { image: path.join(tmp, "missing.png") }, "y"], "ERR_FILE_NOT_FOUND"],
        [["x", { image: 3 }], "ERR_INVALID_ARGUMENT"],
        [["x <__media__> y"], "ERR_INVALID_ARGUMENT"],
      ];
      for (const [input, code] of cases) {
        await expect(session.prompt(input as never), JSON.stringify(input).slice(0, 80)).rejects.toMatchObject({ code });
      }
      // A PNG header that claims 100,000 × 100,000 pixels is refused before anything decodes it.
      const huge = Buffer.from(png(10));
      huge.writeUInt32BE(100_000, 16);
      huge.writeUInt32BE(100_000, 20);
      await expect(session.prompt(["x", { image: huge }, "y"])).rejects.toMatchObject({ code: "ERR_MEDIA_INVALID" });
      expect(session.tokens.length).toBeGreaterThan(0);
      await session.prompt(["ok ", { image: png(11) }, " ok"]);
    });
  });

  it("refuses saveState of a session with media; forks it", async () => {
    await withSession(async (session) => {
      await session.prompt(["a ", { image: png(12) }, " b"]);
      await expect(session.saveState()).rejects.toMatchObject({ code: "ERR_UNSUPPORTED" });
      const fork = await session.fork();
      expect([...fork.tokens]).toEqual([...session.tokens]);
      expect(maxAbsDiff(fork.logits(), session.logits())).toBe(0);
      fork.dispose();
    });
  });
});

describe("projectors that do not fit", () => {
  it("refuses a projector of another width, and a file that is not a projector", async () => {
    await expect(loadModel(files.text, { projector: files.narrow })).rejects.toMatchObject({ code: "ERR_UNSUPPORTED" });
    await expect(loadModel(files.text, { projector: files.text })).rejects.toMatchObject({ code: "ERR_GGUF_INVALID" });
    await expect(loadModel(files.text, { projector: path.join(tmp, "none.gguf") })).rejects.toMatchObject({ code: "ERR_FILE_NOT_FOUND" });
    await expect(model.loadProjector(files.vision)).rejects.toMatchObject({ code: "ERR_STATE" });
  });

  it("refuses an Ultravox-style stack factor that this llama.cpp aborts on", async () => {
    const bad = path.join(tmp, "stack8.gguf");
    await writeAudioProjector(bad, { textEmbd: TEXT_EMBD, seed: 35, stackFactor: 8 });
    await expect(loadModel(files.text, { projector: bad })).rejects.toMatchObject({ code: "ERR_UNSUPPORTED" });
  });

  it("a session of a model without a projector refuses media", async () => {
    const plain = await loadModel(files.text);
    const ctx = await plain.createContext({ contextSize: 128, threads: 1 });
    const s = ctx.createSession();
    expect(plain.info.projector).toBeNull();
    await expect(s.prompt(["x", { image: png(1) }, "y"])).rejects.toMatchObject({ code: "ERR_STATE" });
    await s.prompt(["only ", "text"]);
    expect(s.tokens.length).toBeGreaterThan(0);
    plain.dispose();
  });
});

describe("an audio projector (ultravox layout)", () => {
  it("evaluates audio between text", async () => {
    const m = await loadModel(files.text, { projector: files.audio });
    expect(m.info.projector).toMatchObject({ type: "ultravox", image: false, audio: true, audioSampleRate: 16000 });
    const ctx = await m.createContext({ contextSize: 1024, threads: 2 });
    const s = ctx.createSession();
    const r = await s.prompt(["Listen: ", { audio: encodeWav(testToneSamples(1)) }, " What is it?"]);
    expect([...s.tokens].filter((t) => t === -1).length).toBeGreaterThan(0);
    expect(r.evaluated).toBe(s.tokens.length);
    const logits = s.logits().slice();
    await s.prompt(["Listen: ", { audio: encodeWav(testToneSamples(1).map((x) => x * 0.25)) }, " What is it?"]);
    expect(maxAbsDiff(s.logits(), logits)).toBeGreaterThan(1e-4);
    await expect(s.prompt(["x", { image: png(1) }, "y"])).rejects.toMatchObject({ code: "ERR_UNSUPPORTED" });
    // Ultravox's audio has no closing text: a prompt that ends with it would give no logits.
    await expect(s.prompt(["x", { audio: encodeWav(testToneSamples(0.5)) }])).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    m.dispose();
  }, 120_000);
});

describe("model.encodeMedia", () => {
  it("gives the projector's output: one row per position, and the same rows for the same bytes", async () => {
    const a = await model.encodeMedia({ image: png(13) });
    expect(a.tokens).toBe(visionTokenCount({ textEmbd: TEXT_EMBD, seed: 32 }));
    expect(a.width).toBe(TEXT_EMBD);
    expect(a.embeddings.length).toBe(a.tokens * a.width);
    expect(a.embeddings.every(Number.isFinite)).toBe(true);
    const again = await model.encodeMedia({ image: png(13) });
    expect(maxAbsDiff(again.embeddings, a.embeddings)).toBe(0);
    const other = await model.encodeMedia({ image: png(14) });
    expect(maxAbsDiff(other.embeddings, a.embeddings)).toBeGreaterThan(1e-3);
    await expect(model.encodeMedia({ audio: encodeWav(testToneSamples(0.5)) })).rejects.toMatchObject({ code: "ERR_UNSUPPORTED" });
  });
});

describe("trace with media", () => {
  it("captures attention over the image's positions, labelled as such, and equals a trace without the prompt cache", async () => {
    await withSession(async (session) => {
      await session.prompt(["Look: ", { image: png(15) }, " and"]);
      const trace = await session.trace(" see", { topK: 3 });
      const n = visionTokenCount({ textEmbd: TEXT_EMBD, seed: 32 });
      expect(trace.media).toHaveLength(1);
      expect(trace.media[0]).toMatchObject({ length: n, kind: "image" });
      const { start } = trace.media[0]!;
      expect(trace.pieces.slice(start, start + n).every((p) => p === "[image]")).toBe(true);
      // Each query's attention is a distribution over the positions so far, the image's included.
      for (const map of trace.attention ?? []) {
        for (let h = 0; h < map.heads; h++) {
          const row = map.row(h, map.queries - 1);
          expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
          const onImage = row.subarray(start, start + n).reduce((a, b) => a + b, 0);
          expect(onImage).toBeGreaterThan(0);
        }
      }
      // The capture pass re-evaluates the whole history (the image through the projector again):
      // its next-token distribution is the session's own.
      const logits = session.logits();
      const best = trace.next[0]!;
      let argmax = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[argmax]!) argmax = i;
      expect(best.token).toBe(argmax);
    });
  });
});
