/**
 * The explain report of an encoder-decoder (T5) model, on the tiny T5 of tests/helpers/uncomputable.ts:
 * the encoder's self-attention and the cross-attention (target rows × source keys) embedded in the
 * report and sharing its byte budget, the report's T5 sections, PNG maps that are not square or not
 * causal, and `llama-napi explain` on T5 with and without --target (plus the CLI's usage errors,
 * among them --target and --max-tokens on a decoder-only model). The oracle is the API's own trace
 * (`session.trace`, greedy `session.generate`): the embedded maps are decoded here from the
 * documented layout and must match it within the quantisation step, and PNG cells must have the
 * colour of their weight.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { AttentionMap, loadModel, type Model, type TraceResult } from "../src/index.js";
import { attentionPng, buildExplainData, decodePng, positionEncodingOf, renderExplainReport, visibleToken, type ExplainAttentionData } from "../src/report/index.js";
import { colorAt, MASKED_RGB } from "../src/report/colormap.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";
import { decodeAttention, embeddedData } from "./helpers/report.js";
import { writeTinyT5 } from "./helpers/uncomputable.js";

const run = promisify(execFile);
const MAIN = path.join(repoRoot, "dist", "cli", "main.js");

/** Checks every stored row of `a` (from its firstQuery on) against `maps` within the quantisation step. */
function expectEmbedded(a: ExplainAttentionData, maps: AttentionMap[], heads: number, queryStart: number): void {
  expect(a.maps).toHaveLength(maps.length);
  const step = a.encoding === "u16" ? 0.5 / 65535 : 0.5 / 255;
  for (const [l, map] of maps.entries()) {
    expect(a.keys).toBe(map.keys);
    expect(a.firstQuery + a.rows).toBe(map.queries);
    const w = decodeAttention(a, heads, queryStart, l);
    for (let h = 0; h < heads; h++) {
      for (let r = 0; r < a.rows; r++) {
        const visible = a.causal ? queryStart + a.firstQuery + r + 1 : map.keys;
        for (let k = 0; k < map.keys; k++) {
          const got = w(h, r, k);
          if (k >= visible) {
            expect(got).toBeNull();
            continue;
          }
          expect(got, `layer ${map.layer} head ${h} row ${r} key ${k}`).not.toBeNull();
          expect(Math.abs(got! - map.get(h, a.firstQuery + r, k))).toBeLessThanOrEqual(step + 1e-7);
        }
      }
    }
  }
}

describe("PNG maps of encoder-decoder attention", () => {
  it("draws maps of any shape; without a causal mask zero weights keep their colour", () => {
    // Cross-attention: 5 target tokens (rows) over 3 source tokens (columns), one weight exactly 0.
    const queries = 5;
    const keys = 3;
    const data = Float32Array.from({ length: 2 * queries * keys }, (_, i) => ((i * 7) % 11) / 10);
    data[(1 * queries + 4) * keys + 2] = 0; // head 1, last row, last column
    const map = new AttentionMap(0, 2, queries, keys, data);
    const scale = 4;
    for (const image of [decodePng(attentionPng(map, 1, scale)), decodePng(attentionPng(map, 1, scale, { causal: false }))]) {
      expect(image.width).toBe(keys * scale);
      expect(image.height).toBe(queries * scale);
      for (let q = 0; q < queries; q++) {
        for (let k = 0; k < keys; k++) {
          const p = ((q * scale + 1) * image.width + k * scale + 2) * 4;
          expect([...image.rgba.subarray(p, p + 3)], `cell ${q},${k}`).toEqual(colorAt(map.get(1, q, k)));
        }
      }
    }
    expect(decodePng(attentionPng(map, 0)).width).toBe(keys * 32); // default scale: up to 32 px cells
    // A square encoder map: with causal false a 0 above the diagonal is a weight, not the mask.
    const square = new AttentionMap(0, 1, 3, 3, Float32Array.from([0.5, 0, 0.5, 0.2, 0.3, 0.5, 0.1, 0.1, 0.8]));
    const causal = decodePng(attentionPng(square, 0, 1));
    const open = decodePng(attentionPng(square, 0, 1, { causal: false }));
    expect([...causal.rgba.subarray(4, 7)]).toEqual([...MASKED_RGB]);
    expect([...open.rgba.subarray(4, 7)]).toEqual(colorAt(0));
    expect([...open.rgba.subarray(8, 11)]).toEqual(colorAt(0.5)); // (0, 2): nonzero, coloured either way
    expect([...causal.rgba.subarray(8, 11)]).toEqual(colorAt(0.5));
  });
});

/** The tiny T5's source (encoder input: 5 pieces and </s>) and a teacher-forced target (4 tokens). */
const SOURCE = "Hello world a Hello world";
const TARGET = " Hello a world Hello";

