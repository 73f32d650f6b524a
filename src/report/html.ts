/**
 * renderExplainReport(): a self-contained HTML page that shows what a model did with a prompt,
 * from session.trace(): the tokens, attention heatmaps per layer and head, the logit lens and
 * the next-token distribution. Everything (CSS, script, data) is inline; a Content-Security-Policy
 * forbids every network request and any script but the page's own.
 */
import { createHash } from "node:crypto";

import type { TraceResult } from "../trace.js";
import { MASKED_RGB, VIRIDIS_STOPS } from "./colormap.js";
import { buildExplainData, type ExplainData, type ExplainReportInfo, type PositionEncoding } from "./data.js";
import { PAGE_SCRIPT } from "./page-script.js";
import { escapeHtml, jsonForScript } from "./text.js";

export { buildExplainData, positionEncodingOf } from "./data.js";
export type { ExplainData, ExplainReportInfo, ExplainAttentionData, ExplainCrossAttentionData, ExplainEncoderData, PositionEncoding } from "./data.js";

const CSS = `
:root { color-scheme: light; --fg: #1d1d22; --muted: #62626e; --line: #e2e2e8; --accent: #31688e; --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #f7f7f9; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 72px; }
h1 { font-size: 23px; margin: 0 0 2px; }
h2 { font-size: 18px; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.meta { color: var(--muted); font-size: 13px; margin: 0; }
.explain { max-width: 800px; font-size: 14px; color: #34343c; }
.explain p { margin: 6px 0; }
code, .mono { font-family: var(--mono); font-size: 0.92em; }
pre.prompt { font-family: var(--mono); font-size: 13px; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; white-space: pre-wrap; word-break: break-word; margin: 8px 0; max-height: 10em; overflow: auto; }
.warnings { background: #fff5dc; border: 1px solid #eccf83; border-radius: 6px; padding: 6px 12px 6px 28px; font-size: 14px; }
summary { cursor: pointer; color: var(--muted); font-size: 13px; }
.tokens { display: flex; flex-wrap: wrap; gap: 4px; margin: 8px 0; }
.tok { font: 13px var(--mono); background: #fff; border: 1px solid var(--line); border-radius: 4px; padding: 1px 5px; white-space: pre; }
.tok sub { color: var(--muted); font-size: 9px; margin-left: 3px; }
.tok.history { opacity: 0.55; }
h3 { font-size: 14px; margin: 12px 0 0; color: var(--muted); font-weight: 600; }
.controls { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: center; margin: 10px 0; font-size: 14px; }
.controls select { font: inherit; padding: 2px 4px; }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px; overflow: auto; max-width: 100%; }
.axes { color: var(--muted); font-size: 12px; margin: 4px 0 0; }
.panel.heatmap { position: relative; }
.heatmap canvas { display: block; cursor: crosshair; }
.cellmark { position: absolute; pointer-events: none; border: 2px solid #fff; box-shadow: 0 0 0 1px rgba(0, 0, 0, 0.6); }
#tooltip { position: fixed; z-index: 10; pointer-events: none; background: rgba(22, 22, 30, 0.93); color: #fff; font: 12px/1.45 var(--mono); padding: 6px 9px; border-radius: 5px; white-space: pre; }
#tooltip .w { color: #fde725; }
.heads { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 12px; }
.heads button { border: 2px solid transparent; background: #fff; border-radius: 6px; padding: 4px; cursor: pointer; font: 11px var(--mono); color: var(--muted); }
.heads button.active { border-color: var(--accent); color: var(--fg); }
.heads canvas { display: block; margin: 0 auto 2px; image-rendering: pixelated; }
table.lens { border-collapse: collapse; font: 12px var(--mono); }
.lens th, .lens td { border: 1px solid #fff; padding: 2px 6px; white-space: pre; max-width: 9em; overflow: hidden; text-overflow: ellipsis; text-align: left; vertical-align: top; }
.lens thead th { background: #eef0f4; font-weight: 600; }
.lens thead small { display: block; color: var(--muted); font-weight: normal; font-size: 9px; }
.lens tbody th, .lens tfoot th { background: #eef0f4; font-weight: normal; color: var(--muted); max-width: none; }
.lens td .t, .lens td .p { display: block; overflow: hidden; text-overflow: ellipsis; }
.lens td .p { font-size: 10px; opacity: 0.8; }
.lens td.hit { box-shadow: inset 0 0 0 2px #e8590c; }
.lens td.actual { background: #f3f3f6; }
svg.bars text { font: 12px var(--mono); fill: var(--fg); }
svg.bars .axis text { fill: var(--muted); font-size: 11px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
`;

