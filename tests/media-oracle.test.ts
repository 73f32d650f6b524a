/**
 * Oracles for images and audio (src/media.ts, native/Projector.cc, native/EngineMedia.cc), on the
 * random projectors of src/fixtures/mtmd.ts paired with a random Llama text model:
 *
 *  1. `model.encodeMedia({ image })` against a float64 reference of llama.cpp's "gemma3" vision
 *     projector (tests/reference/gemma3-vision.ts), for images of exactly image_size² (no resize)
 *     and of other sizes (libmtmd's fixed-point bilinear letterboxing, reproduced exactly).
 *  2. What a session evaluates for an image: the next-token logits after ["text", { image },
 *     "text"] against the float64 Llama reference (tests/reference/llama.ts) fed the projector's
 *     embeddings at the image's positions, with the image's positions attending to each other
 *     (gemma3 decodes images non-causally).
 *  3. Greedy generation against llama.cpp's own `llama-mtmd-cli` built from the vendored tree
 *     (LLAMA_MTMD_CLI, or /work/mtmd-build/bin/llama-mtmd-cli): the same text model, projector,
 *     media and prompt layout give the same 8 tokens, for an image and for audio.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LLAMA2_CHAT_TEMPLATE, writeRandomLlama } from "../src/fixtures/llama.js";
import { encodePng, encodeWav, testImagePixels, testToneSamples, writeAudioProjector, writeVisionProjector } from "../src/fixtures/mtmd.js";
import { loadModel, renderChat, type Model, type PromptPart } from "../src/index.js";
import { repoRoot } from "./helpers/fixtures.js";
import { maxAbsDiff, mulberry32 } from "./helpers/math.js";
import { letterbox, loadGemma3VisionReference, type Gemma3VisionReference } from "./reference/gemma3-vision.js";
import { loadLlamaReference, matVec, rmsNorm, ropeAngles, silu, type LlamaReference } from "./reference/llama.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-media-oracle-"));
const TEXT_EMBD = 64;
const files = {
  text: path.join(tmp, "text.gguf"),
  vision: path.join(tmp, "vision.gguf"),
  audio: path.join(tmp, "audio.gguf"),
};

/**
 * Tolerances of the projector oracle. Not 1e-4 on the maximum: llama.cpp rounds K, V, the GELU
 * input and the patch pixels to F16, and its float32 values differ from float64 ones by ~1e-7, so
 * a few values per image round to the neighbouring F16 step; the reference nudged by float32-sized
 * noise differs from itself just as much (see "the difference left is F16 rounding noise").
 */
const MAX_ABS = 5e-4;
const MEDIAN_ABS = 5e-5;

let model: Model;
let vision: Gemma3VisionReference;

beforeAll(async () => {
  await writeRandomLlama(files.text, { nEmbd: TEXT_EMBD, nHead: 4, nHeadKv: 2, nLayer: 2, nCtx: 1024, nFf: 192, seed: 41, chatTemplate: LLAMA2_CHAT_TEMPLATE });
  await writeVisionProjector(files.vision, { textEmbd: TEXT_EMBD, seed: 42 });
  await writeAudioProjector(files.audio, { textEmbd: TEXT_EMBD, seed: 43 });
  model = await loadModel(files.text);
  await model.loadProjector(files.vision, { threads: 2 });
  vision = await loadGemma3VisionReference(files.vision);
}, 120_000);

