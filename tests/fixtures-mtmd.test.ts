/**
 * The random multimodal projectors (src/fixtures/mtmd.ts): the "gemma3" vision and "ultravox"
 * audio layouts that llama.cpp's libmtmd reads (tools/mtmd/clip.cpp), checked with our GGUF
 * reader and with @huggingface/gguf; and the PNG and WAV files written to feed them.
 *
 * With LLAMA_MTMD_CLI set to a llama-mtmd-cli binary built from vendor/llama.cpp, llama.cpp
 * itself loads each projector with a paired random Llama text model and describes an image and
 * a sound (otherwise that test is skipped: the addon does not link libmtmd yet).
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { inflateSync } from "node:zlib";

import { gguf } from "@huggingface/gguf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  AUDIO_PROJECTOR_DEFAULTS,
  MTMD_ENCODER_DEFAULTS,
  VISION_PROJECTOR_DEFAULTS,
  WHISPER_POSITIONS,
  audioTokensPerWindow,
  encodePng,
  encodeWav,
  testImagePixels,
  testToneSamples,
  visionTokenCount,
  writeAudioProjector,
  writeVisionProjector,
  type AudioProjectorOptions,
  type VisionProjectorOptions,
} from "../src/fixtures/mtmd.js";
import { LLAMA2_CHAT_TEMPLATE, writeRandomLlama } from "../src/fixtures/llama.js";
import { GgmlType, metadataValues, readGguf, readTensorFloats, type GgufFile } from "../src/gguf/index.js";
import { GGUF_SCALAR_TYPE_IDS } from "../src/gguf/types.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-mtmd-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const sha256 = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");

const TEXT_EMBD = 96;
const VISION: VisionProjectorOptions = { textEmbd: TEXT_EMBD, seed: 21 };
const AUDIO: AudioProjectorOptions = { textEmbd: TEXT_EMBD, seed: 22 };
const visionFile = path.join(tmp, "vision.gguf");
const audioFile = path.join(tmp, "audio.gguf");

beforeAll(async () => {
  await writeVisionProjector(visionFile, VISION);
  await writeAudioProjector(audioFile, AUDIO);
});

/** The pre-norm ViT block clip.cpp's build_vit reads, as [name, ggml shape] (Whisper's k has no bias). */
function block(prefix: string, il: number, d: number, ff: number, keyBias: boolean): [string, number[]][] {
  const b = `${prefix}.blk.${il}`;
  return [
    [`${b}.ln1.weight`, [d]], [`${b}.ln1.bias`, [d]],
    [`${b}.attn_q.weight`, [d, d]], [`${b}.attn_q.bias`, [d]],
    [`${b}.attn_k.weight`, [d, d]], ...(keyBias ? [[`${b}.attn_k.bias`, [d]] as [string, number[]]] : []),
    [`${b}.attn_v.weight`, [d, d]], [`${b}.attn_v.bias`, [d]],
    [`${b}.attn_out.weight`, [d, d]], [`${b}.attn_out.bias`, [d]],
    [`${b}.ln2.weight`, [d]], [`${b}.ln2.bias`, [d]],
    [`${b}.ffn_up.weight`, [d, ff]], [`${b}.ffn_up.bias`, [ff]],
    [`${b}.ffn_down.weight`, [ff, d]], [`${b}.ffn_down.bias`, [d]],
  ];
}

const { nEmbd: D, nLayer: L, nFf: FF, nHead } = MTMD_ENCODER_DEFAULTS;

/** Every tensor of the default vision projector, in file order. */
function expectedVisionTensors(): [string, number[]][] {
  const { imageSize, patchSize: P } = VISION_PROJECTOR_DEFAULTS;
  return [
    ["v.patch_embd.weight", [P, P, 3, D]],
    ["v.patch_embd.bias", [D]],
    ["v.position_embd.weight", [D, (imageSize / P) ** 2]],
    ...Array.from({ length: L }, (_, il) => block("v", il, D, FF, true)).flat(),
    ["v.post_ln.weight", [D]],
    ["v.post_ln.bias", [D]],
    ["mm.soft_emb_norm.weight", [D]],
    ["mm.input_projection.weight", [TEXT_EMBD, D]],
  ];
}