function positionsText(encoding: PositionEncoding | null): string {
  switch (encoding) {
    case "rope":
      return `<b>Positions: RoPE.</b> Nothing about position is added to the token embeddings. In every attention layer the queries and keys are rotated by angles proportional to their position (rotary position embedding), so the score q<sub>i</sub>·k<sub>j</sub> depends on the two tokens and on their distance i − j.`;
    case "learned":
      return `<b>Positions: learned embeddings.</b> A trained vector for each position (up to the training context) is added to the token embedding before the first layer; from there position travels in the residual stream like any other feature, and attention has to learn to read it.`;
    case "alibi":
      return `<b>Positions: ALiBi.</b> There is no position embedding: each head subtracts a penalty proportional to the distance i − j from its attention scores before the softmax, so nearby tokens are favoured.`;
    case "relative":
      return `<b>Positions: relative position buckets.</b> Nothing about position is added to the token embeddings. Each self-attention head adds a learned bias to the score q<sub>i</sub>·k<sub>j</sub> that depends only on the bucket of the distance i − j (one bucket per distance when near, logarithmically wider buckets further away); the encoder's buckets tell keys before the query from keys after it. The cross-attention has no position bias. T5 also leaves the scores unscaled (no division by √d).`;
    case "none":
      return `<b>Positions:</b> this model has no position encoding in its attention.`;
    default:
      return "";
  }
}

function attentionExplanation(d: ExplainData): string {
  // T5's relative positions: a bias per head and distance bucket, and no 1/√d scaling.
  const relative = d.positionEncoding === "relative";
  const score = relative ? "q<sub>i</sub>·k<sub>j</sub> + b(i − j)" : "q<sub>i</sub>·k<sub>j</sub> / √d";
  const matrix = relative ? "softmax(QKᵀ + B)" : "softmax(QKᵀ/√d)";
  const parts = [
    `<p>Each head of each ${d.encoder ? "decoder " : ""}layer computes <b>masked self-attention</b>: token i (a row, the <i>query</i>) gives position j (a column, the <i>key</i>) the weight <code>softmax<sub>j</sub>(${score})</code>, where x<sub>i</sub> is the layer's normalised input for token i, q<sub>i</sub> = W<sub>Q</sub>x<sub>i</sub>, k<sub>j</sub> = W<sub>K</sub>x<sub>j</sub>${relative ? ", b the head's position bias" : " and d is the head size"}: the matrix ${matrix} of the head. The causal mask sets the score of every later position (j &gt; i) to −∞ before the softmax, so those weights are exactly 0 (gray) and each row sums to 1. The head's output for token i is the weighted sum of the value vectors v<sub>j</sub> = W<sub>V</sub>x<sub>j</sub>: a row shows where token i reads from.</p>`,
  ];
  if (d.headsKv < d.heads) {
    const group = d.heads / d.headsKv;
    parts.push(
      d.headsKv === 1
        ? `<p>This model uses <b>multi-query attention</b>: all ${d.heads} query heads share one key/value head. They see the same keys and values but ask with their own queries, so their maps differ.</p>`
        : `<p>This model uses <b>grouped-query attention (GQA)</b>: its ${d.heads} query heads share ${d.headsKv} key/value heads, ${Number.isInteger(group) ? group : group.toFixed(1)} per group (query head h reads KV head ⌊h·${d.headsKv}/${d.heads}⌋). Heads of a group see the same keys and values but ask with their own queries, so their maps differ.</p>`,
    );
  }
  const positions = positionsText(d.positionEncoding);
  if (positions) parts.push(`<p>${positions}</p>`);
  if (d.encoder && d.queryStart === 1) {
    parts.push(`<p>The decoder start token was already in the cache: it appears as a key (the first column), and rows start at position 1.</p>`);
  } else if (d.queryStart > 0) {
    parts.push(`<p>The first ${d.queryStart} tokens were already in the session's cache: they appear as keys (columns), and rows start at position ${d.queryStart}.</p>`);
  }
  return parts.join("\n");
}

