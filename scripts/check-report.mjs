#!/usr/bin/env node
/**
 * Opens an `llama-napi explain` report in headless Chromium and checks that it works offline:
 * no console errors, no uncaught exceptions, no Content-Security-Policy violations, no request
 * for anything but the file itself (not even another local file); the attention heatmap is drawn (a screenshot of it, decoded
 * with our PNG decoder, has many colours); hovering a cell shows its weight; switching layers
 * and heads works; the logit-lens grid has a cell per layer and position. An encoder-decoder
 * model's report gets the same checks for its cross-attention grid and its encoder heatmap.
 *
 *   node scripts/check-report.mjs REPORT.html [--screenshot OUT.png] [--heatmap OUT.png]
 *                                 [--cross-heatmap OUT.png] [--cross-head H]
 *                                 [--hover-screenshot OUT.png] [--json]
 *   node scripts/check-report.mjs PAGE.html --page [--screenshot OUT.png] [--json]
 *
 * --screenshot saves the whole page, --heatmap the heatmap's cells, --hover-screenshot the viewport
 * while the mouse is over a heatmap cell (with its tooltip). --cross-heatmap saves the
 * cross-attention grid's cells, drawn for head H (--cross-head; default -1, the mean of the heads).
 * --page only loads the page and reports errors, requests and document.title (for any page).
 * --json prints the result as JSON on stdout. Exit status: 0 all checks pass, 1 a check failed,
 * 2 usage error or no browser.
 *
 * It installs nothing. It needs:
 *  - Chromium: on Debian/Ubuntu `apt-get install -y chromium` (the binary is `chromium`); or set
 *    CHROMIUM=/path/to/chrome for another Chromium-based browser.
 *  - dist/ (`npm run build:ts`), for the PNG decoder (dist/report/png.js).
 *
 * The browser is driven through the DevTools protocol over a pipe (--remote-debugging-pipe: the
 * browser reads commands on fd 3 and writes replies on fd 4, NUL-separated JSON), with a fresh
 * profile in a temporary directory that is removed afterwards.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const TIMEOUT_MS = 60_000;
/** Requests a self-contained page may make besides loading itself. */
const INLINE_SCHEMES = new Set(["data:", "blob:", "about:"]);

/** The Chromium binary: $CHROMIUM, or `chromium` / `chromium-browser` on PATH. */
export function findChromium() {
  if (process.env.CHROMIUM) return fs.existsSync(process.env.CHROMIUM) ? process.env.CHROMIUM : null;
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    for (const name of ["chromium", "chromium-browser"]) {
      const file = path.join(dir, name);
      try {
        fs.accessSync(file, fs.constants.X_OK);
        return file;
      } catch {
        // not here
      }
    }
  }
  return null;
}

/** A DevTools protocol connection over the browser's pipe. */
class Cdp {
  #next = 1;
  #pending = new Map();
  #listeners = [];
  #buffer = "";

  constructor(write, read) {
    this.write = write;
    read.setEncoding("utf8");
    read.on("data", (chunk) => {
      this.#buffer += chunk;
      let end;
      while ((end = this.#buffer.indexOf("\0")) >= 0) {
        const message = JSON.parse(this.#buffer.slice(0, end));
        this.#buffer = this.#buffer.slice(end + 1);
        this.#dispatch(message);
      }
    });
  }

  #dispatch(message) {
    if (message.id !== undefined) {
      const pending = this.#pending.get(message.id);
      if (!pending) return;
      this.#pending.delete(message.id);
      if (message.error) pending.reject(new Error(`${pending.method}: ${message.error.message}`));
      else pending.resolve(message.result);
      return;
    }
    for (const listener of this.#listeners) listener(message);
  }

  send(method, params = {}, sessionId) {
    const id = this.#next++;
    const message = { id, method, params, ...(sessionId ? { sessionId } : {}) };
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, method });
      this.write.write(`${JSON.stringify(message)}\0`);
    });
  }

  on(listener) {
    this.#listeners.push(listener);
  }

  waitFor(predicate, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      this.#listeners.push((message) => {
        if (predicate(message)) {
          clearTimeout(timer);
          resolve(message);
        }
      });
    });
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Loads `htmlFile` in headless Chromium and checks it. Returns
 * { ok, failures[], consoleErrors[], externalRequests[], title, heatmap?, tooltip?, lensCells?, screenshot?,
 *   crossAttention?: { layers, heads, tooltip, heatmap }, encoderAttention?: { ... } }.
 */