describe("encoder-decoder (T5) report", () => {
  let dir: string;
  let model: Model;
  let trace: TraceResult;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-report-t5-"));
    const file = path.join(dir, "t5.gguf");
    await writeTinyT5(file, { seed: 7 });
    model = await loadModel(file);
    using context = await model.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    await session.prompt(SOURCE);
    trace = await session.trace(model.tokenize(TARGET, { addSpecial: false }), { logitLens: 3 });
  }, 60_000);
  afterAll(() => {
    model?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("embeds the encoder and the cross-attention (target rows × source keys) within the quantisation step", () => {
    const encoder = trace.encoder!;
    const traced = trace.tokens.length - trace.queryStart;
    expect(Array.from(encoder.tokens)).toEqual(Array.from(model.tokenize(SOURCE)));
    expect(Array.from(trace.tokens)).toEqual([model.info.decoderStartToken, ...model.tokenize(TARGET, { addSpecial: false })]);
    expect(trace.crossAttention).toHaveLength(trace.layers.length);

    const d = buildExplainData(trace, { model: "t5", prompt: SOURCE, target: TARGET, layerCount: 1, encoderLayerCount: 1, positionEncoding: positionEncodingOf(model.info) });
    expect(d).toMatchObject({ prompt: SOURCE, target: TARGET, positionEncoding: "relative", queryStart: 1, warnings: [] });
    expect(d.tokens.ids).toEqual(Array.from(trace.tokens));
    expect(d.encoder).toMatchObject({
      tokens: { ids: Array.from(encoder.tokens), text: encoder.pieces.map(visibleToken) },
      layers: encoder.layers,
      layerCount: 1,
    });
    expect(d.encoder!.tokens.text.at(-1)).toBe("</s>");
    // Cross-attention: one row per traced decoder token, one key per encoder token, no mask.
    const cross = d.crossAttention!;
    expect(cross).toMatchObject({ encoding: "u16", causal: false, firstQuery: 0, rows: traced, keys: encoder.tokens.length, layers: trace.layers });
    expectEmbedded(cross, trace.crossAttention!, trace.heads, trace.queryStart);
    // The encoder's self-attention: source × source, no mask.
    expect(d.encoder!.attention).toMatchObject({ encoding: "u16", causal: false, firstQuery: 0, rows: encoder.tokens.length, keys: encoder.tokens.length });
    expectEmbedded(d.encoder!.attention!, encoder.attention!, trace.heads, 0);
    // The decoder's self-attention stays causal, over the start token and the target.
    expect(d.attention).toMatchObject({ causal: true, rows: traced, keys: trace.tokens.length });
    expectEmbedded(d.attention!, trace.attention!, trace.heads, trace.queryStart);
  });

  it("shares the byte budget: 8 bits for every map, then each kind keeps its last rows, with a warning each", () => {
    const encoderTokens = trace.encoder!.tokens.length;
    const traced = trace.tokens.length - trace.queryStart;
    expect([encoderTokens, traced]).toEqual([6, 4]);
    // Values at full size (1 layer × 2 heads): decoder 2+3+4+5 visible keys per head, encoder 6 × 6, cross 4 × 6.
    const decoderCells = 2 * (2 + 3 + 4 + 5);
    const encoderCells = 2 * 6 * 6;
    const crossCells = 2 * 4 * 6;
    const total = decoderCells + encoderCells + crossCells;
    const eight = buildExplainData(trace, { model: "t5", prompt: SOURCE, maxAttentionBytes: total });
    expect(eight.warnings).toHaveLength(1);
    expect(eight.warnings[0]).toContain("8-bit precision");
    for (const a of [eight.attention!, eight.encoder!.attention!, eight.crossAttention!]) expect(a).toMatchObject({ encoding: "u8", firstQuery: 0 });
    expectEmbedded(eight.crossAttention!, trace.crossAttention!, trace.heads, trace.queryStart);

    // Half the budget, shared in proportion: decoder 14 values (its last row, 2 × 5), encoder 36
    // (3 rows of 2 × 6), cross-attention 24 (2 rows of 2 × 6).
    const half = buildExplainData(trace, { model: "t5", prompt: SOURCE, maxAttentionBytes: total / 2 });
    expect(half.attention).toMatchObject({ encoding: "u8", firstQuery: 3, rows: 1 });
    expect(half.encoder!.attention).toMatchObject({ encoding: "u8", firstQuery: 3, rows: 3 });
    expect(half.crossAttention).toMatchObject({ encoding: "u8", firstQuery: 2, rows: 2, keys: 6 });
    expect(half.warnings.slice(1)).toEqual([
      expect.stringContaining("Decoder self-attention is shown only for the last 1 of 4 traced tokens"),
      expect.stringContaining("Encoder self-attention is shown only for the last 3 of 6 source tokens"),
      expect.stringContaining("Cross-attention is shown only for the last 2 of 4 target tokens"),
    ]);
    expectEmbedded(half.crossAttention!, trace.crossAttention!, trace.heads, trace.queryStart);
    expectEmbedded(half.encoder!.attention!, trace.encoder!.attention!, trace.heads, 0);
    expectEmbedded(half.attention!, trace.attention!, trace.heads, trace.queryStart);
  });

  it("renders a cross-attention section and the encoder's heatmap beside the decoder's", () => {
    const info = { model: "tiny-t5", prompt: SOURCE, target: TARGET, architecture: "t5", layerCount: 1, encoderLayerCount: 1, positionEncoding: positionEncodingOf(model.info) };
    const html = renderExplainReport(trace, info);
    expect(embeddedData(html)).toEqual(buildExplainData(trace, info));
    expect(html).toContain("<h2>Cross-attention</h2>");
    expect(html).toContain('<canvas id="cross-heatmap" role="img" aria-label="cross-attention: target tokens over source tokens">');
    for (const id of ["cross-layer", "cross-head", "cross-scale", "cross-heads", "enc-heatmap", "enc-layer", "enc-head", "heatmap", "layer", "head"]) expect(html).toContain(`id="${id}"`);
    expect(html).toContain("<h2>Encoder self-attention</h2>");
    expect(html).toContain("<h2>Decoder self-attention</h2>");
    expect(html).not.toContain("<h2>Attention</h2>");
    expect(html).toContain("Rows: target tokens (the decoder's input). Columns: source tokens (the encoder's input).");
    expect(html).toContain("relative position buckets");
    expect(html).toContain("1 encoder layers · 1 decoder layers · 2 heads");
    // Source and target as given, and the source tokens' chips with their visible text.
    expect(html).toContain(`<h3>Source (encoder input)</h3>\n<pre class="prompt">${SOURCE}</pre>`);
    expect(html).toContain(`<h3>Target (decoder input)</h3>\n<pre class="prompt">${TARGET}</pre>`);
    expect(html).toContain('title="source position 5, token 1">&lt;/s&gt;<sub>5</sub></span>');
    // The page's script knows the cross-attention widget and offers the mean of the heads.
    expect(html).toContain('prefix: "cross-"');
    expect(html).toContain("mean of all heads");
  });
});