afterAll(() => {
  model?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface Diff {
  max: number;
  median: number;
  /** max / the largest |reference value|. */
  relative: number;
}

function diff(got: ArrayLike<number>, want: ArrayLike<number>): Diff {
  expect(got.length).toBe(want.length);
  const d = Array.from(got, (g, i) => Math.abs(g - want[i])).sort((a, b) => a - b);
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  return { max: d.at(-1)!, median: d[d.length >> 1], relative: d.at(-1)! / scale };
}

const fmt = (d: Diff) => `max ${d.max.toExponential(2)}, median ${d.median.toExponential(2)}, relative ${d.relative.toExponential(2)}`;

describe("model.encodeMedia against a float64 gemma3 projector", () => {
  // [width, height, seed]: 112² is the projector's image_size (copied as is); the others are
  // letterboxed: 96×80 → 112×94 and 150×120 → 112×90 on black, 64×64 → 112×112 (upscaled).
  const images: Array<[number, number, number]> = [
    [112, 112, 1],
    [112, 112, 2],
    [112, 112, 3],
    [96, 80, 4],
    [150, 120, 5],
    [64, 64, 6],
  ];
  for (const [w, h, seed] of images) {
    it(`matches for a ${w}×${h} image (seed ${seed})`, async () => {
      const rgb = testImagePixels(w, h, seed);
      const got = await model.encodeMedia({ image: encodePng(w, h, rgb) });
      const want = vision.encode(rgb, w, h);
      expect({ tokens: got.tokens, width: got.width }).toEqual({ tokens: want.tokens, width: want.width });
      expect(got.tokens).toBe(16);
      const d = diff(got.embeddings, want.embeddings);
      const exact = diff(got.embeddings, vision.encode(rgb, w, h, { numerics: "exact" }).embeddings);
      console.log(`${w}×${h} seed ${seed}: ggml-cpu numerics ${fmt(d)}; exact float64 ${fmt(exact)}`);
      expect(d.max).toBeLessThan(MAX_ABS);
      expect(d.median).toBeLessThan(MEDIAN_ABS);
      // The CPU's F16 roundings are real: without them the reference is further off.
      expect(exact.median).toBeGreaterThan(d.median);
    });
  }

  it("reproduces libmtmd's letterboxing exactly: the reference's 112² image gives bit-identical embeddings", async () => {
    for (const [w, h, seed] of images.filter(([w, h]) => w !== 112 || h !== 112)) {
      const rgb = testImagePixels(w, h, seed);
      const boxed = letterbox({ width: w, height: h, rgb }, 112, 112);
      const [direct, viaReference] = await Promise.all([
        model.encodeMedia({ image: encodePng(w, h, rgb) }),
        model.encodeMedia({ image: encodePng(112, 112, boxed.rgb) }),
      ]);
      expect(maxAbsDiff(direct.embeddings, viaReference.embeddings), `${w}×${h}`).toBe(0);
    }
  });

  it("the difference left is F16 rounding noise: the reference nudged by float32-sized noise differs from itself as much", async () => {
    const rgb = testImagePixels(112, 112, 1);
    const want = vision.encode(rgb, 112, 112);
    const random = mulberry32(7);
    const nudged = vision.encode(rgb, 112, 112, { noise: () => (random() - 0.5) * 2e-7 });
    const d = diff(nudged.embeddings, want.embeddings);
    console.log(`reference vs itself with ±1e-7 relative noise before F16 roundings: ${fmt(d)}`);
    expect(d.max).toBeGreaterThan(0);
    expect(d.median).toBeLessThan(MEDIAN_ABS);
  });
});

/** The Llama reference's last-position logits for input rows that are token ids or embeddings, with `visible(i, j)` as the attention mask. */
function llamaLogits(ref: LlamaReference, inputs: ReadonlyArray<number | ArrayLike<number>>, visible: (i: number, j: number) => boolean): Float64Array {
  const { nEmbd, nHead, nHeadKv, headDim, rmsEps, ropeTheta } = ref.hparams;
  const w = ref.weights;
  const x = inputs.map((t) => (typeof t === "number" ? Float64Array.from(w.tokenEmbd.data.subarray(t * nEmbd, (t + 1) * nEmbd)) : Float64Array.from(t)));
  const rope = (v: Float64Array, pos: number) => {
    const cs = ropeAngles(pos, headDim, ropeTheta, "ggml-cpu");
    for (let h = 0; h < v.length; h += headDim) {
      for (let i = 0; i < headDim; i += 2) {
        const [a, b] = [v[h + i], v[h + i + 1]];
        v[h + i] = a * cs[i] - b * cs[i + 1];
        v[h + i + 1] = a * cs[i + 1] + b * cs[i];
      }
    }
    return v;
  };
  const n = x.length;
  const group = nHead / nHeadKv;
  for (const layer of w.layers) {
    const normed = x.map((v) => rmsNorm(v, layer.attnNorm, rmsEps));
    const q = normed.map((v, p) => rope(matVec(layer.q, v), p));
    const k = normed.map((v, p) => rope(matVec(layer.k, v), p));
    const vv = normed.map((v) => matVec(layer.v, v));
    // Every query reads the layer's input before any residual is updated.
    const attended = x.map((_, i) => {
      const out = new Float64Array(nHead * headDim);
      for (let h = 0; h < nHead; h++) {
        const [q0, kv0] = [h * headDim, Math.floor(h / group) * headDim];
        const keys = Array.from({ length: n }, (_, j) => j).filter((j) => visible(i, j));
        const scores = keys.map((j) => {
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += q[i][q0 + d] * k[j][kv0 + d];
          return dot / Math.sqrt(headDim);
        });
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const sum = e.reduce((a, b) => a + b, 0);
        keys.forEach((j, c) => {
          for (let d = 0; d < headDim; d++) out[q0 + d] += (e[c] / sum) * vv[j][kv0 + d];
        });
      }
      return matVec(layer.o, out);
    });
    x.forEach((v, i) => {
      for (let d = 0; d < nEmbd; d++) v[d] += attended[i][d];
    });
    for (const v of x) {
      const m = rmsNorm(v, layer.ffnNorm, rmsEps);
      const gate = matVec(layer.gate, m);
      const up = matVec(layer.up, m);
      const down = matVec(layer.down, gate.map((g, i) => silu(g) * up[i]));
      for (let d = 0; d < nEmbd; d++) v[d] += down[d];
    }
  }
  return matVec(w.output, rmsNorm(x[n - 1], w.outputNorm, rmsEps));
}

describe("a session evaluates the projector's embeddings (against the float64 Llama reference)", () => {
  it("gives the logits of the text model fed the image's embeddings, the image attending to itself both ways", async () => {
    const text = await loadLlamaReference(files.text);
    // F32 KV cache and no flash attention: the text side then matches the reference to ~1e-5.
    const context = await model.createContext({ contextSize: 256, threads: 2, kvCacheType: "f32", flashAttention: "off" });
    const session = context.createSession();
    try {
      const [w, h, seed] = [96, 80, 8];
      const rgb = testImagePixels(w, h, seed);
      const png = encodePng(w, h, rgb);
      await session.prompt(["Look at ", { image: png }, " and say what it is."]);
      const tokens = [...session.tokens];
      const start = tokens.indexOf(-1);
      const end = tokens.lastIndexOf(-1) + 1;
      expect(end - start).toBe(16);
      expect(tokens.slice(start, end).every((t) => t === -1)).toBe(true);
      const logits = session.logits().slice();

      const media = await model.encodeMedia({ image: png });
      const row = (i: number) => media.embeddings.subarray((i - start) * media.width, (i - start + 1) * media.width);
      const inputs = tokens.map((t, i) => (t === -1 ? row(i) : t));
      const inImage = (i: number) => i >= start && i < end;
      const nonCausal = (i: number, j: number) => j <= i || (inImage(i) && inImage(j));
      const causal = (i: number, j: number) => j <= i;
      const expected = llamaLogits(text, inputs, nonCausal);
      const d = diff(logits, expected);
      const dCausal = diff(logits, llamaLogits(text, inputs, causal));
      // The whole chain from the float64 projector reference: the projector's F16 noise (≤ 5e-4) moves the logits a little.
      const viaReference = vision.encode(rgb, w, h).embeddings;
      const dRef = diff(logits, llamaLogits(text, tokens.map((t, i) => (t === -1 ? viaReference.subarray((i - start) * TEXT_EMBD, (i - start + 1) * TEXT_EMBD) : t)), nonCausal));
      console.log(`session logits vs reference fed encodeMedia's embeddings: ${fmt(d)}; fed the gemma3 reference's: ${fmt(dRef)}; with a causal image instead: ${fmt(dCausal)}`);
      expect(d.max).toBeLessThan(1e-3);
      expect(dRef.max).toBeLessThan(5e-3);
      // The oracle tells the two masks apart.
      expect(dCausal.max).toBeGreaterThan(10 * d.max);
    } finally {
      session.dispose();
      context.dispose();
    }
  }, 120_000);
});

// ---------------------------------------------------------------------------------------------
// llama-mtmd-cli

const CLI = process.env.LLAMA_MTMD_CLI || "/work/mtmd-build/bin/llama-mtmd-cli";
const CLI_HELP =
  "set LLAMA_MTMD_CLI to a llama-mtmd-cli built from vendor/llama.cpp, e.g. " +
  "`cmake -S vendor/llama.cpp -B /work/mtmd-build -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF " +
  "&& cmake --build /work/mtmd-build --target llama-mtmd-cli -j2`";
const MARKER = "<<LLAMA_NAPI_RESPONSE>>";
const N_PREDICT = 8;

/**
 * Runs llama-mtmd-cli in single-turn mode (greedy, N_PREDICT tokens) and returns the bytes of its
 * response: what follows its MTMD_TEST_RESPONSE_MARKER line and the "\n" eval_message() prints,
 * without the "\n\n" main() prints at the end.
 */
async function runCli(projector: string, media: { image: string } | { audio: string }, prompt: string): Promise<Buffer> {
  const args = ["-m", files.text, "--mmproj", projector, ...("image" in media ? ["--image", media.image] : ["--audio", media.audio])];
  args.push("-p", prompt, "--temp", "0", "-n", String(N_PREDICT), "-t", "2", "-c", "1024", "--seed", "1");
  const { stdout } = await promisify(execFile)(CLI, args, {
    encoding: "buffer",
    env: { ...process.env, MTMD_TEST_RESPONSE_MARKER: MARKER },
    timeout: 180_000,
    maxBuffer: 64 << 20,
  });
  const head = Buffer.from(`${MARKER}\n\n`);
  const at = stdout.indexOf(head);
  expect(at, `llama-mtmd-cli printed no ${MARKER}: ${stdout.toString().slice(0, 500)}`).toBeGreaterThanOrEqual(0);
  const body = stdout.subarray(at + head.length);
  expect(body.subarray(body.length - 2).toString()).toBe("\n\n");
  return body.subarray(0, body.length - 2);
}

/**
 * The prompt llama-mtmd-cli builds for `-p prompt` with one media file (mtmd-cli.cpp, main and
 * eval_message): the marker is put before the prompt (no newline), the model's chat template
 * (Jinja, common_chat_format_single with an empty history: common_chat_templates_apply with
 * add_bos, which strips a leading BOS text) renders it as one user message with the generation
 * prompt, and mtmd_tokenize_from_parts tokenizes it with parse_special and a BOS (add_special).
 * The same as parts: the text before the marker, the media, the text after it.
 */
async function cliPromptParts(m: Model, prompt: string, media: { image: Uint8Array } | { audio: Uint8Array }): Promise<PromptPart[]> {
  let text = await renderChat(m, [{ role: "user", content: `<__media__>${prompt}` }]);
  const { bos, addBos, eos, addEos } = m.specialTokens;
  const bosText = bos === null ? "" : m.tokenToPiece(bos, { special: true });
  const eosText = eos === null ? "" : m.tokenToPiece(eos, { special: true });
  if (addBos && bosText !== "" && text.startsWith(bosText)) text = text.slice(bosText.length);
  if (addEos && eosText !== "" && text.endsWith(eosText)) text = text.slice(0, -eosText.length);
  const [before, after, ...rest] = text.split("<__media__>");
  expect(rest).toEqual([]);
  return [before!, media, after!];
}

/** Greedy N_PREDICT tokens after the parts, as the bytes llama-mtmd-cli prints for them (common_token_to_piece, special pieces shown; an end-of-generation token printed as "\n"). */
async function napiResponse(m: Model, parts: PromptPart[]): Promise<{ bytes: Buffer; tokens: number[] }> {
  const context = await m.createContext({ contextSize: 1024, threads: 2 });
  const session = context.createSession();
  try {
    await session.prompt(parts, { addSpecial: true, parseSpecial: true });
    const { tokens } = await session.generate({ maxTokens: N_PREDICT, temperature: 0 }).collect();
    const pieces = tokens.map((t) => (m.isEndOfGeneration(t) ? Buffer.from("\n") : Buffer.from(m.tokenToBytes(t, { special: true }))));
    return { bytes: Buffer.concat(pieces), tokens };
  } finally {
    session.dispose();
    context.dispose();
  }
}

describe("greedy generation against llama-mtmd-cli (vendored llama.cpp)", () => {
  it("renders the prompt as llama-mtmd-cli does", async () => {
    const parts = await cliPromptParts(model, "Describe this image.", { image: new Uint8Array(1) });
    // LLAMA2_CHAT_TEMPLATE: bos_token + "[INST] " + content.strip() + " [/INST]"; the BOS is added by tokenization.
    expect([parts[0], parts[2]]).toEqual(["[INST] ", "Describe this image. [/INST]"]);
  });

  it("generates the same tokens after an image", async (ctx) => {
    if (!fs.existsSync(CLI)) ctx.skip(`no llama-mtmd-cli at ${CLI}: ${CLI_HELP}`);
    const [w, h, seed] = [112, 112, 9];
    const png = encodePng(w, h, testImagePixels(w, h, seed));
    const file = path.join(tmp, "image.png");
    fs.writeFileSync(file, png);
    const prompt = "Describe this image.";
    const cli = await runCli(files.vision, { image: file }, prompt);
    const napi = await napiResponse(model, await cliPromptParts(model, prompt, { image: png }));
    console.log(`image: llama-mtmd-cli ${JSON.stringify(cli.toString())}, llama-napi ${JSON.stringify(napi.bytes.toString())} (tokens ${napi.tokens.join(" ")})`);
    expect(napi.tokens.length).toBeGreaterThan(0);
    expect(napi.bytes.toString("latin1")).toBe(cli.toString("latin1"));
    // Not a text-only agreement: another image changes what is generated.
    const other = await napiResponse(model, await cliPromptParts(model, prompt, { image: encodePng(w, h, testImagePixels(w, h, seed + 1)) }));
    expect(other.bytes.equals(napi.bytes)).toBe(false);
  }, 240_000);

  it("generates the same tokens after audio", async (ctx) => {
    if (!fs.existsSync(CLI)) ctx.skip(`no llama-mtmd-cli at ${CLI}: ${CLI_HELP}`);
    const wav = encodeWav(testToneSamples(1));
    const file = path.join(tmp, "tone.wav");
    fs.writeFileSync(file, wav);
    const prompt = "What is this sound?";
    const cli = await runCli(files.audio, { audio: file }, prompt);
    const audioModel = await loadModel(files.text);
    await audioModel.loadProjector(files.audio, { threads: 2 });
    try {
      const napi = await napiResponse(audioModel, await cliPromptParts(audioModel, prompt, { audio: wav }));
      console.log(`audio: llama-mtmd-cli ${JSON.stringify(cli.toString())}, llama-napi ${JSON.stringify(napi.bytes.toString())} (tokens ${napi.tokens.join(" ")})`);
      expect(napi.tokens.length).toBeGreaterThan(0);
      expect(napi.bytes.toString("latin1")).toBe(cli.toString("latin1"));
      const quieter = await napiResponse(audioModel, await cliPromptParts(audioModel, prompt, { audio: encodeWav(testToneSamples(1).map((x) => x * 0.25)) }));
      expect(quieter.bytes.equals(napi.bytes)).toBe(false);
    } finally {
      audioModel.dispose();
    }
  }, 240_000);
});

// ---------------------------------------------------------------------------------------------
// The embedding libmtmd itself makes (media-bench, bench/llama-tools: llama-mtmd-cli's flow from a
// file: mtmd_helper_bitmap_init_from_file, mtmd_tokenize, mtmd_encode_chunk, mtmd_get_output_embd)

const MEDIA_BENCH = process.env.LLAMA_MEDIA_BENCH || path.join(repoRoot, "bench", ".work", "llama-build", "bin", "media-bench");

describe("model.encodeMedia against libmtmd's own embedding (media-bench built from the vendored tree)", () => {
  it("is the same embedding within 1e-4, for an image and for audio", async (ctx) => {
    if (!fs.existsSync(MEDIA_BENCH)) ctx.skip(`no media-bench at ${MEDIA_BENCH}: \`npm run bench -- --suite media\` builds it (or set LLAMA_MEDIA_BENCH)`);
    const audioModel = await loadModel(files.text);
    await audioModel.loadProjector(files.audio, { threads: 2 });
    try {
      const w = 150;
      const h = 90;
      const cases = [
        { kind: "image" as const, m: model, projector: files.vision, bytes: encodePng(w, h, testImagePixels(w, h, 11)), file: path.join(tmp, "oracle.png") },
        { kind: "audio" as const, m: audioModel, projector: files.audio, bytes: encodeWav(testToneSamples(1.5)), file: path.join(tmp, "oracle.wav") },
      ];
      for (const c of cases) {
        fs.writeFileSync(c.file, c.bytes);
        const out = path.join(tmp, `${c.kind}.embd`);
        const args = ["-m", files.text, "--mmproj", c.projector, `--${c.kind}`, c.file, "-p", "<__media__>", "-r", "1", "-t", "2", "-c", "1024", "--embd-out", out];
        await promisify(execFile)(MEDIA_BENCH, args, { timeout: 120_000 });
        const theirs = new Float32Array(new Uint8Array(fs.readFileSync(out)).buffer);
        const ours = await c.m.encodeMedia(c.kind === "image" ? { image: c.bytes } : { audio: c.bytes });
        console.log(`${c.kind}: ${ours.tokens} x ${ours.width}, max |diff| ${maxAbsDiff(ours.embeddings, theirs).toExponential(2)}`);
        expect(theirs.length).toBe(ours.tokens * ours.width);
        expect(maxAbsDiff(ours.embeddings, theirs)).toBeLessThanOrEqual(1e-4);
      }
      // Not a match by construction: another image gives another embedding.
      const other = await model.encodeMedia({ image: encodePng(w, h, testImagePixels(w, h, 12)) });
      const first = new Float32Array(new Uint8Array(fs.readFileSync(path.join(tmp, "image.embd"))).buffer);
      expect(maxAbsDiff(other.embeddings, first)).toBeGreaterThan(1e-3);
    } finally {
      audioModel.dispose();
    }
  }, 240_000);
});
