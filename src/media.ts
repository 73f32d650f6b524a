/**
 * Images and audio in prompts, through llama.cpp's libmtmd and a projector (mmproj GGUF) loaded
 * for the model (native/Projector.cc, native/EngineMedia.cc):
 *
 * ```ts
 * const model = await loadModel("gemma-3-4b-it.gguf", { projector: "mmproj-gemma-3-4b.gguf" });
 * const session = (await model.createContext()).createSession();
 * await session.prompt(["Describe ", { image: "photo.jpg" }, " in one sentence."]);
 * ```
 *
 * Media are given as bytes or a file path; images as PNG, JPEG, BMP or GIF, audio as WAV, MP3 or
 * FLAC (decoded by libmtmd's stb_image and miniaudio, resampled to the projector's rate).
 */
import fs from "node:fs";

import { LlamaError, describe } from "./errors.js";

/** The bytes of an image or an audio file, or its path. */
export type MediaSource = Uint8Array | string;

/** One part of a prompt: text, an image or audio. */
export type PromptPart = string | { image: MediaSource } | { audio: MediaSource };

/** What a model's projector takes (`model.info.projector`). */
export interface ProjectorInfo {
  /** The projector file. */
  path: string;
  /** Its projector type (clip.projector_type: "gemma3", "idefics3", "ultravox", ...). */
  type: string;
  /** Whether it takes images. */
  image: boolean;
  /** Whether it takes audio. */
  audio: boolean;
  /** The sample rate audio is resampled to (audio projectors). */
  audioSampleRate?: number;
}

/** What the projector makes of one media item (`model.encodeMedia()`). */
export interface MediaEmbedding {
  /** Positions the item takes in a session's history. */
  tokens: number;
  /** Floats per position: the text model's input embedding size. */
  width: number;
  /** `tokens × width` floats, position by position: what the text model reads in place of token embeddings. */
  embeddings: Float32Array;
}

/** Where an image or audio item sits in a session's history (`trace().media`). */
export interface MediaSpan {
  /** Its first position. */
  start: number;
  /** Positions it takes (their tokens are -1). */
  length: number;
  kind: "image" | "audio";
}

/** libmtmd's media marker (mtmd_default_marker()): where each media item goes in the text. */
export const MEDIA_MARKER = "<__media__>";

/** The largest image accepted: this many pixels (64 Mpx), and at most 16,384 on a side. */
const MAX_PIXELS = 1 << 26;
const MAX_SIDE = 16_384;

/**
 * Whether a prompt input is a list of parts (rather than text or token ids): an array with a
 * string or an object in it. Anything else array-like is read as token ids (and refused there).
 */
export function isPromptParts(input: unknown): input is readonly PromptPart[] {
  return Array.isArray(input) && input.some((p) => typeof p === "string" || (p !== null && typeof p === "object"));
}

/**
 * The parts of a text that holds one MEDIA_MARKER per item (a rendered chat), with the items in
 * order: what session.prompt() takes.
 */
export function partsAtMarkers(text: string, items: ReadonlyArray<{ type: "image" | "audio"; data: MediaSource }>): PromptPart[] {
  const pieces = text.split(MEDIA_MARKER);
  if (pieces.length !== items.length + 1) throw new LlamaError("ERR_INTERNAL", `The text holds ${pieces.length - 1} media markers for ${items.length} items`);
  const parts: PromptPart[] = [pieces[0]!];
  items.forEach((item, k) => parts.push(item.type === "image" ? { image: item.data } : { audio: item.data }, pieces[k + 1]!));
  return parts;
}

/**
 * The prompt's text, with the marker for each media item, and the items' bytes (files read
 * here). Bad parts are ERR_INVALID_ARGUMENT; unreadable, empty or oversized media ERR_MEDIA_INVALID.
 */
export async function readPromptParts(parts: readonly PromptPart[], accepts: { image: boolean; audio: boolean }): Promise<{ text: string; media: Uint8Array[] }> {
  let text = "";
  const media: Uint8Array[] = [];
  for (const [i, part] of parts.entries()) {
    if (typeof part === "string") {
      if (part.includes(MEDIA_MARKER)) {
        throw new LlamaError("ERR_INVALID_ARGUMENT", `prompt[${i}] contains "${MEDIA_MARKER}", libmtmd's media marker: give images and audio as { image } or { audio } parts`);
      }
      text += part;
      continue;
    }
    const kind = part !== null && typeof part === "object" ? ("image" in part ? "image" : "audio" in part ? "audio" : undefined) : undefined;
    if (kind === undefined || Object.keys(part).length !== 1) {
      throw new LlamaError("ERR_INVALID_ARGUMENT", `prompt[${i}] must be a string, { image: bytes or path } or { audio: bytes or path }; got ${describe(part)}`);
    }
    if (!accepts[kind]) {
      throw new LlamaError("ERR_UNSUPPORTED", `prompt[${i}] is ${kind === "image" ? "an image" : "audio"}, which this model's projector does not take`);
    }
    const bytes = await readSource((part as Record<string, MediaSource>)[kind]!, `prompt[${i}].${kind}`);
    if (kind === "image") checkImageSize(bytes, `prompt[${i}].image`);
    else checkWav(bytes, `prompt[${i}].audio`);
    text += MEDIA_MARKER;
    media.push(bytes);
  }
  return { text, media };
}