/** Every tensor of the default audio projector, in file order. */
function expectedAudioTensors(): [string, number[]][] {
  const { nMelBins: M, stackFactor: S, projectorHidden: H } = AUDIO_PROJECTOR_DEFAULTS;
  return [
    ["a.conv1d.1.weight", [3, M, D]],
    ["a.conv1d.1.bias", [1, D]],
    ["a.conv1d.2.weight", [3, D, D]],
    ["a.conv1d.2.bias", [1, D]],
    ["a.position_embd.weight", [D, 1500]],
    ...Array.from({ length: L }, (_, il) => block("a", il, D, FF, false)).flat(),
    ["a.post_ln.weight", [D]],
    ["a.post_ln.bias", [D]],
    ["mm.a.norm_pre.weight", [D * S]],
    ["mm.a.mlp.1.weight", [D * S, 2 * H]],
    ["mm.a.norm_mid.weight", [H]],
    ["mm.a.mlp.2.weight", [H, TEXT_EMBD]],
  ];
}

const tensorShapes = (file: GgufFile) => file.tensors.map((t) => [t.name, t.shape]);

describe("writeVisionProjector", () => {
  it("writes the gemma3 (SigLIP) layout clip.cpp loads", async () => {
    const file = await readGguf(visionFile);
    const { imageSize, patchSize, mergeFactor } = VISION_PROJECTOR_DEFAULTS;
    expect(metadataValues(file)).toEqual({
      "general.architecture": "clip",
      "general.type": "mmproj",
      "general.name": `random-gemma3-mmproj-${D}x${L}-${imageSize}px-to${TEXT_EMBD}-seed21`,
      "general.file_type": 0,
      "clip.has_vision_encoder": true,
      "clip.projector_type": "gemma3",
      "clip.use_gelu": true,
      "clip.vision.projection_dim": TEXT_EMBD,
      "clip.vision.embedding_length": D,
      "clip.vision.feed_forward_length": FF,
      "clip.vision.block_count": L,
      "clip.vision.attention.head_count": nHead,
      "clip.vision.attention.layer_norm_epsilon": Math.fround(1e-6),
      "clip.vision.image_size": imageSize,
      "clip.vision.patch_size": patchSize,
      "clip.vision.image_mean": [0.5, 0.5, 0.5],
      "clip.vision.image_std": [0.5, 0.5, 0.5],
      "clip.vision.projector.scale_factor": mergeFactor,
    });
    // clip.cpp reads u32 keys with gguf_get_val_u32 and f32 with gguf_get_val_f32: the types matter.
    expect(file.metadata["clip.vision.image_size"].type).toBe("uint32");
    expect(file.metadata["clip.vision.attention.layer_norm_epsilon"].type).toBe("float32");
    expect(file.metadata["clip.vision.image_mean"]).toMatchObject({ type: "array", itemType: "float32" });
    expect(tensorShapes(file)).toEqual(expectedVisionTensors());
    for (const t of file.tensors) expect(t.type, t.name).toBe(GgmlType.F32);
    expect(visionTokenCount(VISION)).toBe((imageSize / patchSize / mergeFactor) ** 2);
  });

  it("has weights of the intended scale: norms near 1, matrices near 1/sqrt(fan-in)", async () => {
    const file = await readGguf(visionFile);
    const stats = async (name: string) => {
      const v = await readTensorFloats(visionFile, file.tensors.find((t) => t.name === name)!);
      const mean = v.reduce((s, x) => s + x, 0) / v.length;
      return { mean, std: Math.sqrt(v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length) };
    };
    const norm = await stats("mm.soft_emb_norm.weight");
    expect(norm.mean).toBeCloseTo(1, 1);
    const proj = await stats("mm.input_projection.weight");
    expect(proj.mean).toBeCloseTo(0, 1);
    expect(proj.std).toBeGreaterThan(0.8 / Math.sqrt(D));
    expect(proj.std).toBeLessThan(1.2 / Math.sqrt(D));
  });
});

