/**
 * The explain report: the PNG encoder and decoder (checked against an independent reading of the
 * format: chunks, CRCs computed bit by bit, inflated rows and filter bytes), the HTML report
 * (self-contained, escaped, embedding the trace's numbers) and `llama-napi explain` end to end on
 * the tiny GPT-2. The encoder-decoder (T5) report and CLI are in tests/report-t5.test.ts.
 */
import { execFile, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import zlib from "node:zlib";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { AttentionMap, loadModel, type TraceResult } from "../src/index.js";
import { attentionPng, decodePng, encodePng, renderExplainReport, visibleToken, type ExplainData } from "../src/report/index.js";
import { crc32 } from "../src/report/png.js";
import { colorAt, MASKED_RGB } from "../src/report/colormap.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";
import { decodeAttention, embeddedData } from "./helpers/report.js";

const run = promisify(execFile);
const MAIN = path.join(repoRoot, "dist", "cli", "main.js");

/** CRC-32 computed bit by bit (no table), as the PNG specification describes it. */
function bitwiseCrc(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

interface Chunk {
  type: string;
  data: Buffer;
}

/** Splits a PNG into chunks, checking the signature and every CRC independently of src/. */
function readChunks(png: Buffer): Chunk[] {
  expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const chunks: Chunk[] = [];
  let offset = 8;
  while (offset < png.length) {
    const length = png.readUInt32BE(offset);
    const typeAndData = png.subarray(offset + 4, offset + 8 + length);
    expect(png.readUInt32BE(offset + 8 + length)).toBe(bitwiseCrc(typeAndData));
    chunks.push({ type: typeAndData.subarray(0, 4).toString("latin1"), data: typeAndData.subarray(4) });
    offset += 12 + length;
  }
  expect(offset).toBe(png.length);
  return chunks;
}

/** A PNG with every filter type, written here (not by src/): RGB, 8 bits. */
function filteredRgbPng(width: number, height: number, rgb: Uint8Array): Buffer {
  const stride = width * 3;
  const raw: number[] = [];
  for (let y = 0; y < height; y++) {
    const filter = y % 5;
    raw.push(filter);
    for (let x = 0; x < stride; x++) {
      const cur = rgb[y * stride + x];
      const a = x >= 3 ? rgb[y * stride + x - 3] : 0;
      const b = y > 0 ? rgb[(y - 1) * stride + x] : 0;
      const c = x >= 3 && y > 0 ? rgb[(y - 1) * stride + x - 3] : 0;
      const p = a + b - c;
      const paeth = Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c;
      const predictor = [0, a, b, (a + b) >> 1, paeth][filter];
      raw.push((cur - predictor) & 0xff);
    }
  }
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
    const out = Buffer.alloc(4 + body.length + 4);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(bitwiseCrc(body), 4 + body.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const idat = zlib.deflateSync(Buffer.from(raw));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("tEXt", Buffer.from("Comment\0ancillary chunks are skipped", "latin1")),
    chunk("IDAT", idat.subarray(0, 10)), // image data split over two chunks
    chunk("IDAT", idat.subarray(10)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** An attention map with causal softmax rows of pseudo-random scores; `history` cached positions. */
function syntheticMap(layer: number, heads: number, queries: number, history: number, seed: number): AttentionMap {
  const keys = history + queries;
  const data = new Float32Array(heads * queries * keys);
  let s = seed;
  const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 6;
  for (let h = 0; h < heads; h++) {
    for (let q = 0; q < queries; q++) {
      const visible = history + q + 1;
      const e = Array.from({ length: visible }, () => Math.exp(rand()));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let k = 0; k < visible; k++) data[(h * queries + q) * keys + k] = e[k] / sum;
    }
  }
  return new AttentionMap(layer, heads, queries, keys, data);
}

const NASTY_PIECES = ["<|bos|>", "<script>alert(1)</script>", " &amp;", '"q\'', "\n\n", "\t", " ", "\u00a0x", "\ufffd", "", "</script><script>alert(2)</script>", "\u2028"];

function syntheticTrace(pieces = NASTY_PIECES, history = 2): TraceResult {
  const n = pieces.length;
  const queries = n - history;
  const layers = [0, 1, 2];
  return {
    tokens: Int32Array.from(pieces, (_, i) => 100 + i),
    pieces,
    media: [],
    queryStart: history,
    layers,
    heads: 4,
    headsKv: 2,
    embeddingSize: 8,
    attention: layers.map((l) => syntheticMap(l, 4, queries, history, 7 + l)),
    hiddenStates: layers.map(() => Float32Array.from({ length: queries * 8 }, (_, i) => Math.sin(i))),
    logitLens: layers.map((l) =>
      Array.from({ length: queries }, (_, q) => [
        { token: 100 + ((q + l) % n), text: pieces[(q + l) % n], probability: 0.6 },
        { token: 7, text: "<b>bold</b>", probability: 0.25 },
      ]),
    ),
    next: [
      { token: 7, text: "<b>bold</b>", probability: 0.7 },
      { token: 101, text: pieces[1], probability: 0.2 },
    ],
  };
}

/** Attention weight from the embedded data, decoded here from the documented layout. */
function embeddedWeights(d: ExplainData, layerIndex: number): (head: number, row: number, key: number) => number | null {
  return decodeAttention(d.attention!, d.heads, d.queryStart, layerIndex);
}

describe("PNG", () => {
  it("computes the CRC-32 PNG uses", () => {
    expect(crc32(Buffer.from("123456789"))).toBe(0xcbf43926);
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 37) & 0xff);
    expect(crc32(bytes)).toBe(bitwiseCrc(bytes));
    expect(crc32(bytes.subarray(400), crc32(bytes.subarray(0, 400)))).toBe(bitwiseCrc(bytes));
  });

  it("encodes RGBA rows a PNG reader can take apart", () => {
    const width = 5;
    const height = 3;
    const rgba = Uint8Array.from({ length: width * height * 4 }, (_, i) => (i * 53 + 11) & 0xff);
    const png = encodePng(width, height, rgba);
    const chunks = readChunks(png);
    expect(chunks.map((c) => c.type)).toEqual(["IHDR", "IDAT", "IEND"]);
    const ihdr = chunks[0].data;
    expect(ihdr.readUInt32BE(0)).toBe(width);
    expect(ihdr.readUInt32BE(4)).toBe(height);
    expect([...ihdr.subarray(8)]).toEqual([8, 6, 0, 0, 0]); // 8 bits, RGBA, deflate, filter 0, no interlace
    const raw = zlib.inflateSync(Buffer.concat(chunks.filter((c) => c.type === "IDAT").map((c) => c.data)));
    expect(raw.length).toBe(height * (1 + width * 4));
    for (let y = 0; y < height; y++) {
      const row = raw.subarray(y * (1 + width * 4), (y + 1) * (1 + width * 4));
      expect(row[0]).toBe(0); // filter None
      expect([...row.subarray(1)]).toEqual([...rgba.subarray(y * width * 4, (y + 1) * width * 4)]);
    }
    expect(decodePng(png)).toEqual({ width, height, rgba });
  });

  it.skipIf(spawnSync("pngcheck", ["-h"]).error !== undefined)("passes pngcheck (when installed)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "png-"));
    const file = path.join(dir, "a.png");
    fs.writeFileSync(file, attentionPng(syntheticMap(0, 2, 6, 1, 3), 1));
    const r = spawnSync("pngcheck", ["-v", file], { encoding: "utf8" });
    expect(r.stdout).toContain("No errors detected");
    fs.rmSync(dir, { recursive: true });
  });

  it("decodes every filter type, split image data and ancillary chunks", () => {
    const width = 9;
    const height = 20;
    // Noise on the left, flat areas in the middle, and on the right a gradient where Paeth ties
    // between the pixel above and the one above-left (the tie-break order matters there).
    const rgb = Uint8Array.from({ length: width * height * 3 }, (_, i) => {
      const x = Math.floor(i / 3) % width;
      const y = Math.floor(i / 3 / width);
      return x < 3 ? (i * i * 7 + i * 3) & 0xff : x < 6 ? (y >> 2) * 40 + (i % 3) * 9 : 100 - 10 * x + 5 * y + (i % 3);
    });
    const image = decodePng(filteredRgbPng(width, height, rgb));
    expect(image.width).toBe(width);
    expect(image.height).toBe(height);
    for (let i = 0; i < width * height; i++) {
      expect([...image.rgba.subarray(i * 4, i * 4 + 4)]).toEqual([rgb[i * 3], rgb[i * 3 + 1], rgb[i * 3 + 2], 255]);
    }
  });

  it("rejects bad input with ERR_INVALID_ARGUMENT", () => {
    const bad = expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" });
    expect(() => encodePng(2, 2, new Uint8Array(15))).toThrow(bad);
    expect(() => encodePng(0, 2, new Uint8Array(0))).toThrow(bad);
    expect(() => encodePng(1.5, 2, new Uint8Array(12))).toThrow(bad);
    const png = encodePng(2, 2, new Uint8Array(16).fill(9));
    const corrupt = Buffer.from(png);
    corrupt[40] ^= 1; // inside IDAT: its CRC no longer matches
    expect(() => decodePng(corrupt)).toThrow(bad);
    expect(() => decodePng(png.subarray(0, 30))).toThrow(bad);
    expect(() => decodePng(Buffer.from("GIF89a........"))).toThrow(bad);
  });

  it("draws one head's attention, cells upscaled, masked cells gray", () => {
    const map = syntheticMap(3, 2, 4, 2, 11); // 4 queries over 6 positions
    const scale = 5;
    const image = decodePng(attentionPng(map, 1, scale));
    expect(image.width).toBe(6 * scale);
    expect(image.height).toBe(4 * scale);
    for (let q = 0; q < 4; q++) {
      for (let k = 0; k < 6; k++) {
        const expected = k > 2 + q ? MASKED_RGB : colorAt(map.get(1, q, k));
        for (const [dx, dy] of [[0, 0], [scale - 1, scale - 1], [2, 3]]) {
          const p = ((q * scale + dy) * image.width + k * scale + dx) * 4;
          expect([...image.rgba.subarray(p, p + 4)]).toEqual([...expected, 255]);
        }
      }
    }
    expect(colorAt(0)).toEqual([68, 1, 84]);
    expect(colorAt(1)).toEqual([253, 231, 37]);
    expect(decodePng(attentionPng(map, 0)).width).toBe(6 * 32); // default: up to 32 px cells
    expect(() => attentionPng(map, 2)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    expect(() => attentionPng(map, 0, 0)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
  });
});

describe("HTML report", () => {
  it("shows whitespace and control characters visibly", () => {
    expect(visibleToken(" Hello\n")).toBe("␣Hello↵");
    expect(visibleToken("\t\r\u0000\u001b\u007f")).toBe("⇥␍\u2400\u241b␡");
    expect(visibleToken("a\u00a0b\u200bc\ufeff")).toBe("a⟨U+00A0⟩b⟨U+200B⟩c⟨U+FEFF⟩");
    expect(visibleToken("")).toBe("∅");
    expect(visibleToken("\ufffd<&>")).toBe("\ufffd<&>");
  });

  it("is self-contained: no URL to load, no network API, a CSP that forbids both", () => {
    const html = renderExplainReport(syntheticTrace(), { model: "m", prompt: "p http://example.com/x.js", architecture: "llama", positionEncoding: "rope" });
    for (const m of html.matchAll(/\b(?:src|href|action|poster|srcset|xlink:href)\s*=\s*["']?([^"'\s>]*)/gi)) {
      expect.fail(`the page refers to ${m[1]}`);
    }
    expect(html).not.toMatch(/<link\b|<iframe\b|<img\b|<object\b|<embed\b|@import|url\(/i);
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.map((s) => s[1])).toEqual([' type="application/json" id="explain-data"', ""]);
    const code = scripts[1][2];
    expect(code).not.toMatch(/\bfetch\(|XMLHttpRequest|WebSocket|EventSource|sendBeacon|\bimport\(|importScripts|https?:\/\//);
    const csp = /<meta http-equiv="Content-Security-Policy" content="([^"]+)">/.exec(html)![1];
    expect(csp).toContain("default-src 'none'");
    const hash = createHash("sha256").update(code, "utf8").digest("base64");
    expect(csp).toContain(`script-src 'sha256-${hash}'`);
    expect(csp).not.toContain("unsafe-eval");
    expect(html.indexOf("Content-Security-Policy")).toBeLessThan(html.indexOf("<script"));
  });

  it("escapes token texts, the prompt and the model name", () => {
    const html = renderExplainReport(syntheticTrace(), {
      model: '<img src=x onerror="alert(3)">',
      prompt: "</pre><script>alert(4)</script>",
    });
    // Only the two scripts of the page; no markup from the data.
    expect(html.match(/<script/g)).toHaveLength(2);
    expect(html).not.toMatch(/<img|<b>bold|alert\(\d\)<\/script>|onerror="/);
    expect(html).toContain("&lt;script&gt;alert(1)&lt;/script&gt;");
    expect(html).toContain("&lt;/pre&gt;&lt;script&gt;alert(4)&lt;/script&gt;");
    expect(html).toContain("␣&amp;amp;"); // " &amp;" as text
    expect(html).toContain("&quot;q&#39;");
    // The JSON holds no "<", so no "</script>" can close the data block early.
    const json = /id="explain-data">([^]*?)<\/script>/.exec(html)![1];
    expect(json).not.toMatch(/[<>&\u2028]/);
    const d = embeddedData(html);
    expect(d.tokens.text).toEqual(NASTY_PIECES.map(visibleToken));
    expect(d.tokens.text[4]).toBe("↵↵");
    expect(d.tokens.text[9]).toBe("∅");
    expect(d.vocab["7"]).toBe("<b>bold</b>");
    expect(d.prompt).toBe("</pre><script>alert(4)</script>");
  });

  it("embeds the trace's numbers; over the size budget it keeps 8 bits, then the last rows, and says so", () => {
    const trace = syntheticTrace();
    const full = embeddedData(renderExplainReport(trace, { model: "m", prompt: "p" }));
    expect(full.attention).toMatchObject({ encoding: "u16", causal: true, firstQuery: 0, rows: 10, keys: 12 });
    expect(full.warnings).toEqual([]);
    for (const [l, map] of trace.attention!.entries()) {
      const w = embeddedWeights(full, l);
      for (let h = 0; h < 4; h++) {
        for (let q = 0; q < map.queries; q++) {
          for (let k = 0; k < map.keys; k++) {
            if (k > 2 + q) expect(w(h, q, k)).toBeNull();
            else expect(Math.abs(w(h, q, k)! - map.get(h, q, k))).toBeLessThanOrEqual(0.5 / 65535 + 1e-7);
          }
        }
      }
    }
    expect(full.lens!.k).toBe(2);
    expect(full.lens!.layers[1][3]).toEqual([trace.logitLens![1][3][0].token, 0.6, 7, 0.25]);
    expect(full.next).toEqual([[7, 0.7], [101, 0.2]]);
    expect(full.residualNorms![0]).toHaveLength(10);

    const warnings: string[] = [];
    const cells = 3 * 4 * (3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 + 11 + 12); // layers × heads × visible keys
    const html8 = renderExplainReport(trace, { model: "m", prompt: "p", maxAttentionBytes: cells, onWarning: (m) => warnings.push(m) });
    const small = embeddedData(html8);
    expect(small.attention).toMatchObject({ encoding: "u8", firstQuery: 0, rows: 10 });
    expect(warnings).toHaveLength(1);
    expect(html8).toContain("8-bit precision");
    const w8 = embeddedWeights(small, 2);
    expect(Math.abs(w8(3, 9, 5)! - trace.attention![2].get(3, 9, 5))).toBeLessThanOrEqual(0.5 / 255 + 1e-7);

    const cut = embeddedData(renderExplainReport(trace, { model: "m", prompt: "p", maxAttentionBytes: 3 * 4 * (11 + 12) }));
    expect(cut.attention).toMatchObject({ encoding: "u8", firstQuery: 8, rows: 2 });
    expect(cut.warnings[1]).toContain("last 2 of 10 traced tokens");
    const wc = embeddedWeights(cut, 0);
    expect(Math.abs(wc(0, 1, 11)! - trace.attention![0].get(0, 9, 11))).toBeLessThanOrEqual(0.5 / 255 + 1e-7);
  });

  it("says what the model does: GQA, the position encoding, the cached prefix", () => {
    const gqa = renderExplainReport(syntheticTrace(), { model: "m", prompt: "p", positionEncoding: "rope" });
    expect(gqa).toContain("grouped-query attention");
    expect(gqa).toContain("RoPE");
    expect(gqa).toContain("The first 2 tokens were already in the session's cache");
    const mha = renderExplainReport({ ...syntheticTrace(NASTY_PIECES, 0), headsKv: 4 }, { model: "m", prompt: "p", positionEncoding: "learned" });
    expect(mha).not.toContain("grouped-query");
    expect(mha).toContain("learned embeddings");
    expect(mha).not.toContain("already in the session's cache");
    const bare = renderExplainReport({ ...syntheticTrace(), attention: undefined, logitLens: undefined, hiddenStates: undefined }, { model: "m", prompt: "p" });
    expect(bare).toContain("No attention was captured");
    expect(bare).toContain("The logit lens was not captured");
    expect(embeddedData(bare)).toMatchObject({ attention: null, lens: null, residualNorms: null, positionEncoding: null });
    // A decoder-only model's report has no encoder, no cross-attention and no section for them.
    expect(embeddedData(gqa)).toMatchObject({ encoder: null, crossAttention: null, target: null });
    expect(gqa).not.toContain("Cross-attention");
    expect(gqa).not.toContain('id="cross-heatmap"');
    expect(gqa).not.toContain('id="enc-heatmap"');
    expect(gqa).toContain("<h2>Attention</h2>");
  });
});

describe("llama-napi explain (CLI)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-explain-"));
  }, 180_000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("writes the report and a PNG per layer and head for the tiny GPT-2", async () => {
    const modelPath = fixturePath("gpt2-tiny-f32");
    const prompt = 'The <pizza> & "oven"\n\tbaked';
    const out = path.join(dir, "sub", "report.html");
    const pngs = path.join(dir, "png");
    const { stdout } = await run(process.execPath, [MAIN, "explain", "-m", modelPath, "-p", prompt, "-o", out, "--png", pngs, "-t", "1", "--top-k", "4"]);
    expect(stdout).toMatch(/^wrote .*report\.html \([\d.]+ KiB\): \d+ tokens, 2 layers × 4 heads$/m);
    expect(stdout).toContain(`wrote 8 PNG heatmaps to ${pngs}`);
    using model = await loadModel(modelPath);
    const tokens = [...model.tokenize(prompt)];
    const d = embeddedData(fs.readFileSync(out, "utf8"));
    expect(d.tokens.ids).toEqual(tokens);
    expect(d.tokens.text).toEqual(tokens.map((t) => visibleToken(model.tokenToPiece(t, { special: true }))));
    expect(d.prompt).toBe(prompt);
    expect(d).toMatchObject({ architecture: "gpt2", positionEncoding: "learned", layerCount: 2, layers: [0, 1], heads: 4, headsKv: 4, queryStart: 0 });
    expect(d.next).toHaveLength(4);
    expect(d.lens!.k).toBe(5);
    expect(d.lens!.layers[1]).toHaveLength(tokens.length);
    // The report's weights are the API's.
    using context = await model.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    const trace = await session.trace(prompt);
    const w = embeddedWeights(d, 1);
    const last = tokens.length - 1;
    for (let k = 0; k <= last; k++) expect(Math.abs(w(2, last, k)! - trace.attention![1].get(2, last, k))).toBeLessThan(1e-4);
    expect(d.next[0][0]).toBe(trace.next[0].token);
    const files = fs.readdirSync(pngs).sort();
    expect(files).toEqual(["layer0-head0.png", "layer0-head1.png", "layer0-head2.png", "layer0-head3.png", "layer1-head0.png", "layer1-head1.png", "layer1-head2.png", "layer1-head3.png"]);
    const image = decodePng(fs.readFileSync(path.join(pngs, "layer1-head2.png")));
    const scale = Math.min(32, Math.floor(512 / tokens.length));
    expect(image.width).toBe(tokens.length * scale);
    const p = (last * scale * image.width + 0) * 4;
    expect([...image.rgba.subarray(p, p + 3)]).toEqual(colorAt(trace.attention![1].get(2, last, 0)));
  });
});
