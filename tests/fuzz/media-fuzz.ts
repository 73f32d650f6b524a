/**
 * The media fuzz: mutants of multimodal projectors and of media files, each run in a watched
 * child process (media-runner.ts) through llama.cpp's libmtmd.
 *
 *  - projector mutants: structure-aware mutations of the "gemma3" vision and "ultravox" audio
 *    fixture projectors (src/fixtures/mtmd.ts): clip.* hyperparameters set to edge values,
 *    retyped, dropped or added; clip.projector_type swapped for another of libmtmd's types;
 *    tensor shapes, types and names changed (the data laid out again by structure.ts's
 *    writeParts), and a share of structure.ts's generic mutations. Each is loaded with
 *    `loadModel(text, { projector })` and, when it loads, given a prompt with one image (or
 *    audio) and asked for 2 tokens.
 *  - media mutants: byte flips, truncations, splices and format-aware field edits of PNG, JPEG,
 *    WAV and MP3 seeds, fed to a model that holds a projector of the matching kind, through a
 *    prompt and 2 generated tokens (and, for some, model.encodeMedia).
 *
 * Every mutant must work or be refused with a LlamaError; a crash (the child dies) or a hang
 * (no result in time) is a failure, and its bytes can be saved for reproduction. Mutant `index`
 * of a seed is always the same bytes.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { LLAMA_VOCAB_PATHS, writeRandomLlama } from "../../src/fixtures/llama.js";
import { encodePng, encodeWav, testImagePixels, testToneSamples, writeAudioProjector, writeVisionProjector } from "../../src/fixtures/mtmd.js";
import { ggmlTypeInfo } from "../../src/gguf/types.js";
import { mulberry32 } from "../helpers/math.js";
import type { MediaRunRequest } from "./media-runner.js";
import { cutVocab } from "./native/make-seeds.js";
import { mutateStructure, parseGguf, writeParts, type GgufParts } from "./structure.js";
import { runWatchedChild } from "./watch-child.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../..");

// ---------------------------------------------------------------------------------------------
// Fixtures

/** The text model's width, which both projectors feed. */
export const MEDIA_FUZZ_TEXT_EMBD = 64;
/** libmtmd's own test media (vendored llama.cpp): a real JPEG photo and a real MP3 clip. */
export const VENDOR_JPEG = path.join(repoRoot, "vendor/llama.cpp/tools/mtmd/test-1.jpeg");
export const VENDOR_MP3 = path.join(repoRoot, "vendor/llama.cpp/tools/mtmd/test-2.mp3");

export interface MediaFuzzFixtures {
  text: string;
  vision: string;
  audio: string;
  png: string;
  jpeg: string;
  wav: string;
  mp3: string;
}

/**
 * Writes the fuzz fixtures into `dir`: a small Llama text model (300-token vocabulary) of width
 * 64, the gemma3 and ultravox projectors that feed it, a PNG and a WAV; the JPEG and the MP3 are
 * libmtmd's test files (the MP3 cut to `mp3Bytes`, whole MPEG frames, to keep each run short).
 */
export async function writeMediaFuzzFixtures(dir: string, opts: { mp3Bytes?: number } = {}): Promise<MediaFuzzFixtures> {
  fs.mkdirSync(dir, { recursive: true });
  const f: MediaFuzzFixtures = {
    text: path.join(dir, "text.gguf"),
    vision: path.join(dir, "vision.gguf"),
    audio: path.join(dir, "audio.gguf"),
    png: path.join(dir, "seed.png"),
    jpeg: path.join(dir, "seed.jpeg"),
    wav: path.join(dir, "seed.wav"),
    mp3: path.join(dir, "seed.mp3"),
  };
  const spm = path.join(dir, ".spm-vocab.gguf");
  await cutVocab(LLAMA_VOCAB_PATHS.spm, spm, 300);
  await writeRandomLlama(f.text, { nEmbd: MEDIA_FUZZ_TEXT_EMBD, nHead: 4, nHeadKv: 2, nLayer: 1, nCtx: 2048, nFf: 128, seed: 41, vocab: spm });
  // Small encoders stored as f16 (tens of kilobytes: a failing mutant is small enough to keep).
  await writeVisionProjector(f.vision, { textEmbd: MEDIA_FUZZ_TEXT_EMBD, seed: 42, nEmbd: 16, nHead: 2, nFf: 32, nLayer: 1, imageSize: 28, patchSize: 7, type: "f16" });
  await writeAudioProjector(f.audio, { textEmbd: MEDIA_FUZZ_TEXT_EMBD, seed: 43, nEmbd: 4, nHead: 2, nFf: 8, nLayer: 1, nMelBins: 80, projectorHidden: 8, type: "f16" });
  fs.writeFileSync(f.png, encodePng(48, 40, testImagePixels(48, 40, 3)));
  fs.writeFileSync(f.wav, encodeWav(testToneSamples(0.5)));
  fs.copyFileSync(VENDOR_JPEG, f.jpeg);
  const mp3 = fs.readFileSync(VENDOR_MP3);
  fs.writeFileSync(f.mp3, opts.mp3Bytes === undefined ? mp3 : cutMp3(mp3, opts.mp3Bytes));
  return f;
}