describe("writeAudioProjector", () => {
  it("writes the ultravox (Whisper encoder) layout clip.cpp loads", async () => {
    const file = await readGguf(audioFile);
    const { nMelBins, stackFactor } = AUDIO_PROJECTOR_DEFAULTS;
    expect(metadataValues(file)).toEqual({
      "general.architecture": "clip",
      "general.type": "mmproj",
      "general.name": `random-ultravox-mmproj-${D}x${L}-mel${nMelBins}-to${TEXT_EMBD}-seed22`,
      "general.file_type": 0,
      "clip.has_audio_encoder": true,
      "clip.projector_type": "ultravox",
      "clip.audio.projection_dim": TEXT_EMBD,
      "clip.audio.embedding_length": D,
      "clip.audio.feed_forward_length": FF,
      "clip.audio.block_count": L,
      "clip.audio.attention.head_count": nHead,
      "clip.audio.attention.layer_norm_epsilon": Math.fround(1e-5),
      "clip.audio.num_mel_bins": nMelBins,
      "clip.audio.projector.stack_factor": stackFactor,
    });
    expect(tensorShapes(file)).toEqual(expectedAudioTensors());
    expect(WHISPER_POSITIONS).toBe(1500);
    // A 30-second window: 3000 mel frames, halved by the stride-2 convolution, stacked.
    expect(audioTokensPerWindow(AUDIO)).toBe(1500 / stackFactor);
  });
});

describe("both projectors", () => {
  const files = () => [
    ["vision", visionFile],
    ["audio", audioFile],
  ];

  it("read the same with @huggingface/gguf: keys, types, values, tensor names, shapes, types and offsets", async () => {
    for (const [what, p] of files()) {
      const [ours, theirs] = await Promise.all([readGguf(p), gguf(p, { allowLocalFile: true, typedMetadata: true })]);
      expect(theirs.metadata.version, what).toBe(3);
      expect(BigInt(Object.keys(ours.metadata).length), what).toBe(theirs.metadata.kv_count);
      expect(BigInt(ours.tensors.length), what).toBe(theirs.metadata.tensor_count);
      for (const [key, value] of Object.entries(ours.metadata)) {
        const other = theirs.typedMetadata[key];
        expect(other, key).toBeDefined();
        if (value.type === "array") {
          expect(other.type, key).toBe(9);
          expect(other.subType, key).toBe(GGUF_SCALAR_TYPE_IDS[value.itemType]);
          expect(other.value, key).toEqual(value.value);
        } else {
          expect(other.type, key).toBe(GGUF_SCALAR_TYPE_IDS[value.type]);
          expect(other.value, key).toEqual(value.value);
        }
      }
      expect(theirs.tensorInfos.map((o) => ({ name: o.name, shape: o.shape, type: o.dtype as number, offset: o.offset }))).toEqual(
        ours.tensors.map((t) => ({ name: t.name, shape: t.shape.map(BigInt), type: t.type as number, offset: BigInt(t.offset - ours.dataOffset) })),
      );
      // The data section ends where the last tensor does (padded to the alignment).
      const last = ours.tensors[ours.tensors.length - 1];
      expect(ours.fileSize - (last.offset + last.byteSize)).toBeLessThan(ours.alignment);
    }
  });

  it("are deterministic; the seed changes the weights, F16 the matrix and kernel types only", async () => {
    const again = path.join(tmp, "vision-again.gguf");
    await writeVisionProjector(again, VISION);
    expect(sha256(again)).toBe(sha256(visionFile));
    const other = path.join(tmp, "vision-other.gguf");
    await writeVisionProjector(other, { ...VISION, seed: 99 });
    expect(sha256(other)).not.toBe(sha256(visionFile));

    const half = path.join(tmp, "audio-f16.gguf");
    await writeAudioProjector(half, { ...AUDIO, type: "f16" });
    const file = await readGguf(half);
    expect(metadataValues(file)["general.file_type"]).toBe(1);
    const f32 = new Set(["a.conv1d.1.bias", "a.conv1d.2.bias", "a.position_embd.weight"]);
    for (const t of file.tensors) {
      expect(t.type, t.name).toBe(t.shape.length >= 2 && !f32.has(t.name) ? GgmlType.F16 : GgmlType.F32);
    }
    expect(tensorShapes(file)).toEqual(expectedAudioTensors());
  });

  it("follow the shape options and reject inconsistent ones", async () => {
    const p = path.join(tmp, "custom.gguf");
    await writeVisionProjector(p, { textEmbd: 32, seed: 1, imageSize: 64, patchSize: 16, mergeFactor: 4, nEmbd: 32, nHead: 2, nLayer: 1, nFf: 48 });
    const v = await readGguf(p);
    expect(metadataValues(v)).toMatchObject({ "clip.vision.image_size": 64, "clip.vision.patch_size": 16, "clip.vision.block_count": 1 });
    expect(v.tensors.find((t) => t.name === "v.position_embd.weight")?.shape).toEqual([32, 16]);
    expect(visionTokenCount({ textEmbd: 32, seed: 1, imageSize: 64, patchSize: 16, mergeFactor: 4 })).toBe(1);
    await writeAudioProjector(p, { textEmbd: 32, seed: 1, nMelBins: 80, stackFactor: 8, projectorHidden: 16 });
    const a = await readGguf(p);
    expect(Object.fromEntries(tensorShapes(a))).toMatchObject({
      "a.conv1d.1.weight": [3, 80, D],
      "mm.a.mlp.1.weight": [8 * D, 32],
      "mm.a.mlp.2.weight": [16, 32],
    });
    expect(audioTokensPerWindow({ textEmbd: 32, seed: 1, stackFactor: 8 })).toBe(187);

    const bad = (promise: Promise<unknown>) => expect(promise).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await bad(writeVisionProjector(p, { ...VISION, patchSize: 15 })); // does not divide 112
    await bad(writeVisionProjector(p, { ...VISION, mergeFactor: 3 })); // does not divide 8 patches a side
    await bad(writeVisionProjector(p, { ...VISION, nFf: D })); // clip.cpp would swap ffn_up and ffn_down
    await bad(writeVisionProjector(p, { ...VISION, nHead: 5 }));
    await bad(writeVisionProjector(p, { ...VISION, textEmbd: 0 }));
    await bad(writeAudioProjector(p, { ...AUDIO, nMelBins: 300 }));
    await bad(writeAudioProjector(p, { ...AUDIO, seed: 0.5 }));
    await bad(writeAudioProjector(p, { ...AUDIO, type: "q8_0" as "f16" }));
  });
});