async function readSource(source: MediaSource, where: string): Promise<Uint8Array> {
  let bytes: Uint8Array;
  if (source instanceof Uint8Array) {
    bytes = source;
  } else if (typeof source === "string" && source !== "") {
    try {
      bytes = await fs.promises.readFile(source);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new LlamaError(code === "ENOENT" ? "ERR_FILE_NOT_FOUND" : "ERR_MEDIA_INVALID", `${where}: cannot read ${source} (${(err as Error).message})`);
    }
  } else {
    throw new LlamaError("ERR_INVALID_ARGUMENT", `${where} must be a Uint8Array (the file's bytes) or a file path; got ${describe(source)}`);
  }
  if (bytes.byteLength === 0) throw new LlamaError("ERR_MEDIA_INVALID", `${where} is empty (0 bytes)`);
  return bytes;
}

/**
 * An image's width and height from its header (PNG, JPEG, GIF, BMP), or undefined for another
 * format (libmtmd then says whether it can read it).
 */
export function imageSize(b: Uint8Array): { width: number; height: number } | undefined {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const has = (n: number) => b.byteLength >= n;
  if (has(24) && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return { width: view.getUint32(16), height: view.getUint32(20) };
  if (has(10) && b[0] === 0x47 && b[1] === 0x49 && b[2] === 0x46) return { width: view.getUint16(6, true), height: view.getUint16(8, true) };
  if (has(26) && b[0] === 0x42 && b[1] === 0x4d) return { width: Math.abs(view.getInt32(18, true)), height: Math.abs(view.getInt32(22, true)) };
  if (has(4) && b[0] === 0xff && b[1] === 0xd8) {
    // JPEG: the first start-of-frame segment (SOF0..SOF15 but DHT, JPG and DAC) has the size.
    let at = 2;
    while (at + 9 < b.byteLength) {
      if (b[at] !== 0xff) return undefined;
      const marker = b[at + 1]!;
      if (marker === 0xff) {
        at++;
        continue;
      }
      const length = view.getUint16(at + 2);
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        return { width: view.getUint16(at + 7), height: view.getUint16(at + 5) };
      }
      at += 2 + length;
    }
  }
  return undefined;
}

/** The longest audio accepted (resampled to the projector's rate, it is decoded whole first). */
const MAX_AUDIO_SECONDS = 3600;

/**
 * Refuses, before anything decodes it, a WAV file whose header asks for an absurd decode: a
 * sample rate under 1 kHz or over 768 kHz (resampling 2 Hz audio to 16 kHz makes an hour of
 * samples from a second), or more than an hour of audio. Other formats go to libmtmd as they are.
 */
function checkWav(b: Uint8Array, where: string): void {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const tag = (at: number) => String.fromCharCode(b[at]!, b[at + 1]!, b[at + 2]!, b[at + 3]!);
  if (b.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") return;
  let byteRate = 0;
  for (let at = 12; at + 8 <= b.byteLength; ) {
    const id = tag(at);
    const size = view.getUint32(at + 4, true);
    if (id === "fmt " && at + 24 <= b.byteLength && size >= 16) {
      const format = view.getUint16(at + 8, true);
      const rate = view.getUint32(at + 12, true);
      byteRate = view.getUint32(at + 16, true);
      // ADPCM (MS 2, IMA 0x11) needs the extended format block; without it miniaudio reads a
      // garbage frame count and libmtmd's decoder throws, leaking the decoder's state.
      if ((format === 2 || format === 0x11) && size < 20) {
        throw new LlamaError("ERR_MEDIA_INVALID", `${where} is ADPCM WAV audio without its extended format block: the file is damaged`);
      }
      if (rate < 1000 || rate > 768_000) throw new LlamaError("ERR_MEDIA_INVALID", `${where} is WAV audio at ${rate} Hz; sample rates from 1 kHz to 768 kHz are accepted`);
    } else if (id === "data" && byteRate > 0 && Math.min(size, b.byteLength) / byteRate > MAX_AUDIO_SECONDS) {
      throw new LlamaError("ERR_MEDIA_INVALID", `${where} is longer than ${MAX_AUDIO_SECONDS / 60} minutes of audio: cut it first`);
    }
    at += 8 + size + (size & 1);
  }
}

/** Refuses, before anything decodes it, an image of zero size or too large to decode safely. */
function checkImageSize(bytes: Uint8Array, where: string): void {
  const size = imageSize(bytes);
  if (size === undefined) return;
  const { width, height } = size;
  if (width === 0 || height === 0) throw new LlamaError("ERR_MEDIA_INVALID", `${where} is an image of zero size (${width}×${height})`);
  if (width > MAX_SIDE || height > MAX_SIDE || width * height > MAX_PIXELS) {
    throw new LlamaError("ERR_MEDIA_INVALID", `${where} is ${width}×${height} pixels; images of at most ${MAX_SIDE} on a side and ${MAX_PIXELS / (1 << 20)} Mpx are accepted: scale it down first`);
  }
}