/** The ID3 tag and the whole MPEG frames of `mp3` that fit in `limit` bytes. */
function cutMp3(mp3: Buffer, limit: number): Buffer {
  let at = 0;
  if (mp3.subarray(0, 3).toString("latin1") === "ID3") at = 10 + syncsafe(mp3, 6);
  while (at + 4 <= mp3.length) {
    const len = mpegFrameLength(mp3, at);
    if (len <= 0 || at + len > limit) break;
    at += len;
  }
  return mp3.subarray(0, at);
}

function syncsafe(b: Uint8Array, at: number): number {
  return ((b[at] & 0x7f) << 21) | ((b[at + 1] & 0x7f) << 14) | ((b[at + 2] & 0x7f) << 7) | (b[at + 3] & 0x7f);
}

/** The length of the MPEG-1/2 layer III frame at `at`, or 0 when there is none. */
function mpegFrameLength(b: Uint8Array, at: number): number {
  if (b[at] !== 0xff || (b[at + 1] & 0xe0) !== 0xe0) return 0;
  const version = (b[at + 1] >> 3) & 3; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
  const layer = (b[at + 1] >> 1) & 3; // 1: layer III
  const bitrateIndex = b[at + 2] >> 4;
  const rateIndex = (b[at + 2] >> 2) & 3;
  const padding = (b[at + 2] >> 1) & 1;
  if (layer !== 1 || bitrateIndex === 0 || bitrateIndex === 15 || rateIndex === 3 || version === 1) return 0;
  const v1 = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
  const v2 = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
  const rates = version === 3 ? [44100, 48000, 32000] : version === 2 ? [22050, 24000, 16000] : [11025, 12000, 8000];
  const bitrate = (version === 3 ? v1 : v2)[bitrateIndex] * 1000;
  return Math.floor(((version === 3 ? 144 : 72) * bitrate) / rates[rateIndex]) + padding;
}

// ---------------------------------------------------------------------------------------------
// Projector mutants

type Kv = GgufParts["kvs"][number];
type Value = Kv["value"];

const utf8 = new TextEncoder();
const text = new TextDecoder();
const GT = { U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9, U64: 10, I64: 11, F64: 12 } as const;

/** libmtmd's projector types (clip-impl.h PROJECTOR_TYPE_NAMES), and a few it does not know. */
export const PROJECTOR_TYPES = [
  "mlp", "ldp", "ldpv2", "resampler", "adapter", "qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger", "step3vl", "gemma3", "gemma3nv",
  "gemma3na", "gemma4v", "gemma4a", "gemma4uv", "gemma4ua", "phi4", "idefics3", "pixtral", "ultravox", "internvl", "llama4", "qwen2a", "qwen3a",
  "glma", "qwen2.5o", "voxtral", "meralion", "musicflamingo", "lfm2", "kimivl", "paddleocr", "lightonocr", "cogvlm", "janus_pro", "dots_ocr",
  "dots3note_v", "dots3note_a", "deepseekocr", "deepseekocr2", "deepseek4v", "lfm2a", "glm4v", "youtuvl", "yasa2", "kimik25", "nemotron_v2_vl",
  "exaone4_5", "hunyuanvl", "minicpmv4_6", "granite_speech", "mimovl", "minimax_m3", "granite4_vision", "mimo_audio", "parakeet",
  "qwen3tts_spkenc", "qwen3tts_gen", "pockettts_spkenc", "pockettts_gen", "muse-glimmer", "", "bogus", "GEMMA3",
];

/** Numeric clip.* keys clip.cpp reads (beside the ones the fixtures write), for added entries. */
const EXTRA_CLIP_KEYS = [
  "clip.vision.image_size", "clip.vision.patch_size", "clip.vision.projection_dim", "clip.vision.embedding_length", "clip.vision.feed_forward_length",
  "clip.vision.block_count", "clip.vision.attention.head_count", "clip.vision.attention.head_count_kv", "clip.vision.attention.head_dim",
  "clip.vision.attention.layer_norm_epsilon", "clip.vision.projector.scale_factor", "clip.vision.spatial_merge_size", "clip.vision.image_min_pixels",
  "clip.vision.image_max_pixels", "clip.vision.preproc_min_tiles", "clip.vision.preproc_max_tiles", "clip.vision.preproc_image_size",
  "clip.vision.n_wa_pattern", "clip.vision.window_size", "clip.vision.expert_used_count", "clip.vision.projector.query_side",
  "clip.vision.projector.window_side", "clip.minicpmv_version", "clip.minicpmv_query_num", "clip.audio.num_mel_bins", "clip.audio.projector.stack_factor",
  "clip.audio.chunk_size", "clip.audio.conv_kernel_size", "clip.audio.max_pos_emb", "clip.audio.projector.window_size",
  "clip.audio.projector.downsample_rate", "clip.audio.projector.head_count", "clip.audio.subsampling_factor", "clip.audio.embedding_length",
  "clip.audio.block_count", "clip.audio.attention.head_count", "clip.audio.projection_dim", "clip.audio.feed_forward_length",
  "clip.has_vision_encoder", "clip.has_audio_encoder", "clip.use_gelu", "clip.use_silu",
];
/** Array-valued clip.* keys. */
const ARRAY_CLIP_KEYS = ["clip.vision.image_mean", "clip.vision.image_std", "clip.vision.feature_layer", "clip.vision.image_grid_pinpoints", "clip.vision.wa_layer_indexes", "clip.audio.feature_layer"];