describe("llama-napi explain (CLI) on T5", () => {
  let dir: string;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-explain-t5-"));
  }, 180_000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("on a T5 model traces --target over the source: cross-attention in the report and as PNGs", async () => {
    const t5 = path.join(dir, "t5.gguf");
    await writeTinyT5(t5, { seed: 7 });
    const out = path.join(dir, "t5.html");
    const pngs = path.join(dir, "t5-png");
    const { stdout } = await run(process.execPath, [MAIN, "explain", "-m", t5, "-p", SOURCE, "--target", TARGET, "-o", out, "--png", pngs, "-t", "1", "--top-k", "5"]);
    expect(stdout).toContain(`source: 6 tokens\ntraced target (from --target, teacher-forced): 4 tokens ${JSON.stringify(TARGET)}\n`);
    expect(stdout).toMatch(/^wrote .*t5\.html \([\d.]+ KiB\): 6 source tokens, 5 decoder tokens, 1 encoder \+ 1 decoder layers × 2 heads$/m);
    expect(stdout).toContain(`wrote 6 PNG heatmaps to ${pngs}`);
    using model = await loadModel(t5);
    const source = Array.from(model.tokenize(SOURCE));
    const target = Array.from(model.tokenize(TARGET, { addSpecial: false }));
    const d = embeddedData(fs.readFileSync(out, "utf8"));
    expect(d).toMatchObject({ prompt: SOURCE, target: TARGET, architecture: "t5", positionEncoding: "relative", layerCount: 1, layers: [0], heads: 2, queryStart: 1 });
    expect(d.encoder).toMatchObject({ tokens: { ids: source }, layers: [0], layerCount: 1 });
    expect(d.tokens.ids).toEqual([model.info.decoderStartToken, ...target]);
    expect(d.crossAttention).toMatchObject({ causal: false, firstQuery: 0, rows: target.length, keys: source.length, layers: [0] });
    expect(d.next).toHaveLength(5);
    // The report's weights are the API's.
    using context = await model.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    await session.prompt(SOURCE);
    const trace = await session.trace(Int32Array.from(target));
    const cross = trace.crossAttention![0];
    expectEmbedded(d.crossAttention!, [cross], 2, 1);
    expectEmbedded(d.encoder!.attention!, trace.encoder!.attention!, 2, 0);
    expect(d.next[0][0]).toBe(trace.next[0].token);
    expect(fs.readdirSync(pngs).sort()).toEqual([
      "cross-layer0-head0.png", "cross-layer0-head1.png",
      "encoder-layer0-head0.png", "encoder-layer0-head1.png",
      "layer0-head0.png", "layer0-head1.png",
    ]);
    // Target rows × source columns, every cell the colour of its weight.
    const image = decodePng(fs.readFileSync(path.join(pngs, "cross-layer0-head1.png")));
    const scale = Math.min(32, Math.floor(512 / source.length));
    expect([image.width, image.height]).toEqual([source.length * scale, target.length * scale]);
    for (let q = 0; q < target.length; q++) {
      for (let k = 0; k < source.length; k++) {
        const p = ((q * scale + scale / 2) * image.width + k * scale + scale / 2) * 4;
        expect([...image.rgba.subarray(p, p + 3)], `cell ${q},${k}`).toEqual(colorAt(cross.get(1, q, k)));
      }
    }
    const encoderImage = decodePng(fs.readFileSync(path.join(pngs, "encoder-layer0-head0.png")));
    expect([encoderImage.width, encoderImage.height]).toEqual([source.length * scale, source.length * scale]);
  });

  it("on a T5 model without --target traces what greedy generation writes (16 tokens at most)", async () => {
    const t5 = path.join(dir, "t5-generate.gguf");
    await writeTinyT5(t5, { seed: 7 });
    const out = path.join(dir, "t5-generated.html");
    const { stdout } = await run(process.execPath, [MAIN, "explain", "-m", t5, "-p", SOURCE, "-o", out, "-t", "1"]);
    using model = await loadModel(t5);
    using context = await model.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    await session.prompt(SOURCE);
    const greedy = await session.generate({ temperature: 0, topK: 0, maxTokens: 16 }).collect();
    expect(greedy.tokens.length).toBeGreaterThan(0);
    const how = greedy.finishReason === "length" ? "stopped at --max-tokens 16" : "until the model's end token";
    expect(stdout).toContain(`traced target (generated greedily, ${how}): ${greedy.tokens.length} tokens ${JSON.stringify(greedy.text)}\n`);
    const d = embeddedData(fs.readFileSync(out, "utf8"));
    expect(d.tokens.ids).toEqual([model.info.decoderStartToken, ...greedy.tokens]);
    expect(d.target).toBe(greedy.text);
    expect(d.crossAttention).toMatchObject({ rows: greedy.tokens.length, keys: 6 });
    // The same tokens teacher-forced give the same cross-attention.
    await session.prompt(SOURCE);
    const trace = await session.trace(Int32Array.from(greedy.tokens));
    expectEmbedded(d.crossAttention!, trace.crossAttention!, 2, 1);
    // --max-tokens caps it.
    const capped = await run(process.execPath, [MAIN, "explain", "-m", t5, "-p", SOURCE, "--max-tokens", "2", "-o", path.join(dir, "t5-2.html"), "-t", "1"]);
    expect(capped.stdout).toMatch(/traced target \(generated greedily, [^)]*\): [12] tokens /);
    expect(embeddedData(fs.readFileSync(path.join(dir, "t5-2.html"), "utf8")).tokens.ids).toEqual([model.info.decoderStartToken, ...greedy.tokens.slice(0, 2)]);
  });

  it("reports usage errors with exit status 2", async () => {
    const modelPath = fixturePath("gpt2-tiny-f32");
    const noPrompt = await run(process.execPath, [MAIN, "explain", "-m", modelPath]).catch((e: { code: number; stderr: string }) => e);
    expect(noPrompt).toMatchObject({ code: 2 });
    expect((noPrompt as { stderr: string }).stderr).toContain("explain needs a prompt");
    const badK = await run(process.execPath, [MAIN, "explain", "-m", modelPath, "-p", "x", "--lens-k", "0"]).catch((e: { code: number }) => e);
    expect(badK).toMatchObject({ code: 2 });
    const target = await run(process.execPath, [MAIN, "explain", "-m", modelPath, "-p", "x", "--target", "y"]).catch((e: { code: number; stderr: string }) => e);
    expect(target).toMatchObject({ code: 2 });
    expect((target as { stderr: string }).stderr).toContain("--target needs an encoder-decoder model (such as T5); this one is gpt2");
    const both = await run(process.execPath, [MAIN, "explain", "-m", modelPath, "-p", "x", "--target", "y", "--max-tokens", "3"]).catch((e: { code: number }) => e);
    expect(both).toMatchObject({ code: 2 });
    const missing = await run(process.execPath, [MAIN, "explain", "-m", path.join(dir, "nope.gguf"), "-p", "x"]).catch((e: { code: number; stderr: string }) => e);
    expect(missing).toMatchObject({ code: 1 });
    expect((missing as { stderr: string }).stderr).toContain("ERR_FILE_NOT_FOUND");
  });
});
