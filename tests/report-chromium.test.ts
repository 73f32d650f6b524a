/**
 * The explain report in a real browser: scripts/check-report.mjs opens it in headless Chromium
 * (DevTools protocol over a pipe) and checks console errors, network requests, the drawn heatmap,
 * the hover tooltip and the logit lens; for a T5 report also the cross-attention grid and the
 * encoder's heatmap. Chromium also decodes our PNGs, independently of our decoder, and our
 * decoder reads Chromium's screenshots.
 *
 * Skipped when Chromium is not installed: on Debian/Ubuntu `apt-get install -y chromium`, or set
 * CHROMIUM=/path/to/chrome.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { AttentionMap, loadModel, type TraceResult } from "../src/index.js";
import { attentionPng, decodePng, positionEncodingOf, renderExplainReport } from "../src/report/index.js";
import { MASKED_RGB, colorAt } from "../src/report/colormap.js";
import { findChromium } from "../scripts/check-report.mjs";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";
import { writeTinyT5 } from "./helpers/uncomputable.js";

const run = promisify(execFile);
const SCRIPT = path.join(repoRoot, "scripts", "check-report.mjs");

const chromium = findChromium();
const SKIP_MESSAGE = "skipped: chromium is not on PATH (Debian: apt-get install -y chromium, or set CHROMIUM=/path/to/chrome)";
if (!chromium) console.warn(`report-chromium.test.ts: ${SKIP_MESSAGE}`);

interface HeatmapCheck {
  layers: number;
  heads: number;
  tooltip: { hidden: boolean; text: string; map: string; query: string; key: string; weight: string };
  heatmap: { width: number; height: number; rows: number; cols: number; distinctColors: number; coloredFraction: number };
}

interface CheckResult {
  ok: boolean;
  failures: string[];
  consoleErrors: string[];
  externalRequests: string[];
  title: string | null;
  lensCells?: number;
  tooltip?: { hidden: boolean; text: string; query: string; key: string; weight: string };
  heatmap?: { width: number; height: number; distinctColors: number; coloredFraction: number };
  screenshot?: string;
  crossAttention?: HeatmapCheck;
  encoderAttention?: HeatmapCheck;
}

async function check(file: string, ...args: string[]): Promise<CheckResult> {
  const r = await run(process.execPath, [SCRIPT, file, "--json", ...args], { timeout: 90_000 }).catch((e: { stdout?: string; stderr?: string; code?: number }) => {
    if (e.code === 1 && e.stdout) return { stdout: e.stdout }; // checks failed: the JSON says which
    throw new Error(`check-report failed (${e.code}): ${e.stderr}`);
  });
  return JSON.parse(r.stdout) as CheckResult;
}

/** dist/ for the script's PNG decoder: built when missing or older than src/. */