const EDGE = [0, 1, 2, 3, 4, 5, 7, 8, 13, 14, 15, 16, 28, 32, 48, 56, 63, 64, 65, 100, 111, 112, 113, 127, 128, 129, 224, 256, 257, 375, 750, 1000, 1499, 1500, 1501, 3000, 4096, 8192, 8193, 65535, 65536, 2 ** 31 - 1, 2 ** 32 - 1, -1, -2, -(2 ** 31)];
const EDGE_FLOAT = [0, -0, 1e-30, -1, 1e30, NaN, Infinity, -Infinity, 0.5, 1e-6, 3.4e38];
const TENSOR_TYPES = [0, 1, 30, 8, 2, 3, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 34, 35, 39, 40, 41];

export interface Mutant {
  description: string;
  bytes: Uint8Array;
}

/** Mutant `index` of a parsed projector (parseGguf of the base) for `seed`. */
export function mutateProjector(base: GgufParts, seed: number, index: number): Mutant {
  const random = mulberry32(seed * 6_151 + index * 92_821 + 5);
  // A share of structure.ts's generic mutations (offsets, string lengths, array counts, truncation).
  if (random() < 0.12) {
    const m = mutateStructure(base, seed + 1_000, index);
    return { description: `generic: ${m.description}`, bytes: m.bytes };
  }
  const int = (n: number) => Math.floor(random() * n);
  const pick = <X>(items: readonly X[]): X => items[int(items.length)];
  const p: GgufParts = { ...base, kvs: base.kvs.map((kv) => ({ ...kv })), tensors: base.tensors.map((t) => ({ ...t, dims: [...t.dims] })) };
  const r = random();
  const n = r < 0.55 ? 1 : r < 0.85 ? 2 : 3;
  const done: string[] = [];
  for (let k = 0; k < n; k++) done.push(projectorEdit(p, pick, int, random));
  let bytes = writeParts(p);
  if (random() < 0.04) {
    const end = int(bytes.length);
    bytes = bytes.subarray(0, end);
    done.push(`truncate at ${end}`);
  }
  return { description: done.join("; "), bytes };
}

function numberValue(type: number, num: number): Value {
  return { type, num } as Value;
}

