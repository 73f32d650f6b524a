/**
 * The report page's script (plain browser JavaScript, inlined into the HTML). It reads the data
 * embedded as JSON, draws the attention heatmap and the per-head thumbnails on <canvas>, and builds
 * the logit-lens grid. All text goes into the page through textContent, never as HTML.
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

// ---- attention -------------------------------------------------------------------------------
var att = data.attention;
var firstPos = 0, rowStart = null, perHead = 0, weights = [];
function rowLen(r) { return att.causal ? firstPos + r + 1 : att.keys; }
function decode(b64) {
  var bin = atob(b64), wide = att.encoding === "u16";
  var out = new Float32Array(wide ? bin.length / 2 : bin.length);
  for (var i = 0; i < out.length; i++) {
    out[i] = wide ? (bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)) / 65535 : bin.charCodeAt(i) / 255;
  }
  return out;
}
if (att) {
  firstPos = Q0 + att.firstQuery;
  rowStart = new Int32Array(att.rows + 1);
  for (var r0 = 0; r0 < att.rows; r0++) rowStart[r0 + 1] = rowStart[r0] + rowLen(r0);
  perHead = rowStart[att.rows];
  weights = att.maps.map(decode);
}
/** Weight of key k for stored row r in layer index l and head h (h < 0: mean of the heads); null when masked. */
function weight(l, h, r, k) {
  if (k >= rowLen(r)) return null;
  var w = weights[l], at = rowStart[r] + k;
  if (h >= 0) return w[h * perHead + at];
  var sum = 0;
  for (var i = 0; i < data.heads; i++) sum += w[i * perHead + at];
  return sum / data.heads;
}

var state = { layer: 0, head: 0, scale: "linear" };
function tone(v) { return state.scale === "sqrt" ? Math.sqrt(v) : v; }

/** rows × cols pixels of one head's map, on an offscreen canvas. */
function mapImage(l, h) {
  var rows = att.rows, cols = att.keys;
  var img = new ImageData(cols, rows);
  for (var r = 0; r < rows; r++) {
    for (var k = 0; k < cols; k++) {
      var w = weight(l, h, r, k);
      var c = w === null ? MASKED : rgb(tone(w));
      var p = (r * cols + k) * 4;
      img.data[p] = c[0]; img.data[p + 1] = c[1]; img.data[p + 2] = c[2]; img.data[p + 3] = 255;
    }
  }
  var off = document.createElement("canvas");
  off.width = cols; off.height = rows;
  off.getContext("2d").putImageData(img, 0, 0);
  return off;
}

function fit(ctx, s, max) {
  if (ctx.measureText(s).width <= max) return s;
  var chars = Array.from(s);
  while (chars.length > 1 && ctx.measureText(chars.join("") + "…").width > max) chars.pop();
  return chars.join("") + "…";
}

var geom = null;
var FONT = "11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
function drawHeatmap() {
  var canvas = $("heatmap"), ctx = canvas.getContext("2d");
  var rows = att.rows, cols = att.keys;
  var cell = Math.max(1, Math.min(28, Math.floor(720 / Math.max(rows, cols))));
  var labels = cell >= 9;
  ctx.font = FONT;
  var maxRow = 0, maxCol = 0, r, k;
  if (labels) {
    for (r = 0; r < rows; r++) maxRow = Math.max(maxRow, ctx.measureText(text[firstPos + r]).width);
    for (k = 0; k < cols; k++) maxCol = Math.max(maxCol, ctx.measureText(text[k]).width);
  }
  var left = labels ? Math.min(140, Math.ceil(maxRow)) + 12 : 6;
  var top = labels ? Math.min(110, Math.ceil(maxCol)) + 12 : 6;
  var width = left + cols * cell + 6, height = top + rows * cell + 6;
  var dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
  canvas.style.width = width + "px"; canvas.style.height = height + "px";
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(mapImage(state.layer, state.head), left, top, cols * cell, rows * cell);
  if (cell >= 12) {
    ctx.strokeStyle = "rgba(255,255,255,0.35)"; ctx.lineWidth = 1; ctx.beginPath();
    for (r = 1; r < rows; r++) { ctx.moveTo(left, top + r * cell + 0.5); ctx.lineTo(left + cols * cell, top + r * cell + 0.5); }
    for (k = 1; k < cols; k++) { ctx.moveTo(left + k * cell + 0.5, top); ctx.lineTo(left + k * cell + 0.5, top + rows * cell); }
    ctx.stroke();
  }
  if (labels) {
    ctx.font = FONT; ctx.fillStyle = "#222"; ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (r = 0; r < rows; r++) ctx.fillText(fit(ctx, text[firstPos + r], left - 12), left - 6, top + r * cell + cell / 2);
    ctx.textAlign = "left";
    for (k = 0; k < cols; k++) {
      ctx.save();
      ctx.translate(left + k * cell + cell / 2, top - 6);
      ctx.rotate(-Math.PI / 2);
      ctx.fillText(fit(ctx, text[k], top - 12), 0, 0);
      ctx.restore();
    }
  }
  geom = { left: left, top: top, cell: cell, rows: rows, cols: cols };
  canvas.dataset.left = left; canvas.dataset.top = top; canvas.dataset.cell = cell;
  canvas.dataset.rows = rows; canvas.dataset.cols = cols;
}