export async function checkReport(htmlFile, options = {}) {
  const chromium = options.chromium ?? findChromium();
  if (!chromium) throw new Error("Chromium not found: apt-get install -y chromium, or set CHROMIUM=/path/to/chrome");
  const { decodePng } = await import(pathToFileURL(path.join(here, "..", "dist", "report", "png.js")).href).catch(() => {
    throw new Error("dist/report/png.js is missing: run `npm run build:ts` first");
  });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-chromium-"));
  const [width, height] = options.windowSize ?? [1280, 1000];
  const args = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    `--window-size=${width},${height}`,
    `--user-data-dir=${profile}`,
    "--remote-debugging-pipe",
    "about:blank",
  ];
  const browser = spawn(chromium, args, { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
  let stderr = "";
  browser.stderr.setEncoding("utf8");
  browser.stderr.on("data", (s) => {
    stderr = (stderr + s).slice(-4000);
  });
  const exited = new Promise((resolve) => browser.once("exit", resolve));
  const cdp = new Cdp(browser.stdio[3], browser.stdio[4]);
  const result = { ok: false, failures: [], consoleErrors: [], externalRequests: [], title: null };
  const fail = (message) => result.failures.push(message);
  const pageUrl = pathToFileURL(path.resolve(htmlFile)).href;
  const watchdog = setTimeout(() => browser.kill("SIGKILL"), TIMEOUT_MS);
  try {
    const failedStart = exited.then(() => {
      throw new Error(`Chromium exited at start: ${stderr.trim().split("\n").slice(-3).join(" | ")}`);
    });
    const { targetId } = await Promise.race([cdp.send("Target.createTarget", { url: "about:blank" }), failedStart]);
    const { sessionId } = await cdp.send("Target.attachToTarget", { targetId, flatten: true });
    const send = (method, params) => cdp.send(method, params, sessionId);
    cdp.on((m) => {
      if (m.sessionId !== sessionId) return;
      if (m.method === "Runtime.exceptionThrown") {
        const d = m.params.exceptionDetails;
        result.consoleErrors.push(`uncaught: ${d.exception?.description ?? d.text} (line ${d.lineNumber})`);
      } else if (m.method === "Runtime.consoleAPICalled" && (m.params.type === "error" || m.params.type === "assert")) {
        result.consoleErrors.push(`console.${m.params.type}: ${m.params.args.map((a) => a.value ?? a.description).join(" ")}`);
      } else if (m.method === "Log.entryAdded" && m.params.entry.level === "error") {
        result.consoleErrors.push(`${m.params.entry.source}: ${m.params.entry.text}`);
      } else if (m.method === "Network.requestWillBeSent") {
        const url = m.params.request.url;
        if (url !== pageUrl && !INLINE_SCHEMES.has(new URL(url).protocol)) result.externalRequests.push(url);
      }
    });
    await Promise.all(["Runtime.enable", "Log.enable", "Network.enable", "Page.enable"].map((m) => send(m)));
    await send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: false });
    const loaded = cdp.waitFor((m) => m.sessionId === sessionId && m.method === "Page.loadEventFired", 30_000, "the page to load");
    const nav = await send("Page.navigate", { url: pageUrl });
    if (nav.errorText) throw new Error(`navigation failed: ${nav.errorText}`);
    await loaded;
    const evaluate = async (expression) => {
      const r = await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
      if (r.exceptionDetails) throw new Error(`evaluate failed: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
      return r.result.value;
    };

    if (!options.page) {
      let ready = false;
      for (let i = 0; i < 100 && !ready; i++) {
        ready = await evaluate(`document.body.dataset.ready === "1"`);
        if (!ready) await sleep(50);
      }
      if (!ready) fail("the page script did not finish (document.body.dataset.ready is not set)");
      else await checkReportPage(evaluate, send, decodePng, result, fail, options);
    }
    await sleep(100); // let late console messages arrive
    result.title = await evaluate("document.title");
    if (options.screenshot) {
      // The whole page: make the viewport as tall as the content, then capture it.
      await evaluate("scrollTo(0, 0)");
      const metrics = await send("Page.getLayoutMetrics");
      const size = metrics.cssContentSize ?? metrics.contentSize;
      const fullHeight = Math.min(Math.ceil(size.height), 16000);
      await send("Emulation.setDeviceMetricsOverride", { width, height: fullHeight, deviceScaleFactor: 1, mobile: false });
      await sleep(100);
      const shot = await send("Page.captureScreenshot", { format: "png", clip: { x: 0, y: 0, width, height: fullHeight, scale: 1 } });
      await send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: false });
      fs.writeFileSync(options.screenshot, Buffer.from(shot.data, "base64"));
      result.screenshot = path.resolve(options.screenshot);
    }
    await cdp.send("Browser.close").catch(() => {});
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  } finally {
    const closed = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
    if (!closed) {
      browser.kill("SIGKILL");
      await exited;
    }
    clearTimeout(watchdog);
    fs.rmSync(profile, { recursive: true, force: true });
  }
  for (const e of result.consoleErrors) fail(`console error: ${e}`);
  for (const u of result.externalRequests) fail(`network request: ${u}`);
  result.ok = result.failures.length === 0;
  return result;
}

/** The checks specific to an explain report. */
async function checkReportPage(evaluate, send, decodePng, result, fail, options) {
  const info = await evaluate(`(() => {
    const lens = document.querySelectorAll("table.lens tbody td").length;
    return { lens, heatmap: !!document.getElementById("heatmap"), encoder: !!document.getElementById("enc-heatmap"), cross: !!document.getElementById("cross-heatmap") };
  })()`);
  result.lensCells = info.lens;
  if (!info.heatmap) {
    fail("no attention heatmap on the page");
    return;
  }
  const decoder = await checkHeatmap(evaluate, send, decodePng, fail, {
    prefix: "",
    what: "the heatmap",
    layerIndex: options.layerIndex ?? 0,
    head: options.head ?? 0,
    heatmapFile: options.heatmap,
    hoverScreenshot: options.hoverScreenshot,
    causal: true,
  });
  result.tooltip = decoder.tooltip;
  result.heatmap = decoder.heatmap;
  // An encoder-decoder model's report: the cross-attention grid and the encoder's heatmap.
  if (info.cross) {
    result.crossAttention = await checkHeatmap(evaluate, send, decodePng, fail, {
      prefix: "cross-",
      what: "the cross-attention grid",
      layerIndex: options.crossLayerIndex ?? 0,
      head: options.crossHead ?? -1,
      heatmapFile: options.crossHeatmap,
      causal: false,
    });
  }
  if (info.encoder) {
    result.encoderAttention = await checkHeatmap(evaluate, send, decodePng, fail, {
      prefix: "enc-",
      what: "the encoder heatmap",
      layerIndex: 0,
      head: 0,
      causal: false,
    });
  }
}

/**
 * One heatmap widget (element ids `${prefix}heatmap`, `${prefix}layer`, ...): every layer and
 * head draws, hovering the last row's first cell shows a tooltip, and a screenshot of its cells
 * has many colours. Returns { layers, heads, tooltip, heatmap }.
 */
async function checkHeatmap(evaluate, send, decodePng, fail, o) {
  const id = (name) => JSON.stringify(o.prefix + name);
  // Every layer and head (and the mean) draws without an error.
  const counts = await evaluate(`(() => {
    const layer = document.getElementById(${id("layer")}), head = document.getElementById(${id("head")}), scale = document.getElementById(${id("scale")});
    for (let l = 0; l < layer.options.length; l++) {
      layer.value = String(l); layer.dispatchEvent(new Event("change"));
      for (const o of head.options) { head.value = o.value; head.dispatchEvent(new Event("change")); }
    }
    scale.value = "sqrt"; scale.dispatchEvent(new Event("change"));
    scale.value = "linear"; scale.dispatchEvent(new Event("change"));
    layer.value = String(${o.layerIndex}); layer.dispatchEvent(new Event("change"));
    head.value = String(${o.head}); head.dispatchEvent(new Event("change"));
    return { layers: layer.options.length, heads: head.options.length };
  })()`);
  const box = await evaluate(`(() => {
    const c = document.getElementById(${id("heatmap")});
    c.scrollIntoView({ block: "start" });
    const r = c.getBoundingClientRect();
    return { x: r.left, y: r.top, pageX: r.left + scrollX, pageY: r.top + scrollY, width: r.width, height: r.height, ...c.dataset };
  })()`);
  const g = { left: +box.left, top: +box.top, cell: +box.cell, rows: +box.rows, cols: +box.cols };
  // Hover the last row's first key (never masked) and read the tooltip.
  const hx = box.x + g.left + g.cell / 2;
  const hy = box.y + g.top + (g.rows - 0.5) * g.cell;
  await send("Input.dispatchMouseEvent", { type: "mouseMoved", x: hx, y: hy });
  await sleep(50);
  const tooltip = await evaluate(`(() => {
    const t = document.getElementById("tooltip");
    return { hidden: t.hidden, text: t.textContent, map: t.dataset.map, query: t.dataset.query, key: t.dataset.key, weight: t.dataset.weight };
  })()`);
  if (tooltip.hidden) fail(`hovering ${o.what} shows no tooltip`);
  if (o.hoverScreenshot) {
    const view = await send("Page.captureScreenshot", { format: "png" });
    fs.writeFileSync(o.hoverScreenshot, Buffer.from(view.data, "base64"));
  }
  await send("Input.dispatchMouseEvent", { type: "mouseMoved", x: 1, y: 1 });
  // Screenshot the heatmap's cells and look at the pixels.
  const shot = await send("Page.captureScreenshot", {
    format: "png",
    captureBeyondViewport: true,
    clip: { x: box.pageX + g.left, y: box.pageY + g.top, width: g.cols * g.cell, height: g.rows * g.cell, scale: 1 },
  });
  const png = Buffer.from(shot.data, "base64");
  if (o.heatmapFile) fs.writeFileSync(o.heatmapFile, png);
  const image = decodePng(png);
  const colours = new Set();
  let coloured = 0;
  for (let i = 0; i < image.rgba.length; i += 4) {
    const [r, g2, b] = [image.rgba[i], image.rgba[i + 1], image.rgba[i + 2]];
    colours.add((r << 16) | (g2 << 8) | b);
    // Neither white nor the light gray of masked cells: a colour of the map.
    if (!(r > 220 && g2 > 220 && b > 220)) coloured++;
  }
  const pixels = image.width * image.height;
  const heatmap = { width: image.width, height: image.height, rows: g.rows, cols: g.cols, distinctColors: colours.size, coloredFraction: coloured / pixels };
  // A causal square map is about half masked; a map with no mask is coloured everywhere.
  const minShare = !o.causal ? 0.8 : g.rows === g.cols ? 0.45 : 0.2;
  const minColours = o.causal ? Math.min(12, (g.rows * (g.rows + 1)) / 2) : Math.min(12, Math.ceil((g.rows * g.cols) / 2));
  if (colours.size < minColours) fail(`${o.what} has only ${colours.size} distinct colours`);
  if (coloured / pixels < minShare) fail(`only ${(100 * coloured / pixels).toFixed(1)}% of ${o.what} is coloured`);
  return { layers: counts.layers, heads: counts.heads, tooltip, heatmap };
}

async function main(argv) {
  const options = {};
  let file;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--screenshot") options.screenshot = argv[++i];
    else if (a === "--heatmap") options.heatmap = argv[++i];
    else if (a === "--cross-heatmap") options.crossHeatmap = argv[++i];
    else if (a === "--cross-head") options.crossHead = Number(argv[++i]);
    else if (a === "--hover-screenshot") options.hoverScreenshot = argv[++i];
    else if (a === "--page") options.page = true;
    else if (a === "--json") options.json = true;
    else if (a.startsWith("-") || file !== undefined) {
      process.stderr.write(`usage: node scripts/check-report.mjs REPORT.html [--page] [--screenshot OUT.png] [--heatmap OUT.png] [--cross-heatmap OUT.png] [--cross-head H] [--hover-screenshot OUT.png] [--json]\n`);
      return 2;
    } else file = a;
  }
  if (file === undefined || !fs.existsSync(file)) {
    process.stderr.write(`check-report: give an existing HTML file${file ? ` (${file} not found)` : ""}\n`);
    return 2;
  }
  if (!findChromium()) {
    process.stderr.write("check-report: Chromium not found. Install it (Debian: apt-get install -y chromium) or set CHROMIUM=/path/to/chrome\n");
    return 2;
  }
  const result = await checkReport(file, options);
  if (options.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    process.stdout.write(result.ok ? `ok: ${file}\n` : `FAILED: ${file}\n${result.failures.map((f) => `  - ${f}`).join("\n")}\n`);
    if (result.heatmap) process.stdout.write(`heatmap: ${result.heatmap.distinctColors} colours, ${(100 * result.heatmap.coloredFraction).toFixed(1)}% coloured\n`);
    const cross = result.crossAttention?.heatmap;
    if (cross) process.stdout.write(`cross-attention: ${cross.rows} × ${cross.cols} cells, ${cross.distinctColors} colours, ${(100 * cross.coloredFraction).toFixed(1)}% coloured\n`);
    if (result.screenshot) process.stdout.write(`screenshot: ${result.screenshot}\n`);
  }
  return result.ok ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`check-report: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 2;
    },
  );
}