function projectorEdit(p: GgufParts, pick: <X>(items: readonly X[]) => X, int: (n: number) => number, random: () => number): string {
  const kind = random();
  const keyOf = (kv: Kv) => text.decode(kv.key);
  const clipKvs = p.kvs.filter((kv) => keyOf(kv).startsWith("clip."));
  const numeric = clipKvs.filter((kv) => "num" in kv.value);
  const tensor = p.tensors.length > 0 ? pick(p.tensors) : undefined;
  const tname = tensor ? text.decode(tensor.name) : "";
  if (kind < 0.26 && numeric.length > 0) {
    // A hyperparameter set to an edge value, or near its own.
    const kv = pick(numeric);
    const old = (kv.value as { num: number }).num;
    const isFloat = kv.value.type === GT.F32 || kv.value.type === GT.F64;
    const v = isFloat ? pick(EDGE_FLOAT) : random() < 0.6 ? pick(EDGE) : pick([old + 1, old - 1, old * 2, Math.floor(old / 2), old * 4, 0]);
    kv.value = numberValue(kv.value.type === GT.BOOL ? pick([GT.BOOL, GT.U32]) : kv.value.type, v);
    return `${keyOf(kv)} = ${v}`;
  }
  if (kind < 0.34) {
    // clip.projector_type swapped (mostly for a real type: other graphs over these tensors).
    const kv = p.kvs.find((x) => keyOf(x) === "clip.projector_type");
    const type = pick(PROJECTOR_TYPES);
    if (kv) kv.value = { type: GT.STRING, str: utf8.encode(type) };
    else p.kvs.push({ key: utf8.encode("clip.projector_type"), value: { type: GT.STRING, str: utf8.encode(type) } });
    return `clip.projector_type = "${type}"`;
  }
  if (kind < 0.44) {
    // An added (or overridden) key clip.cpp reads.
    const key = random() < 0.85 ? pick(EXTRA_CLIP_KEYS) : pick(ARRAY_CLIP_KEYS);
    let value: Value;
    if (ARRAY_CLIP_KEYS.includes(key)) {
      const itemType = pick([GT.F32, GT.I32, GT.U32, GT.STRING]);
      const items = Array.from({ length: pick([0, 1, 2, 3, 4, 5, 7, 64]) }, () =>
        itemType === GT.STRING ? ({ type: GT.STRING, str: utf8.encode("x") } as Value) : numberValue(itemType, pick(itemType === GT.F32 ? EDGE_FLOAT : EDGE)),
      );
      value = { type: GT.ARRAY, itemType, items } as Value;
    } else {
      const type = pick([GT.U32, GT.U32, GT.I32, GT.F32, GT.BOOL, GT.STRING, GT.U64]);
      value = type === GT.STRING ? { type, str: utf8.encode(String(pick(EDGE))) } : numberValue(type, type === GT.F32 ? pick([...EDGE, ...EDGE_FLOAT]) : pick(EDGE));
    }
    const existing = p.kvs.find((x) => keyOf(x) === key);
    if (existing) existing.value = value;
    else p.kvs.push({ key: utf8.encode(key), value });
    return `set ${key} (type ${value.type}) = ${"num" in value ? value.num : "str" in value ? JSON.stringify(text.decode(value.str)) : `[${value.items.length} of type ${value.itemType}]`}`;
  }
  if (kind < 0.52 && clipKvs.length > 0) {
    // A clip.* entry dropped, duplicated or retyped.
    const kv = pick(clipKvs);
    const how = int(3);
    if (how === 0) {
      p.kvs.splice(p.kvs.indexOf(kv), 1);
      return `${keyOf(kv)} dropped`;
    }
    if (how === 1) {
      p.kvs.push({ ...kv });
      return `${keyOf(kv)} duplicated`;
    }
    const to = pick([GT.U8, GT.I8, GT.U16, GT.I16, GT.U32, GT.I32, GT.F32, GT.BOOL, GT.U64, GT.I64, GT.F64, GT.STRING]);
    const asNumber = "num" in kv.value ? kv.value.num : "str" in kv.value ? kv.value.str.length : kv.value.items.length;
    kv.value = to === GT.STRING ? { type: to, str: utf8.encode(String(asNumber)) } : numberValue(to, asNumber);
    return `${keyOf(kv)} retyped to ${to}`;
  }
  if (tensor && kind < 0.72) {
    // A tensor's shape: one dimension changed, dimensions added, dropped or swapped.
    const how = int(7);
    const d = int(tensor.dims.length);
    if (how === 0 && tensor.dims.length < 4) tensor.dims.push(pick([1n, 2n, 3n]));
    else if (how === 1 && tensor.dims.length > 1) tensor.dims.pop();
    else if (how === 2 && tensor.dims.length > 1) [tensor.dims[0], tensor.dims[1]] = [tensor.dims[1], tensor.dims[0]];
    else if (how === 3) tensor.dims[d] = 0n;
    else tensor.dims[d] = pick([1n, 2n, 3n, tensor.dims[d] + 1n, tensor.dims[d] - 1n, tensor.dims[d] * 2n, tensor.dims[d] / 2n, 7n, 16n, 64n, 65n, 128n, 1500n]);
    return `tensor ${tname} shape = [${tensor.dims.join(",")}]`;
  }
  if (tensor && kind < 0.86) {
    // A tensor's type, mostly one whose block fits its rows (the data laid out again).
    const fits = TENSOR_TYPES.filter((t) => (tensor.dims[0] ?? 1n) % BigInt(ggmlTypeInfo(t)?.blockSize ?? 1) === 0n);
    tensor.type = random() < 0.85 ? pick(fits) : pick(TENSOR_TYPES);
    return `tensor ${tname} type = ${tensor.type}`;
  }
  if (tensor) {
    // A tensor dropped, duplicated, renamed, or given the name of a layer that does not exist.
    const how = int(4);
    if (how === 0) p.tensors.splice(p.tensors.indexOf(tensor), 1);
    else if (how === 1) p.tensors.push({ ...tensor, dims: [...tensor.dims] });
    else if (how === 2) tensor.name = pick(p.tensors).name;
    else tensor.name = utf8.encode(tname.replace(/blk\.\d+/, `blk.${pick([1, 2, 7])}`).replace(/^(v|a)\.(patch_embd|post_ln|position_embd)/, "$1.pre_ln"));
    return `tensor ${tname} ${["dropped", "duplicated", "renamed to another's name", `renamed to ${text.decode(tensor.name)}`][how]}`;
  }
  return "nothing";
}

// ---------------------------------------------------------------------------------------------
// Media mutants

export type MediaKind = "png" | "jpeg" | "wav" | "mp3";

export function mediaKindOf(file: string): MediaKind {
  const ext = path.extname(file).slice(1).toLowerCase();
  if (ext === "jpg") return "jpeg";
  if (ext === "png" || ext === "jpeg" || ext === "wav" || ext === "mp3") return ext;
  throw new Error(`not a media seed: ${file}`);
}

/** Whether a media kind goes in an { audio } part (else { image }). */
export const isAudioKind = (k: MediaKind) => k === "wav" || k === "mp3";