function lensExplanation(d: ExplainData): string {
  const start = d.positionEncoding === "learned" ? "the token embedding plus the position embedding" : "the token's embedding";
  const k = d.lens?.k ?? 0;
  return `<p>Each layer reads from and adds to the <b>residual stream</b>: a vector of ${d.embeddingSize} numbers per token that starts as ${start}, to which every attention block and every MLP block adds its output. The <b>logit lens</b> applies the model's final normalisation and output (unembedding) matrix to the residual stream after each layer, as if the model stopped there. Each cell shows the most likely next token at that layer and position, shaded by its probability; hover for the top ${k}. The last layer's row is the model's real prediction. An orange box marks a prediction that is the prompt's actual next token.</p>`;
}

function truncateChars(text: string, max: number): string {
  const chars = Array.from(text);
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join("")}…`;
}

function percent(p: number): string {
  return p >= 0.0995 ? `${(p * 100).toFixed(1)}%` : p >= 0.001 ? `${(p * 100).toFixed(2)}%` : p > 0 ? "<0.1%" : "0%";
}

/** The next-token distribution as an inline SVG horizontal bar chart (0–100% scale). */
function nextTokenChart(d: ExplainData): string {
  const rowH = 24;
  const labelW = 170;
  const barW = 440;
  const top = 4;
  const width = labelW + barW + 80;
  const height = top + d.next.length * rowH + 26;
  const axisY = top + d.next.length * rowH + 4;
  const out: string[] = [];
  out.push(`<svg class="bars" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="Next-token probabilities">`);
  out.push(`<g class="axis">`);
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    const x = labelW + t * barW;
    out.push(`<line x1="${x}" y1="${top}" x2="${x}" y2="${axisY}" stroke="#e2e2e8"/>`);
    out.push(`<text x="${x}" y="${axisY + 15}" text-anchor="middle">${t * 100}%</text>`);
  }
  out.push(`</g>`);
  d.next.forEach(([id, p], i) => {
    const y = top + i * rowH;
    const label = d.vocab[String(id)] ?? String(id);
    const w = Math.max(p * barW, p > 0 ? 1 : 0);
    out.push(
      `<g><title>${escapeHtml(`${label} (token ${id}): ${(p * 100).toFixed(3)}%`)}</title>` +
        `<text x="${labelW - 8}" y="${y + rowH / 2 + 4}" text-anchor="end">${escapeHtml(truncateChars(label, 20))}</text>` +
        `<rect x="${labelW}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" rx="2" fill="#31688e"/>` +
        `<text x="${(labelW + w + 6).toFixed(1)}" y="${y + rowH / 2 + 4}">${percent(p)}</text></g>`,
    );
  });
  out.push(`</svg>`);
  return out.join("\n");
}

function tokenChips(d: ExplainData): string {
  return d.tokens.text
    .map((t, i) => `<span class="tok${i < d.queryStart ? " history" : ""}" title="position ${i}, token ${d.tokens.ids[i]}">${escapeHtml(t)}<sub>${i}</sub></span>`)
    .join("");
}

function sourceChips(d: ExplainData): string {
  const e = d.encoder!;
  return e.tokens.text.map((t, i) => `<span class="tok" title="source position ${i}, token ${e.tokens.ids[i]}">${escapeHtml(t)}<sub>${i}</sub></span>`).join("");
}

/**
 * The controls, canvas and thumbnails of one heatmap; page-heatmap.ts fills them. Element ids
 * start with `prefix` ("" for the decoder's self-attention, as in every report).
 */
function heatmapBlock(prefix: string, label: string, axes: string): string {
  return `<div class="controls">
