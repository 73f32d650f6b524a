import { HEATMAP_SCRIPT } from "./page-heatmap.js";

/**
 * The report page's script (plain browser JavaScript, inlined into the HTML). It reads the data
 * embedded as JSON, draws the attention heatmaps (decoder, and for an encoder-decoder model the
 * encoder's and the cross-attention) with their per-head thumbnails on <canvas> (page-heatmap.ts),
 * and builds the logit-lens grid. All text goes into the page through textContent, never as HTML.
 *
 * Written without template literals so it can live in this string; `__STOPS__` and `__MASKED__`
 * are replaced with the colour map when the page is rendered.
 */
export const PAGE_SCRIPT = String.raw`(function () {
"use strict";
var data = JSON.parse(document.getElementById("explain-data").textContent);
var STOPS = __STOPS__;
var MASKED = __MASKED__;
var $ = function (id) { return document.getElementById(id); };
var ids = data.tokens.ids;
var text = data.tokens.text;
var Q0 = data.queryStart;

function rgb(v) {
  var x = Math.min(1, Math.max(0, v || 0)) * (STOPS.length - 1);
  var i = Math.min(STOPS.length - 2, Math.floor(x));
  var t = x - i, a = STOPS[i], b = STOPS[i + 1];
  return [Math.round(a[0] + (b[0] - a[0]) * t), Math.round(a[1] + (b[1] - a[1]) * t), Math.round(a[2] + (b[2] - a[2]) * t)];
}
function pct(p) { return p >= 0.0995 ? (p * 100).toFixed(1) + "%" : p >= 0.001 ? (p * 100).toFixed(2) + "%" : p > 0 ? "<0.1%" : "0%"; }
function el(tag, cls, content) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (content !== undefined) e.textContent = content;
  return e;
}

// ---- attention ------------------------------------------------------------------------------
__HEATMAP__
var enc = data.encoder;
var encText = enc ? enc.tokens.text : [];
function setupAttention() {
  var att = data.attention, first = Q0 + att.firstQuery;
  heatmapWidget({
    prefix: "", att: att, layers: data.layers, firstPos: first, head: 0,
    rowText: function (r) { return text[first + r]; }, colText: function (k) { return text[k]; },
    rowPos: function (r) { return first + r; }, rowName: "query", colName: "key  "
  });
}
function setupEncoder() {
  var att = enc.attention;
  heatmapWidget({
    prefix: "enc-", att: att, layers: enc.layers, firstPos: att.firstQuery, head: 0,
    rowText: function (r) { return encText[att.firstQuery + r]; }, colText: function (k) { return encText[k]; },
    rowPos: function (r) { return att.firstQuery + r; }, rowName: "query", colName: "key  "
  });
}
function setupCross() {
  var att = data.crossAttention, first = Q0 + att.firstQuery;
  heatmapWidget({
    prefix: "cross-", att: att, layers: att.layers, firstPos: first, head: -1,
    rowText: function (r) { return text[first + r]; }, colText: function (k) { return encText[k]; },
    rowPos: function (r) { return first + r; }, rowName: "target", colName: "source"
  });
}

// ---- logit lens ------------------------------------------------------------------------------
function buildLens() {
  var lens = data.lens, box = $("lens");
  var table = el("table", "lens");
  var head = table.createTHead().insertRow();
  head.appendChild(el("th", "corner", "layer / pos."));
  var queries = lens.layers[0].length;
  for (var q = 0; q < queries; q++) {
    var th = el("th", "tok");
    th.appendChild(el("small", null, String(Q0 + q)));
    th.appendChild(el("span", null, text[Q0 + q]));
    head.appendChild(th);
  }
  var body = table.createTBody();
  data.layers.forEach(function (layer, i) {
    var tr = body.insertRow();
    var isOutput = data.layerCount !== null && layer === data.layerCount - 1;
    tr.appendChild(el("th", null, "layer " + layer + (isOutput ? " = output" : "")));
    for (var q = 0; q < queries; q++) {
      var flat = lens.layers[i][q], id = flat[0], p = flat[1];
      var td = el("td");
      td.appendChild(el("span", "t", data.vocab[id]));
      td.appendChild(el("span", "p", pct(p)));
      td.style.background = "rgba(49, 104, 142, " + (0.06 + 0.86 * p).toFixed(3) + ")";
      if (p > 0.5) td.style.color = "#fff";
      var next = Q0 + q + 1 < ids.length ? ids[Q0 + q + 1] : null;
      if (next === id) td.classList.add("hit");
      var lines = ["layer " + layer + ", position " + (Q0 + q) + " (" + text[Q0 + q] + ")"];
      for (var j = 0; j < flat.length; j += 2) lines.push(pct(flat[j + 1]).padStart(6) + "  " + data.vocab[flat[j]]);
      if (data.residualNorms) lines.push("residual norm " + data.residualNorms[i][q]);
      td.title = lines.join("\n");
      tr.appendChild(td);
    }
  });
  var foot = table.createTFoot().insertRow();
  foot.appendChild(el("th", null, "actual next"));
  for (var q2 = 0; q2 < queries; q2++) {
    foot.appendChild(el("td", "actual", Q0 + q2 + 1 < ids.length ? text[Q0 + q2 + 1] : "?"));
  }
  box.appendChild(table);
}

if (data.attention) setupAttention();
if (enc && enc.attention) setupEncoder();
if (data.crossAttention) setupCross();
if (data.lens) buildLens();
document.body.dataset.ready = "1";
})();
`.replace("__HEATMAP__", () => HEATMAP_SCRIPT);