/** Mutant `index` of the media file `base` (of kind `kind`) for `seed`. */
export function mutateMedia(base: Uint8Array, kind: MediaKind, seed: number, index: number): Mutant {
  const random = mulberry32(seed * 15_485_863 + index * 7_727 + 11);
  const int = (n: number) => Math.floor(random() * n);
  const pick = <X>(items: readonly X[]): X => items[int(items.length)];
  // Most of what a decoder reads first is in the first kilobytes.
  const head = Math.min(base.length, kind === "mp3" ? 4096 : 1024);
  const done: string[] = [];
  let bytes: Uint8Array = Uint8Array.from(base);
  const at = () => (random() < 0.7 ? int(Math.min(head, bytes.length)) : int(bytes.length));
  const r = random();
  const n = r < 0.6 ? 1 : r < 0.9 ? 2 : 3;
  for (let k = 0; k < n; k++) {
    const what = random();
    if (what < 0.15) {
      const end = random() < 0.5 ? int(head) : int(bytes.length);
      bytes = bytes.subarray(0, end);
      done.push(`truncate at ${end}`);
    } else if (what < 0.35) {
      const flips: string[] = [];
      for (let j = 1 + int(12); j > 0; j--) {
        const i = Math.min(at(), bytes.length - 1);
        if (i < 0) break;
        const mask = 1 << int(8);
        bytes[i] ^= mask;
        flips.push(`${i}^${mask}`);
      }
      done.push(`flip ${flips.join(",")}`);
    } else if (what < 0.45) {
      const sets: string[] = [];
      for (let j = 1 + int(4); j > 0; j--) {
        const i = Math.min(at(), bytes.length - 1);
        if (i < 0) break;
        bytes[i] = pick([0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe]);
        sets.push(`${i}=${bytes[i]}`);
      }
      done.push(`set ${sets.join(",")}`);
    } else if (what < 0.55) {
      // A range deleted, duplicated, or overwritten with another part of the file.
      const from = at();
      const len = 1 + int(random() < 0.5 ? 16 : 4096);
      const to = Math.min(bytes.length, from + len);
      const how = int(3);
      const out = how === 0 ? concat(bytes.subarray(0, from), bytes.subarray(to))
        : how === 1 ? concat(bytes.subarray(0, to), bytes.subarray(from, to), bytes.subarray(to))
        : (() => {
            const o = Uint8Array.from(bytes);
            const src = int(bytes.length);
            o.set(bytes.subarray(src, Math.min(bytes.length, src + (to - from))), from);
            return o;
          })();
      done.push(`${["delete", "duplicate", "overwrite"][how]} ${from}..${to}`);
      bytes = out;
    } else {
      const d = formatEdit(bytes, kind, pick, int, random);
      bytes = d.bytes;
      done.push(d.description);
    }
  }
  return { description: done.join("; "), bytes };
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), (at += p.length));
  return out;
}