<label>Layer <select id="${prefix}layer"></select></label>
<label>Head <select id="${prefix}head"></select></label>
<label>Colour <select id="${prefix}scale"><option value="linear">linear</option><option value="sqrt">square root (small weights)</option></select></label>
<canvas id="${prefix}legend" width="240" height="34" aria-label="colour scale"></canvas>
</div>
<div class="panel heatmap"><canvas id="${prefix}heatmap" role="img" aria-label="${label}"></canvas><div class="cellmark" id="${prefix}cellmark" hidden></div></div>
<p class="axes">${axes}</p>
<div class="heads" id="${prefix}heads"></div>`;
}

function encoderDecoderIntro(d: ExplainData): string {
  const e = d.encoder!;
  const start = d.queryStart > 0 ? ` The decoder starts from <span class="tok">${escapeHtml(d.tokens.text[0])}</span> (the decoder start token), already in the cache before the traced tokens.` : "";
  return `<p>This is an <b>encoder-decoder</b> model. The <b>encoder</b> reads the source (${e.tokens.ids.length} tokens) with unmasked self-attention: every source token sees every other. The <b>decoder</b> then produces the target one token at a time: each of its layers has a masked self-attention over the target so far and a <b>cross-attention</b> that reads the encoder's output.${start} Here the target tokens were given to the decoder (teacher forcing), so every row below shows what the decoder did while reading that token to predict the next one.</p>`;
}

function crossExplanation(d: ExplainData): string {
  const c = d.crossAttention!;
  const cut = c.firstQuery > 0 ? ` Only the last ${c.rows} target tokens are stored (see the warnings).` : "";
  return `<p>In every decoder layer, after its self-attention, token i of the target (a row) gives source token j (a column) the weight <code>softmax<sub>j</sub>(q<sub>i</sub>·k<sub>j</sub>${d.positionEncoding === "relative" ? "" : " / √d"})</code>, where q<sub>i</sub> comes from the decoder's residual stream and k<sub>j</sub>, v<sub>j</sub> from the encoder's final output. There is no mask: every target token sees the whole source, and each row sums to 1. The grid is a soft <b>alignment</b> of target to source: a bright cell means that while reading the row's token, the decoder drew on that source token to predict the next target token. The mean of the heads is shown first.${cut}</p>`;
}

function encoderExplanation(): string {
  return `<p>Each head of each encoder layer computes self-attention over the source with <b>no causal mask</b>: token i (a row) gives every source position j (a column), earlier or later, a weight, and each row sums to 1. The encoder's output after its last layer is what the decoder's cross-attention reads.</p>`;
}