/** The chunks of a PNG file, with their CRCs checked. */
function pngChunks(png: Buffer): { type: string; data: Buffer }[] {
  expect(png.subarray(0, 8).toString("hex")).toBe("89504e470d0a1a0a");
  const chunks = [];
  for (let at = 8; at < png.length; ) {
    const length = png.readUInt32BE(at);
    const type = png.toString("latin1", at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + length);
    const crc = png.readUInt32BE(at + 8 + length);
    // zlib's crc32 is in Node 20.15+ only: check against a bit-by-bit CRC-32 instead.
    let c = 0xffffffff;
    for (const byte of png.subarray(at + 4, at + 8 + length)) {
      c ^= byte;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    }
    expect(crc, type).toBe((c ^ 0xffffffff) >>> 0);
    chunks.push({ type, data });
    at += 12 + length;
  }
  return chunks;
}

describe("media files", () => {
  it("encodePng writes an RGB PNG whose pixels decode back", () => {
    const [w, h] = [37, 21];
    const rgb = testImagePixels(w, h, 3);
    const chunks = pngChunks(encodePng(w, h, rgb));
    expect(chunks.map((c) => c.type)).toEqual(["IHDR", "IDAT", "IEND"]);
    const ihdr = chunks[0].data;
    expect([ihdr.readUInt32BE(0), ihdr.readUInt32BE(4), ...ihdr.subarray(8)]).toEqual([w, h, 8, 2, 0, 0, 0]);
    const raw = inflateSync(chunks[1].data);
    expect(raw.length).toBe(h * (3 * w + 1));
    for (let y = 0; y < h; y++) {
      expect(raw[y * (3 * w + 1)]).toBe(0); // filter "none"
      expect(Buffer.from(raw.subarray(y * (3 * w + 1) + 1, (y + 1) * (3 * w + 1)))).toEqual(Buffer.from(rgb.subarray(3 * w * y, 3 * w * (y + 1))));
    }
    expect(testImagePixels(w, h, 3)).toEqual(rgb);
    expect(testImagePixels(w, h, 4)).not.toEqual(rgb);
    expect(() => encodePng(2, 2, new Uint8Array(11))).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
  });

  it("encodeWav writes 16 kHz mono 16-bit PCM", () => {
    const samples = testToneSamples(1);
    expect(samples.length).toBe(16000);
    const wav = encodeWav(samples);
    expect(wav.length).toBe(44 + 2 * 16000);
    expect(wav.toString("latin1", 0, 4) + wav.toString("latin1", 8, 16) + wav.toString("latin1", 36, 40)).toBe("RIFFWAVEfmt data");
    expect(wav.readUInt32LE(4)).toBe(wav.length - 8);
    expect([wav.readUInt16LE(20), wav.readUInt16LE(22), wav.readUInt32LE(24), wav.readUInt16LE(34), wav.readUInt32LE(40)]).toEqual([1, 1, 16000, 16, 32000]);
    let peak = 0;
    for (let i = 0; i < samples.length; i++) {
      expect(wav.readInt16LE(44 + 2 * i)).toBe(Math.round(32767 * samples[i]));
      peak = Math.max(peak, Math.abs(samples[i]));
    }
    expect(peak).toBeGreaterThan(0.49);
    expect(peak).toBeLessThanOrEqual(0.5);
  });
});