/** Edits a field of the format's headers (image sizes, sample rates, chunk lengths, ...). */
function formatEdit(input: Uint8Array, kind: MediaKind, pick: <X>(items: readonly X[]) => X, int: (n: number) => number, random: () => number): Mutant {
  const bytes = Uint8Array.from(input);
  const view = new DataView(bytes.buffer);
  const fits = (at: number, width: number) => at >= 0 && at + width <= bytes.length;
  const set = (at: number, width: 1 | 2 | 4, v: number, le: boolean, name: string): Mutant => {
    if (!fits(at, width)) return { description: `${name}: out of range`, bytes };
    if (width === 1) view.setUint8(at, v & 0xff);
    else if (width === 2) view.setUint16(at, v & 0xffff, le);
    else view.setUint32(at, v >>> 0, le);
    return { description: `${name}@${at} = ${v >>> 0}`, bytes };
  };
  const u32 = [0, 1, 2, 3, 7, 8, 16, 255, 256, 1000, 4096, 16000, 16384, 16385, 44100, 65535, 65536, 0x7fffffff, 0x80000000, 0xffffffff];
  const u16 = [0, 1, 2, 3, 4, 7, 8, 12, 16, 24, 32, 64, 255, 256, 4096, 16384, 16385, 32767, 65535];
  if (kind === "png") {
    // Chunks from offset 8: length, type, data, CRC.
    const chunks: Array<{ at: number; length: number; type: string }> = [];
    for (let at = 8; at + 8 <= bytes.length && chunks.length < 64; ) {
      const length = view.getUint32(at);
      chunks.push({ at, length, type: text.decode(bytes.subarray(at + 4, at + 8)) });
      at += 12 + length;
    }
    const what = int(6);
    if (what === 0) return set(16, 4, pick(u32), false, "IHDR width");
    if (what === 1) return set(20, 4, pick(u32), false, "IHDR height");
    if (what === 2) return set(24 + int(5), 1, pick([0, 1, 2, 3, 4, 6, 7, 8, 16, 255]), false, "IHDR byte");
    const c = pick(chunks);
    if (!c) return { description: "no chunk", bytes };
    if (what === 3) return set(c.at, 4, pick([0, 1, c.length - 1, c.length + 1, c.length * 2, 0x7fffffff, 0xffffffff]), false, `${c.type} length`);
    if (what === 4) {
      // A chunk type swapped (IDAT where IHDR was, a PLTE, an unknown critical chunk).
      const type = pick(["IHDR", "IDAT", "IEND", "PLTE", "tRNS", "CgBI", "ABCD"]);
      bytes.set(utf8.encode(type), c.at + 4);
      return { description: `${c.type}@${c.at} type = ${type}`, bytes };
    }
    // A chunk's data byte (inside the zlib stream, for IDAT).
    return set(c.at + 8 + int(Math.max(1, c.length)), 1, int(256), false, `${c.type} data`);
  }
  if (kind === "jpeg") {
    const segments: Array<{ at: number; marker: number; length: number }> = [];
    for (let at = 2; at + 4 <= bytes.length && segments.length < 64; ) {
      if (bytes[at] !== 0xff) break;
      const marker = bytes[at + 1];
      const length = view.getUint16(at + 2);
      segments.push({ at, marker, length });
      if (marker === 0xda) break; // start of scan: entropy-coded data follows
      at += 2 + length;
    }
    const sof = segments.find((s) => s.marker >= 0xc0 && s.marker <= 0xcf && s.marker !== 0xc4 && s.marker !== 0xc8 && s.marker !== 0xcc);
    const what = int(8);
    if (sof && what === 0) return set(sof.at + 5, 2, pick(u16), false, "SOF height");
    if (sof && what === 1) return set(sof.at + 7, 2, pick(u16), false, "SOF width");
    if (sof && what === 2) return set(sof.at + 4, 1, pick([0, 1, 8, 12, 16, 255]), false, "SOF precision");
    if (sof && what === 3) return set(sof.at + 9, 1, pick([0, 1, 2, 3, 4, 5, 255]), false, "SOF components");
    if (sof && what === 4) return set(sof.at + 11 + 3 * int(3), 1, pick([0x00, 0x11, 0x22, 0x44, 0x41, 0x14, 0xff, 0x0f, 0xf0]), false, "SOF sampling");
    if (sof && what === 5) return set(sof.at + 1, 1, pick([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc9, 0xcf]), false, "SOF marker");
    const s = pick(segments);
    if (!s) return { description: "no segment", bytes };
    if (what === 6) return set(s.at + 2, 2, pick([0, 1, 2, s.length - 1, s.length + 1, s.length * 2, 65535]), false, `segment ${s.marker.toString(16)} length`);
    return set(s.at + 4 + int(Math.max(1, s.length - 2)), 1, int(256), false, `segment ${s.marker.toString(16)} byte`);
  }
  if (kind === "wav") {
    const what = int(10);
    if (what === 0) return set(4, 4, pick(u32), true, "RIFF size");
    if (what === 1) return set(16, 4, pick([0, 14, 15, 16, 18, 40, 0xffffffff]), true, "fmt size");
    if (what === 2) return set(20, 2, pick([0, 1, 2, 3, 6, 7, 0x11, 0x55, 0xfffe, 0xffff]), true, "format tag");
    if (what === 3) return set(22, 2, pick([0, 1, 2, 3, 8, 32, 255, 256, 65535]), true, "channels");
    if (what === 4) return set(24, 4, pick(u32), true, "sample rate");
    if (what === 5) return set(28, 4, pick(u32), true, "byte rate");
    if (what === 6) return set(32, 2, pick([0, 1, 2, 3, 4, 8, 65535]), true, "block align");
    if (what === 7) return set(34, 2, pick([0, 1, 4, 8, 12, 16, 20, 24, 32, 64, 65535]), true, "bits per sample");
    if (what === 8) return set(40, 4, pick([...u32, input.length - 44, input.length - 43]), true, "data size");
    const tag = pick(["fmt ", "data", "LIST", "fact", "JUNK", "RF64", "ds64"]);
    const where = pick([12, 36]);
    bytes.set(utf8.encode(tag), where);
    return { description: `chunk id@${where} = ${tag}`, bytes };
  }
  // MP3: the ID3 tag's size, or a field of one of the first frame headers.
  const id3 = text.decode(bytes.subarray(0, 3)) === "ID3";
  const first = id3 ? 10 + syncsafe(bytes, 6) : 0;
  if (id3 && random() < 0.25) {
    const v = pick([0, 1, 100, first - 11, first + 1, 0x0fffffff]);
    const at = 6;
    for (let k = 0; k < 4; k++) bytes[at + k] = (v >> (21 - 7 * k)) & 0x7f;
    return { description: `ID3 size = ${v}`, bytes };
  }
  const frames: number[] = [];
  for (let at = first; at + 4 <= bytes.length && frames.length < 16; ) {
    const len = mpegFrameLength(bytes, at);
    if (len <= 0) break;
    frames.push(at);
    at += len;
  }
  const f = frames.length > 0 ? pick(frames) : first;
  const what = int(5);
  if (what === 0) return set(f + 1, 1, pick([0xe2, 0xe3, 0xea, 0xeb, 0xf2, 0xf3, 0xfa, 0xfb, 0xfc, 0xfd, 0xff]), false, "frame version/layer");
  if (what === 1) return set(f + 2, 1, (bytes[f + 2] & 0x0f) | (int(16) << 4), false, "frame bitrate");
  if (what === 2) return set(f + 2, 1, (bytes[f + 2] & 0xf3) | (int(4) << 2), false, "frame sample rate");
  if (what === 3) return set(f + 3, 1, int(256), false, "frame mode");
  // Inside the side information or main data.
  return set(f + 4 + int(64), 1, int(256), false, "frame data");
}

// ---------------------------------------------------------------------------------------------
// The driver

export interface MediaFuzzFailure {
  index: number;
  description: string;
  kind: "crash" | "hang" | "not-a-llama-error";
  detail: string;
}