function drawLegend() {
  var canvas = $("legend"), ctx = canvas.getContext("2d");
  var w = 240, h = 34, dpr = window.devicePixelRatio || 1;
  canvas.width = w * dpr; canvas.height = h * dpr; canvas.style.width = w + "px"; canvas.style.height = h + "px";
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  for (var x = 0; x < 200; x++) {
    var c = rgb(x / 199);
    ctx.fillStyle = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
    ctx.fillRect(8 + x, 2, 1, 14);
  }
  ctx.fillStyle = "#444"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "top";
  [0, 0.25, 0.5, 0.75, 1].forEach(function (t) {
    var v = state.scale === "sqrt" ? t * t : t;
    ctx.fillText(String(Math.round(v * 1000) / 1000), 8 + t * 199, 19);
  });
}

function drawHeads() {
  var box = $("heads");
  box.replaceChildren();
  var choices = [];
  for (var h = 0; h < data.heads; h++) choices.push(h);
  choices.push(-1);
  // Pixels per cell: whole pixels when cells are bigger than one, smoothed downscaling otherwise.
  var fitScale = 84 / Math.max(att.rows, att.keys), cell = fitScale >= 1 ? Math.min(12, Math.floor(fitScale)) : fitScale;
  choices.forEach(function (h) {
    var b = el("button");
    b.type = "button";
    b.title = h < 0 ? "mean of all heads" : "head " + h;
    var c = document.createElement("canvas");
    c.width = Math.max(1, Math.round(att.keys * cell)); c.height = Math.max(1, Math.round(att.rows * cell));
    var ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = cell < 1;
    ctx.drawImage(mapImage(state.layer, h), 0, 0, c.width, c.height);
    b.appendChild(c);
    var kv = data.headsKv < data.heads && h >= 0 ? " · kv " + Math.floor(h * data.headsKv / data.heads) : "";
    b.appendChild(el("span", null, h < 0 ? "mean" : "head " + h + kv));
    if (h === state.head) b.className = "active";
    b.addEventListener("click", function () { state.head = h; $("head").value = String(h); update(false); });
    box.appendChild(b);
  });
}

function update(all) {
  drawHeatmap();
  if (all) drawLegend();
  drawHeads();
}

function setupAttention() {
  var layerSel = $("layer"), headSel = $("head"), scaleSel = $("scale");
  data.layers.forEach(function (layer, i) {
    var o = el("option", null, "layer " + layer);
    o.value = String(i);
    layerSel.appendChild(o);
  });
  for (var h = 0; h < data.heads; h++) {
    var kv = data.headsKv < data.heads ? " (KV head " + Math.floor(h * data.headsKv / data.heads) + ")" : "";
    var o = el("option", null, "head " + h + kv);
    o.value = String(h);
    headSel.appendChild(o);
  }
  var mean = el("option", null, "mean of all heads");
  mean.value = "-1";
  headSel.appendChild(mean);
  layerSel.addEventListener("change", function () { state.layer = Number(layerSel.value); update(false); });
  headSel.addEventListener("change", function () { state.head = Number(headSel.value); update(false); });
  scaleSel.addEventListener("change", function () { state.scale = scaleSel.value; update(true); });

  var canvas = $("heatmap"), tip = $("tooltip"), mark = $("cellmark");
  canvas.addEventListener("mousemove", function (e) {
    var rect = canvas.getBoundingClientRect();
    var x = e.clientX - rect.left - geom.left, y = e.clientY - rect.top - geom.top;
    var k = Math.floor(x / geom.cell), r = Math.floor(y / geom.cell);
    if (x < 0 || y < 0 || k >= geom.cols || r >= geom.rows) { tip.hidden = true; mark.hidden = true; return; }
    mark.style.left = (canvas.offsetLeft + geom.left + k * geom.cell - 1) + "px";
    mark.style.top = (canvas.offsetTop + geom.top + r * geom.cell - 1) + "px";
    mark.style.width = mark.style.height = (geom.cell + 2) + "px";
    mark.hidden = geom.cell < 4;
    var w = weight(state.layer, state.head, r, k), q = firstPos + r;
    tip.replaceChildren(
      el("div", null, "query " + q + "  " + text[q]),
      el("div", null, "key   " + k + "  " + text[k]),
      el("div", "w", w === null ? "masked: position " + k + " is after the query" : (state.head < 0 ? "mean weight " : "weight ") + w.toFixed(4))
    );
    tip.dataset.query = q; tip.dataset.key = k; tip.dataset.weight = w === null ? "masked" : String(w);
    tip.hidden = false;
    var tx = e.clientX + 14, ty = e.clientY + 14;
    if (tx + tip.offsetWidth > window.innerWidth - 4) tx = e.clientX - tip.offsetWidth - 10;
    if (ty + tip.offsetHeight > window.innerHeight - 4) ty = e.clientY - tip.offsetHeight - 10;
    tip.style.left = tx + "px"; tip.style.top = ty + "px";
  });
  canvas.addEventListener("mouseleave", function () { tip.hidden = true; mark.hidden = true; });
  update(true);
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

if (att) setupAttention();
if (data.lens) buildLens();
document.body.dataset.ready = "1";
})();
`;