const cli = process.env.LLAMA_MTMD_CLI;

describe.skipIf(!cli)("llama.cpp's llama-mtmd-cli runs the projectors with a paired random Llama (LLAMA_MTMD_CLI)", () => {
  const text = path.join(tmp, "text.gguf");
  const image = path.join(tmp, "image.png");
  const sound = path.join(tmp, "sound.wav");

  beforeAll(async () => {
    await writeRandomLlama(text, {
      nEmbd: TEXT_EMBD, nHead: 4, nHeadKv: 2, nLayer: 2, nCtx: 1024, nFf: 192, seed: 23, chatTemplate: LLAMA2_CHAT_TEMPLATE,
    });
    fs.writeFileSync(image, encodePng(96, 80, testImagePixels(96, 80, 1)));
    fs.writeFileSync(sound, encodeWav(testToneSamples(1)));
  });

  /** Runs llama-mtmd-cli (-v: the debug log says how many embeddings the encoder made). */
  const run = (projector: string, media: string[]) => {
    const args = ["-m", text, "--mmproj", projector, ...media, "-p", "describe", "-n", "8", "--temp", "0", "-t", "2", "-c", "1024", "-v"];
    const result = spawnSync(cli!, args, { encoding: "utf8", timeout: 120_000 });
    expect(result.status, result.stderr.slice(-2000)).toBe(0);
    expect(result.stderr).not.toMatch(/failed|error:/i);
    // Eight generated tokens of a random model: some text.
    expect(result.stdout.trim().length).toBeGreaterThan(0);
    return result.stderr;
  };

  it("encodes an image into visionTokenCount embeddings and decodes them without causal masking", () => {
    const log = run(visionFile, ["--image", image]);
    expect(log).toContain("load_hparams: projector:          gemma3");
    expect(log).toContain(`clip_encode: output embedding shape [${TEXT_EMBD}, ${visionTokenCount(VISION)}, 1]`);
    expect(log).toContain("set_causal_attn: value = 0");
    expect(log).toContain("add_text: <start_of_image>");
  }, 180_000);

  it("encodes a second of audio into one window of audioTokensPerWindow embeddings", () => {
    const log = run(audioFile, ["--audio", sound]);
    expect(log).toContain("load_hparams: projector:          ultravox");
    expect(log).toContain(`clip_encode: output embedding shape [${TEXT_EMBD}, ${audioTokensPerWindow(AUDIO)}, 1]`);
  }, 180_000);

  it("refuses a projector of another width, and aborts on Ultravox's own stack factor 8 (why the default is 4)", async () => {
    const narrow = path.join(tmp, "vision-narrow.gguf");
    await writeVisionProjector(narrow, { ...VISION, textEmbd: 64 });
    const args = (projector: string, media: string[]) => ["-m", text, "--mmproj", projector, ...media, "-p", "describe", "-n", "1", "-t", "2"];
    // mtmd_init_from_file fails ("mismatch between text model (n_embd = 96) and mmproj (n_embd = 64)");
    // llama-mtmd-cli then exit(1)s, often before its asynchronous log has printed the reason.
    const mismatch = spawnSync(cli!, args(narrow, ["--image", image]), { encoding: "utf8", timeout: 120_000 });
    expect(mismatch.status).toBe(1);

    // clip.cpp pads 1500 encoder frames to 1504 = 188 stacks of 8, but clip_n_output_tokens counts
    // ⌈3000/8⌉/2 = 187 and GGML_ABORTs: a process abort, not an error return.
    const eight = path.join(tmp, "audio-stack8.gguf");
    await writeAudioProjector(eight, { ...AUDIO, stackFactor: 8 });
    const aborted = spawnSync(cli!, args(eight, ["--audio", sound]), { encoding: "utf8", timeout: 120_000 });
    expect(aborted.signal).toBe("SIGABRT");
    expect(aborted.stderr).toContain("Invalid number of output tokens"); // GGML_ABORT's own message, printed synchronously
  }, 180_000);
});