export interface MediaFuzzReport {
  count: number;
  /** How many mutants ended each way: "generated", a LlamaError code, "loaded/" + a code, "crash", "hang". */
  outcomes: Record<string, number>;
  failures: MediaFuzzFailure[];
  results: string[];
  slowestMs: number;
  seconds: number;
}

/** What to fuzz: mutants of a projector, or of media seeds fed to a model with a projector. */
export interface MediaFuzzTarget {
  mode: "projector" | "media";
  /** The text model. */
  text: string;
  /** "projector": the projector to mutate; "media": the projector to load. */
  projector: string;
  /** "projector": the media of each modality the mutants are given; "media": the seeds (mutant i mutates seeds[i % n]). */
  image?: string;
  audio?: string;
  seeds?: string[];
}

export interface MediaFuzzOptions {
  seed: number;
  count: number;
  /** A mutant slower than this counts as a hang (the child is killed). */
  timeoutMs: number;
  /** Where to keep the bytes of each crashing or hanging mutant. */
  saveFailuresTo?: string;
  onProgress?: (done: number) => void;
}

function runChild(req: MediaRunRequest, timeoutMs: number, report: MediaFuzzReport, onProgress?: (done: number) => void): Promise<{ next: number; failure?: MediaFuzzFailure }> {
  return runWatchedChild<{ outcome: string; ms: number }>({
    runner: "media-runner.ts",
    request: req,
    timeoutMs,
    onDone: (m, description) => {
      report.outcomes[m.outcome] = (report.outcomes[m.outcome] ?? 0) + 1;
      report.results[m.index] = m.outcome;
      report.slowestMs = Math.max(report.slowestMs, m.ms);
      onProgress?.(m.index + 1);
      if (m.outcome.includes("NOT_A_LLAMA_ERROR")) report.failures.push({ index: m.index, description, kind: "not-a-llama-error", detail: m.outcome });
    },
    // libmtmd logs a lot before it aborts: keep the lines that say why.
    detail: (stderr) => {
      const lines = stderr.trim().split("\n").filter((l) => /GGML_ASSERT|GGML_ABORT|error|abort|terminate|what\(\)|Error/i.test(l));
      return (lines.length > 0 ? lines : stderr.trim().split("\n")).slice(-3).join(" | ");
    },
    failOnSetupCrash: true,
  });
}