describe.skipIf(!chromium)("explain report in headless Chromium", () => {
  let dir: string;
  let trace: TraceResult;
  let info: Parameters<typeof renderExplainReport>[1];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-chromium-test-"));
    const file = fixturePath("llama-tiny-f32");
    using model = await loadModel(file);
    using context = await model.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    trace = await session.trace("Hello world, how are you today?", { logitLens: 3 });
    info = {
      model: "llama-tiny",
      prompt: "Hello world, how are you today?",
      architecture: model.info.architecture,
      layerCount: model.info.layers,
      positionEncoding: positionEncodingOf(model.info),
    };
  }, 180_000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("draws the heatmap, shows weights on hover, builds the lens, with no error and no request", async () => {
    const file = path.join(dir, "report.html");
    fs.writeFileSync(file, renderExplainReport(trace, info));
    const shot = path.join(dir, "page.png");
    const heat = path.join(dir, "heatmap.png");
    const r = await check(file, "--screenshot", shot, "--heatmap", heat);
    expect(r.failures).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.consoleErrors).toEqual([]);
    expect(r.externalRequests).toEqual([]);
    const n = trace.tokens.length;
    expect(r.lensCells).toBe(trace.layers.length * n);
    // The tooltip of (last query, first key) in layer 0, head 0 shows the trace's weight.
    expect(r.tooltip).toMatchObject({ hidden: false, query: String(n - 1), key: "0" });
    const expected = trace.attention![0].get(0, n - 1, 0);
    expect(Math.abs(Number(r.tooltip!.weight) - expected)).toBeLessThan(1e-4);
    expect(r.tooltip!.text).toContain(`weight ${expected.toFixed(4)}`);
    expect(r.heatmap!.distinctColors).toBeGreaterThanOrEqual(12);
    expect(r.heatmap!.coloredFraction).toBeGreaterThan(0.45); // a causal square map: about half is masked
    // Each cell of layer 0, head 0 as the browser drew it: the colour of the trace's weight.
    const cells = decodePng(fs.readFileSync(heat));
    const cell = cells.width / n;
    expect(cells.height).toBe(cells.width);
    expect(Number.isInteger(cell)).toBe(true);
    for (let q = 0; q < n; q++) {
      for (let k = 0; k < n; k++) {
        const expectedRgb = k > q ? MASKED_RGB : colorAt(trace.attention![0].get(0, q, k));
        const p = ((q * cell + cell / 2) * cells.width + k * cell + cell / 2) * 4;
        const got = [...cells.rgba.subarray(p, p + 3)];
        for (let c = 0; c < 3; c++) expect(Math.abs(got[c] - expectedRgb[c]), `cell ${q},${k}`).toBeLessThanOrEqual(2);
      }
    }
    // Our decoder reads Chromium's screenshot: full width, the page background at the corner.
    const image = decodePng(fs.readFileSync(shot));
    expect(image.width).toBe(1280);
    expect(image.height).toBeGreaterThan(1000);
    expect([...image.rgba.subarray(0, 4)]).toEqual([247, 247, 249, 255]);
  });

  it("runs no injected markup from token texts, the prompt or the model name", async () => {
    const evil = "<script>document.title='pwned'</script>";
    const pieces = trace.pieces.map((p, i) => (i % 3 === 1 ? `${evil}"'&` : i % 3 === 2 ? `</script><img src=x onerror="document.title='pwned'">` : p));
    const hostile: TraceResult = { ...trace, pieces, next: trace.next.map((t) => ({ ...t, text: evil })) };
    const file = path.join(dir, "hostile.html");
    fs.writeFileSync(file, renderExplainReport(hostile, { ...info, model: `<img src=x onerror="document.title='pwned'">`, prompt: evil }));
    const r = await check(file);
    expect(r.failures).toEqual([]);
    // The title shows the prompt as text; an injected script would have replaced it with "pwned".
    expect(r.title).not.toBe("pwned");
    expect(r.title).toMatch(/^explain: <script>document\.title='pwned'<\/script> — <img src=x/);
  });

  it("draws a T5 report's cross-attention grid (target rows × source columns, mean of heads) and its encoder heatmap", async () => {
    const t5 = path.join(dir, "t5.gguf");
    await writeTinyT5(t5, { seed: 7 });
    using model = await loadModel(t5);
    using context = await model.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    const source = "Hello world a Hello world";
    await session.prompt(source);
    const t5Trace = await session.trace(model.tokenize(" Hello a world Hello", { addSpecial: false }));
    const file = path.join(dir, "t5.html");
    fs.writeFileSync(file, renderExplainReport(t5Trace, { model: "tiny-t5", prompt: source, architecture: "t5", positionEncoding: positionEncodingOf(model.info) }));
    const grid = path.join(dir, "cross.png");
    const r = await check(file, "--cross-heatmap", grid);
    expect(r.failures).toEqual([]);
    expect(r.consoleErrors).toEqual([]);
    expect(r.externalRequests).toEqual([]);
    const cross = t5Trace.crossAttention![0];
    const rows = cross.queries;
    const cols = cross.keys;
    expect([rows, cols]).toEqual([4, 6]);
    expect(r.crossAttention).toMatchObject({ layers: 1, heads: 3, heatmap: { rows, cols } }); // heads 0, 1 and the mean
    expect(r.crossAttention!.heatmap.coloredFraction).toBeGreaterThan(0.95); // no mask
    const mean = (q: number, k: number) => (cross.get(0, q, k) + cross.get(1, q, k)) / 2;
    // Hovering the last target row's first source column shows the mean weight, labelled target/source.
    const tip = r.crossAttention!.tooltip;
    expect(tip).toMatchObject({ hidden: false, map: "cross-", query: String(t5Trace.queryStart + rows - 1), key: "0" });
    expect(Math.abs(Number(tip.weight) - mean(rows - 1, 0))).toBeLessThan(1e-4);
    expect(tip.text).toContain(`target ${t5Trace.queryStart + rows - 1}`);
    expect(tip.text).toContain("source 0  ␣Hello");
    expect(tip.text).toContain(`mean weight ${mean(rows - 1, 0).toFixed(4)}`);
    // Each cell as Chromium drew it: the colour of the mean weight.
    const cells = decodePng(fs.readFileSync(grid));
    const cell = cells.width / cols;
    expect(Number.isInteger(cell)).toBe(true);
    expect(cells.height).toBe(rows * cell);
    for (let q = 0; q < rows; q++) {
      for (let k = 0; k < cols; k++) {
        const expectedRgb = colorAt(mean(q, k));
        const p = ((q * cell + cell / 2) * cells.width + k * cell + cell / 2) * 4;
        const got = [...cells.rgba.subarray(p, p + 3)];
        for (let c = 0; c < 3; c++) expect(Math.abs(got[c] - expectedRgb[c]), `cell ${q},${k}`).toBeLessThanOrEqual(2);
      }
    }
    // The encoder's heatmap: source × source, no mask; and the decoder's as in every report.
    expect(r.encoderAttention).toMatchObject({ layers: 1, heads: 3, heatmap: { rows: 6, cols: 6 }, tooltip: { hidden: false, map: "enc-", query: "5", key: "0" } });
    expect(r.encoderAttention!.heatmap.coloredFraction).toBeGreaterThan(0.95);
    expect(Math.abs(Number(r.encoderAttention!.tooltip.weight) - t5Trace.encoder!.attention![0].get(0, 5, 0))).toBeLessThan(1e-4);
    expect(r.tooltip).toMatchObject({ hidden: false, query: String(t5Trace.tokens.length - 1), key: "0" });
  });

  it("decodes our attention PNG to exactly our pixels (Chromium's own PNG decoder)", async () => {
    const queries = 5;
    const keys = 7;
    const data = new Float32Array(2 * queries * keys);
    for (let h = 0; h < 2; h++) {
      for (let q = 0; q < queries; q++) {
        const visible = keys - queries + q + 1;
        for (let k = 0; k < visible; k++) data[(h * queries + q) * keys + k] = ((k + 1) * (h + 2)) / (((visible * (visible + 1)) / 2) * (h + 2));
      }
    }
    const map = new AttentionMap(0, 2, queries, keys, data);
    const scale = 3;
    const png = attentionPng(map, 1, scale);
    const expected: number[] = [];
    for (let y = 0; y < queries * scale; y++) {
      for (let x = 0; x < keys * scale; x++) {
        const q = Math.floor(y / scale);
        const k = Math.floor(x / scale);
        expected.push(...(k > keys - queries + q ? MASKED_RGB : colorAt(map.get(1, q, k))), 255);
      }
    }
    const page = `<!doctype html><meta charset="utf-8"><title>loading</title>
<img id="png" src="data:image/png;base64,${png.toString("base64")}">
<script>
window.addEventListener("load", () => {
  const img = document.getElementById("png");
  const expected = ${JSON.stringify(expected)};
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const got = ctx.getImageData(0, 0, c.width, c.height).data;
  if (c.width !== ${keys * scale} || c.height !== ${queries * scale}) { document.title = "png-bad size " + c.width + "x" + c.height; return; }
  for (let i = 0; i < expected.length; i++) {
    if (got[i] !== expected[i]) { document.title = "png-bad at byte " + i + ": " + got[i] + " != " + expected[i]; return; }
  }
  document.title = "png-ok";
});
</script>`;
    const file = path.join(dir, "png.html");
    fs.writeFileSync(file, page);
    const r = await check(file, "--page");
    expect(r.failures).toEqual([]);
    expect(r.title).toBe("png-ok");
  });
});

if (!chromium) {
  describe("explain report in headless Chromium", () => {
    it.skip(SKIP_MESSAGE, () => {});
  });
}
