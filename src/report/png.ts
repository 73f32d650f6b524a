/**
 * A small PNG encoder and decoder (no dependency: node:zlib for deflate, CRC-32 here), and
 * attention heatmaps as PNG images.
 *
 * The encoder writes 8-bit RGBA, non-interlaced, every row with filter 0 (None). The decoder reads
 * what browsers and screenshot tools write: bit depth 8, colour types 0, 2, 3, 4 and 6, every
 * filter type, no interlacing.
 */
import zlib from "node:zlib";

import { LlamaError } from "../errors.js";
import type { AttentionMap } from "../trace.js";
import { MASKED_RGB, colorAt } from "./colormap.js";

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Largest image either side of the codec handles: 16384 × 16384 (1 GiB of RGBA). */
const MAX_SIDE = 16384;

let crcTable: Uint32Array | undefined;

/** CRC-32 (ISO 3309 / ITU-T V.42, the one PNG and zlib use) of `data`, continuing from `crc`. */
export function crc32(data: Uint8Array, crc = 0): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = ~crc >>> 0;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

function checkSize(width: number, height: number): void {
  for (const [name, v] of [["width", width], ["height", height]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > MAX_SIDE) {
      throw new LlamaError("ERR_INVALID_ARGUMENT", `PNG ${name} must be an integer from 1 to ${MAX_SIDE}, got ${String(v)}`);
    }
  }
}