/** Runs inputs 0..count of the target (mutants, or `files`) in watched child processes. */
async function drive(target: MediaFuzzTarget, count: number, options: MediaFuzzOptions, files?: string[]): Promise<MediaFuzzReport> {
  const started = performance.now();
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-media-fuzz-"));
  const report: MediaFuzzReport = { count, outcomes: {}, failures: [], results: [], slowestMs: 0, seconds: 0 };
  try {
    for (let from = 0; from < count; ) {
      const result = await runChild({ ...target, seed: options.seed, from, to: count, tmpDir, files }, options.timeoutMs, report, options.onProgress);
      if (result.failure) {
        report.failures.push(result.failure);
        if (result.failure.description === "child setup") throw new Error(`the media fuzz child failed outside an input (at input ${from} or later): ${result.failure.detail}`);
        report.outcomes[result.failure.kind] = (report.outcomes[result.failure.kind] ?? 0) + 1;
        report.results[result.failure.index] = result.failure.kind;
        if (options.saveFailuresTo) saveFailure(target, options, result.failure, files);
      }
      if (result.next <= from) throw new Error(`the media fuzz child made no progress at input ${from}`);
      from = result.next;
    }
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
  report.seconds = (performance.now() - started) / 1000;
  return report;
}

/** Runs `count` seeded mutants of the target in watched child processes. */
export function runMediaFuzz(target: MediaFuzzTarget, options: MediaFuzzOptions): Promise<MediaFuzzReport> {
  return drive(target, options.count, options);
}

/** Runs each file (a projector in "projector" mode, a media file in "media" mode) as the fuzz runs a mutant. */
export function runMediaFiles(target: MediaFuzzTarget, files: string[], timeoutMs: number): Promise<MediaFuzzReport> {
  return drive(target, files.length, { seed: 0, count: files.length, timeoutMs }, files);
}

/** The bytes of mutant `index` of the target, as the child made them. */
export function mediaMutantOf(target: MediaFuzzTarget, seed: number, index: number): Mutant & { ext: string } {
  if (target.mode === "projector") return { ...mutateProjector(parseGguf(fs.readFileSync(target.projector)), seed, index), ext: "gguf" };
  const seeds = target.seeds ?? [];
  const file = seeds[index % seeds.length];
  const kind = mediaKindOf(file);
  return { ...mutateMedia(fs.readFileSync(file), kind, seed, index), ext: kind };
}

function saveFailure(target: MediaFuzzTarget, options: MediaFuzzOptions, failure: MediaFuzzFailure, files?: string[]): void {
  const dir = options.saveFailuresTo!;
  fs.mkdirSync(dir, { recursive: true });
  if (files) {
    const file = files[failure.index];
    fs.copyFileSync(file, path.join(dir, `${failure.kind}-${path.basename(file)}`));
    fs.writeFileSync(path.join(dir, `${failure.kind}-${path.basename(file)}.txt`), `${failure.detail}\n`);
    return;
  }
  const m = mediaMutantOf(target, options.seed, failure.index);
  const from = target.mode === "projector" ? path.basename(target.projector, ".gguf") : path.basename(target.seeds![failure.index % target.seeds!.length]).replace(/\./g, "-");
  const name = `${failure.kind}-${target.mode}-${from}-seed${options.seed}-${failure.index}`;
  fs.writeFileSync(path.join(dir, `${name}.${m.ext}`), m.bytes);
  fs.writeFileSync(path.join(dir, `${name}.txt`), `${m.description}\n${failure.detail}\n`);
}

/**
 * Writes `base` (a projector) again under each of libmtmd's projector types (clip.projector_type),
 * into `dir`: a file of one layout that claims another, which libmtmd's loader (tensors it treats
 * as optional) and graph builders must not crash on.
 */
export function writeProjectorTypeSweep(base: string, dir: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const parts = parseGguf(fs.readFileSync(base));
  return PROJECTOR_TYPES.map((type) => {
    const p: GgufParts = { ...parts, kvs: parts.kvs.map((kv) => (text.decode(kv.key) === "clip.projector_type" ? { ...kv, value: { type: GT.STRING, str: utf8.encode(type) } as Value } : kv)) };
    const file = path.join(dir, `${path.basename(base, ".gguf")}-as-${type.replace(/[^a-z0-9_.-]/gi, "_") || "empty"}.gguf`);
    fs.writeFileSync(file, writeParts(p));
    return file;
  });
}

export interface MediaCampaignReport {
  count: number;
  seconds: number;
  outcomes: Record<string, number>;
  /** Outcomes by target ("projector gemma3", "projector ultravox", "media image", "media audio", "projector types"). */
  perTarget: Record<string, Record<string, number>>;
  failures: Array<MediaFuzzFailure & { target: string }>;
  slowestMs: number;
}

/**
 * The long run (`npm run fuzz -- --media N`): N mutants spread over the four targets (gemma3 and
 * ultravox projector mutants; PNG/JPEG mutants for the vision projector; WAV/MP3 mutants for the
 * audio one), plus the projector-type sweep of both projectors. Crashes and hangs are saved to
 * `saveFailuresTo`.
 */
export async function runMediaCampaign(opts: { count: number; seed: number; work: string; saveFailuresTo?: string; timeoutMs?: number; onProgress?: (done: number) => void }): Promise<MediaCampaignReport> {
  const f = await writeMediaFuzzFixtures(opts.work, { mp3Bytes: 24_000 });
  const targets: Array<[string, MediaFuzzTarget]> = [
    ["projector gemma3", { mode: "projector", text: f.text, projector: f.vision, image: f.png, audio: f.wav }],
    ["projector ultravox", { mode: "projector", text: f.text, projector: f.audio, image: f.png, audio: f.wav }],
    ["media image", { mode: "media", text: f.text, projector: f.vision, seeds: [f.png, f.jpeg] }],
    ["media audio", { mode: "media", text: f.text, projector: f.audio, seeds: [f.wav, f.mp3] }],
  ];
  const started = performance.now();
  const report: MediaCampaignReport = { count: 0, seconds: 0, outcomes: {}, perTarget: {}, failures: [], slowestMs: 0 };
  const add = (name: string, r: MediaFuzzReport) => {
    report.count += r.results.filter((x) => x !== undefined).length;
    report.perTarget[name] = r.outcomes;
    for (const [k, v] of Object.entries(r.outcomes)) report.outcomes[k] = (report.outcomes[k] ?? 0) + v;
    for (const x of r.failures) report.failures.push({ ...x, target: name });
    report.slowestMs = Math.max(report.slowestMs, r.slowestMs);
  };
  const timeoutMs = opts.timeoutMs ?? 30_000;
  let done = 0;
  for (const [i, [name, target]] of targets.entries()) {
    const n = Math.floor(opts.count / targets.length) + (i < opts.count % targets.length ? 1 : 0);
    if (n === 0) continue;
    const before = done;
    add(name, await runMediaFuzz(target, { seed: opts.seed + i, count: n, timeoutMs, saveFailuresTo: opts.saveFailuresTo, onProgress: (k) => opts.onProgress?.(before + k) }));
    done += n;
  }
  const sweep = [...writeProjectorTypeSweep(f.vision, path.join(opts.work, "sweep")), ...writeProjectorTypeSweep(f.audio, path.join(opts.work, "sweep"))];
  add("projector types", await runMediaFiles({ mode: "projector", text: f.text, projector: "", image: f.png, audio: f.wav }, sweep, timeoutMs));
  if (opts.saveFailuresTo && report.failures.some((x) => x.target === "projector types")) {
    fs.mkdirSync(opts.saveFailuresTo, { recursive: true });
    for (const x of report.failures.filter((x) => x.target === "projector types")) fs.copyFileSync(sweep[x.index], path.join(opts.saveFailuresTo, `${x.kind}-${path.basename(sweep[x.index])}`));
  }
  report.seconds = (performance.now() - started) / 1000;
  return report;
}