/** Renders the report page for `trace` (from session.trace(), ideally with logitLens). */
export function renderExplainReport(trace: TraceResult, info: ExplainReportInfo): string {
  const d = buildExplainData(trace, info);
  const script = PAGE_SCRIPT.replace("__STOPS__", () => JSON.stringify(VIRIDIS_STOPS)).replace("__MASKED__", () => JSON.stringify(MASKED_RGB));
  const scriptHash = createHash("sha256").update(script, "utf8").digest("base64");
  const csp = `default-src 'none'; script-src 'sha256-${scriptHash}'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'`;
  const lastToken = d.tokens.text.at(-1) ?? "";
  const kv = d.headsKv < d.heads ? ` (${d.headsKv} KV)` : "";
  const e = d.encoder;
  const meta = [
    ...(d.architecture !== null ? [escapeHtml(d.architecture)] : []),
    ...(e ? [e.layerCount !== null ? `${e.layerCount} encoder layers` : `${e.layers.length} encoder layers traced`] : []),
    d.layerCount !== null ? `${d.layerCount} ${e ? "decoder " : ""}layers` : `${d.layers.length} ${e ? "decoder " : ""}layers traced`,
    `${d.heads} heads${kv}`,
    `d<sub>model</sub> ${d.embeddingSize}`,
    ...(e ? [`${e.tokens.ids.length} source tokens`] : []),
    `${d.tokens.ids.length} ${e ? "decoder " : ""}tokens`,
  ].join(" · ");
  const attention = d.attention
    ? heatmapBlock("", "attention heatmap", "Rows: query tokens (the token doing the looking). Columns: key positions. Hover a cell for its weight. Click a head below to show it.")
    : `<p>No attention was captured.</p>`;
  const encoderSections = e
    ? `
<h2>Cross-attention</h2>
<div class="explain">${crossExplanation(d)}</div>
${
  d.crossAttention
    ? heatmapBlock("cross-", "cross-attention: target tokens over source tokens", "Rows: target tokens (the decoder's input). Columns: source tokens (the encoder's input). Hover a cell for its weight. Click a head below to show it.")
    : `<p>No cross-attention was captured.</p>`
}

<h2>Encoder self-attention</h2>
<div class="explain">${encoderExplanation()}</div>
${e.attention ? heatmapBlock("enc-", "encoder self-attention heatmap", "Rows and columns: source tokens. Hover a cell for its weight. Click a head below to show it.") : `<p>No encoder attention was captured.</p>`}
`
    : "";
  const lens = d.lens ? `<div class="explain">${lensExplanation(d)}</div>\n<div class="panel" id="lens"></div>` : `<p>The logit lens was not captured (trace with <code>logitLens: true</code>).</p>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="llama-napi explain">
<title>${escapeHtml(`explain: ${truncateChars(d.prompt, 60)} — ${d.model}`)}</title>
<style>${CSS}</style>
</head>
<body>
<main>
<h1>Inside ${escapeHtml(d.model)}</h1>
<p class="meta">${meta}</p>
${e ? `<h3>Source (encoder input)</h3>\n` : ""}<pre class="prompt">${escapeHtml(d.prompt)}</pre>
${e && d.target !== null ? `<h3>Target (decoder input)</h3>\n<pre class="prompt">${escapeHtml(d.target)}</pre>\n` : ""}${d.warnings.length ? `<ul class="warnings">${d.warnings.map((w) => `<li>${escapeHtml(w)}</li>`).join("")}</ul>` : ""}
<noscript><p class="warnings">The attention heatmaps and the logit lens are drawn by the page's script; the tokens and the next-token chart need none.</p></noscript>

<h2>Tokens</h2>
${
  e
    ? `<div class="explain">${encoderDecoderIntro(d)}<p>Spaces show as ␣, newlines as ↵, tabs as ⇥; bytes that are not valid UTF-8 on their own show as �.</p></div>
<h3>Source: ${e.tokens.ids.length} tokens</h3>
<div class="tokens">${sourceChips(d)}</div>
<h3>Target: ${d.tokens.ids.length} decoder tokens</h3>
<div class="tokens">${tokenChips(d)}</div>
${encoderSections}
<h2>Decoder self-attention</h2>`
    : `<div class="explain"><p>The prompt as the model reads it: ${d.tokens.ids.length} tokens, with their positions. Spaces show as ␣, newlines as ↵, tabs as ⇥; bytes that are not valid UTF-8 on their own show as �.${d.queryStart > 0 ? ` Faded tokens were already in the session's cache.` : ""}</p></div>
<details${d.tokens.ids.length <= 300 ? " open" : ""}><summary>${d.tokens.ids.length} tokens</summary><div class="tokens">${tokenChips(d)}</div></details>

<h2>Attention</h2>`
}
<div class="explain">${attentionExplanation(d)}</div>
${attention}

<h2>Logit lens</h2>
${lens}

<h2>Next token</h2>
<div class="explain"><p>The model's output after the last token <span class="tok">${escapeHtml(lastToken)}</span>: the softmax of its logits over the whole vocabulary, the ${d.next.length} most likely tokens. Sampling at temperature 1 draws from this distribution (top-k, top-p and min-p then cut its tail).</p></div>
<div class="panel">${nextTokenChart(d)}</div>

<footer>Made by llama-napi explain. This file is self-contained: it makes no network requests.</footer>
</main>
<div id="tooltip" hidden></div>
<script type="application/json" id="explain-data">${jsonForScript(d)}</script>
<script>${script}</script>
</body>
</html>
`;
}