/** A PNG file of `width` × `height` pixels from row-major RGBA bytes (4 per pixel), or RGB bytes (3) with `channels: 3`. */
export function encodePng(width: number, height: number, rgba: Uint8Array, channels: 3 | 4 = 4): Buffer {
  checkSize(width, height);
  const stride = width * channels;
  if (rgba.length !== stride * height) {
    const kind = channels === 4 ? "RGBA" : "RGB";
    throw new LlamaError("ERR_INVALID_ARGUMENT", `PNG pixel data must hold ${stride * height} bytes (${width}×${height} ${kind}), got ${rgba.length}`);
  }
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0; // filter: None
    raw.set(rgba.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = channels === 4 ? 6 : 2; // colour type: RGBA or RGB
  header[10] = 0; // compression: deflate
  header[11] = 0; // filter method 0
  header[12] = 0; // no interlace
  return Buffer.concat([SIGNATURE, chunk("IHDR", header), chunk("IDAT", zlib.deflateSync(raw, { level: 9 })), chunk("IEND", new Uint8Array(0))]);
}

/** A decoded PNG image ({@link decodePng}): its size and RGBA pixels. */
export interface DecodedPng {
  width: number;
  height: number;
  /** Row-major RGBA, 4 bytes per pixel. */
  rgba: Uint8Array;
}

function invalid(message: string): never {
  throw new LlamaError("ERR_INVALID_ARGUMENT", `Not a PNG this decoder reads: ${message}`);
}

const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

/** Decodes a PNG (8-bit, non-interlaced) to RGBA, checking every chunk's CRC. */
export function decodePng(file: Uint8Array): DecodedPng {
  const buf = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  if (buf.length < 8 || !buf.subarray(0, 8).equals(SIGNATURE)) invalid("bad signature");
  let offset = 8;
  let width = 0;
  let height = 0;
  let colorType = -1;
  let palette: Buffer | undefined;
  let transparency: Buffer | undefined;
  const idat: Buffer[] = [];
  let ended = false;
  while (!ended) {
    if (offset + 12 > buf.length) invalid("truncated chunk");
    const length = buf.readUInt32BE(offset);
    const type = buf.toString("latin1", offset + 4, offset + 8);
    if (offset + 12 + length > buf.length) invalid(`chunk ${type} runs past the end`);
    const data = buf.subarray(offset + 8, offset + 8 + length);
    if (crc32(buf.subarray(offset + 4, offset + 8 + length)) !== buf.readUInt32BE(offset + 8 + length)) invalid(`bad CRC in chunk ${type}`);
    offset += 12 + length;
    switch (type) {
      case "IHDR": {
        if (length !== 13) invalid("IHDR length");
        width = data.readUInt32BE(0);
        height = data.readUInt32BE(4);
        colorType = data[9];
        if (data[8] !== 8) invalid(`bit depth ${data[8]}`);
        if (CHANNELS[colorType] === undefined) invalid(`colour type ${colorType}`);
        if (data[10] !== 0 || data[11] !== 0) invalid("compression or filter method");
        if (data[12] !== 0) invalid("interlaced");
        if (width < 1 || height < 1 || width > MAX_SIDE || height > MAX_SIDE) invalid(`size ${width}×${height}`);
        break;
      }
      case "PLTE":
        palette = data;
        break;
      case "tRNS":
        transparency = data;
        break;
      case "IDAT":
        idat.push(data);
        break;
      case "IEND":
        ended = true;
        break;
      default:
        // Ancillary chunks (lower-case first letter) can be skipped; critical ones cannot.
        if ((type.charCodeAt(0) & 0x20) === 0) invalid(`unknown critical chunk ${type}`);
    }
  }
  if (colorType < 0) invalid("no IHDR");
  if (colorType === 3 && !palette) invalid("palette image without PLTE");
  const channels = CHANNELS[colorType];
  const stride = width * channels;
  let raw: Buffer;
  try {
    raw = zlib.inflateSync(Buffer.concat(idat));
  } catch (err) {
    invalid(`corrupt image data (${(err as Error).message})`);
  }
  if (raw.length < (stride + 1) * height) invalid("image data too short");
  const pixels = unfilter(raw, stride, height, channels);
  return { width, height, rgba: toRgba(pixels, width * height, colorType, palette, transparency) };
}

function unfilter(raw: Buffer, stride: number, height: number, bpp: number): Uint8Array {
  const out = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const row = y * stride;
    const prev = row - stride;
    for (let x = 0; x < stride; x++) {
      const a = x >= bpp ? out[row + x - bpp] : 0;
      const b = y > 0 ? out[prev + x] : 0;
      const c = x >= bpp && y > 0 ? out[prev + x - bpp] : 0;
      let predictor: number;
      switch (filter) {
        case 0:
          predictor = 0;
          break;
        case 1:
          predictor = a;
          break;
        case 2:
          predictor = b;
          break;
        case 3:
          predictor = (a + b) >> 1;
          break;
        case 4: {
          const p = a + b - c;
          const pa = Math.abs(p - a);
          const pb = Math.abs(p - b);
          const pc = Math.abs(p - c);
          predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default:
          invalid(`filter type ${filter} in row ${y}`);
      }
      out[row + x] = (raw[src + x] + predictor) & 0xff;
    }
  }
  return out;
}

function toRgba(px: Uint8Array, count: number, colorType: number, palette?: Buffer, trns?: Buffer): Uint8Array {
  if (colorType === 6) return px;
  const out = new Uint8Array(count * 4);
  for (let i = 0; i < count; i++) {
    let r: number;
    let g: number;
    let b: number;
    let a = 255;
    if (colorType === 0 || colorType === 4) {
      const v = px[i * (colorType === 4 ? 2 : 1)];
      r = g = b = v;
      if (colorType === 4) a = px[i * 2 + 1];
      else if (trns && trns.length >= 2 && trns.readUInt16BE(0) === v) a = 0;
    } else if (colorType === 2) {
      r = px[i * 3];
      g = px[i * 3 + 1];
      b = px[i * 3 + 2];
      if (trns && trns.length >= 6 && trns.readUInt16BE(0) === r && trns.readUInt16BE(2) === g && trns.readUInt16BE(4) === b) a = 0;
    } else {
      const index = px[i];
      if (!palette || index * 3 + 2 >= palette.length) invalid(`palette index ${index} out of range`);
      r = palette[index * 3];
      g = palette[index * 3 + 1];
      b = palette[index * 3 + 2];
      if (trns && index < trns.length) a = trns[index];
    }
    out.set([r, g, b, a], i * 4);
  }
  return out;
}

/** The scale `attentionPng` uses by default: cells of up to 32 px, the image about 512 px wide. */
export function defaultAttentionScale(map: AttentionMap): number {
  return Math.max(1, Math.min(32, Math.floor(512 / Math.max(map.queries, map.keys))));
}

/** Options of {@link attentionPng}. */
export interface AttentionPngOptions {
  /**
   * Whether the map has a causal mask: then zero weights after the query's own position (the
   * last `queries` keys are the queries themselves) are drawn light gray. Default: true when the
   * map has at least as many keys as queries. Pass false for an encoder's self-attention and for
   * cross-attention, whose zeros are real weights.
   */
  causal?: boolean;
}

/**
 * One head's attention as a PNG: a row per query (traced token), a column per key (position),
 * each cell `scale` × `scale` pixels in the viridis colour map (0 dark purple, 1 yellow). Any
 * number of rows and columns (cross-attention: target tokens × source tokens). With a causal
 * mask, cells after the query's own position are light gray.
 */
export function attentionPng(map: AttentionMap, head: number, scale = defaultAttentionScale(map), options: AttentionPngOptions = {}): Buffer {
  if (!Number.isInteger(head) || head < 0 || head >= map.heads) {
    throw new LlamaError("ERR_INVALID_ARGUMENT", `head must be an integer from 0 to ${map.heads - 1}, got ${String(head)}`);
  }
  if (!Number.isInteger(scale) || scale < 1 || scale > 64) {
    throw new LlamaError("ERR_INVALID_ARGUMENT", `scale must be an integer from 1 to 64, got ${String(scale)}`);
  }
  const causal = options.causal ?? map.keys >= map.queries;
  const width = map.keys * scale;
  const height = map.queries * scale;
  checkSize(width, height);
  const rgba = new Uint8Array(width * height * 4);
  const firstPosition = map.keys - map.queries;
  for (let q = 0; q < map.queries; q++) {
    const row = map.row(head, q);
    for (let k = 0; k < map.keys; k++) {
      const masked = causal && k > firstPosition + q && row[k] === 0;
      const [r, g, b] = masked ? MASKED_RGB : colorAt(row[k]);
      for (let dx = 0; dx < scale; dx++) {
        const p = (q * scale * width + k * scale + dx) * 4;
        rgba[p] = r;
        rgba[p + 1] = g;
        rgba[p + 2] = b;
        rgba[p + 3] = 255;
      }
    }
    // The first pixel row of the cell row is done; copy it down.
    const line = rgba.subarray(q * scale * width * 4, (q * scale + 1) * width * 4);
    for (let dy = 1; dy < scale; dy++) rgba.set(line, (q * scale + dy) * width * 4);
  }
  return encodePng(width, height, rgba);
}
