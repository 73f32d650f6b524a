/**
 * The attention heatmap of the report page (plain browser JavaScript, part of PAGE_SCRIPT): one
 * widget per kind of attention map (the decoder's self-attention, the encoder's, the
 * cross-attention), each with its own layer, head and colour controls, per-head thumbnails and a
 * hover tooltip. It uses `$`, `el`, `rgb`, `data` and `MASKED` from the enclosing script.
 *
 * Written without template literals so it can live in this string.
 */
export const HEATMAP_SCRIPT = String.raw`
function decodeWeights(encoding, b64) {
  var bin = atob(b64), wide = encoding === "u16";
  var out = new Float32Array(wide ? bin.length / 2 : bin.length);
  for (var i = 0; i < out.length; i++) {
    out[i] = wide ? (bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)) / 65535 : bin.charCodeAt(i) / 255;
  }
  return out;
}

function fit(ctx, s, max) {
  if (ctx.measureText(s).width <= max) return s;
  var chars = Array.from(s);
  while (chars.length > 1 && ctx.measureText(chars.join("") + "…").width > max) chars.pop();
  return chars.join("") + "…";
}

var FONT = "11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";

/**
 * A heatmap widget. o.prefix: the prefix of its element ids (layer, head, scale, legend, heatmap,
 * cellmark, heads); o.att: the embedded maps; o.layers: their layer numbers; o.firstPos: the
 * position of the first stored row (rows of a causal map see keys up to their own position);
 * o.rowText(r) / o.colText(k): labels; o.rowPos(r): the row's position for the tooltip;
 * o.rowName / o.colName: what the tooltip calls rows and columns; o.head: the head shown first
 * (-1: the mean of the heads).
 */
function heatmapWidget(o) {
  var att = o.att, P = o.prefix;
  var $p = function (name) { return $(P + name); };
  function rowLen(r) { return att.causal ? o.firstPos + r + 1 : att.keys; }
  var rowStart = new Int32Array(att.rows + 1);
  for (var r0 = 0; r0 < att.rows; r0++) rowStart[r0 + 1] = rowStart[r0] + rowLen(r0);
  var perHead = rowStart[att.rows];
  var weights = att.maps.map(function (b64) { return decodeWeights(att.encoding, b64); });
  var state = { layer: 0, head: o.head === undefined ? 0 : o.head, scale: "linear" };
  var geom = null;

  /** Weight of key k for stored row r in layer index l and head h (h < 0: mean of the heads); null when masked. */
  function weight(l, h, r, k) {
    if (k >= rowLen(r)) return null;
    var w = weights[l], at = rowStart[r] + k;
    if (h >= 0) return w[h * perHead + at];
    var sum = 0;
    for (var i = 0; i < data.heads; i++) sum += w[i * perHead + at];
    return sum / data.heads;
  }
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

  function drawHeatmap() {
    var canvas = $p("heatmap"), ctx = canvas.getContext("2d");
    var rows = att.rows, cols = att.keys;
    var cell = Math.max(1, Math.min(28, Math.floor(720 / Math.max(rows, cols))));
    var labels = cell >= 9;
    ctx.font = FONT;
    var maxRow = 0, maxCol = 0, r, k;
    if (labels) {
      for (r = 0; r < rows; r++) maxRow = Math.max(maxRow, ctx.measureText(o.rowText(r)).width);
      for (k = 0; k < cols; k++) maxCol = Math.max(maxCol, ctx.measureText(o.colText(k)).width);
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
      for (r = 0; r < rows; r++) ctx.fillText(fit(ctx, o.rowText(r), left - 12), left - 6, top + r * cell + cell / 2);
      ctx.textAlign = "left";
      for (k = 0; k < cols; k++) {
        ctx.save();
        ctx.translate(left + k * cell + cell / 2, top - 6);
        ctx.rotate(-Math.PI / 2);
        ctx.fillText(fit(ctx, o.colText(k), top - 12), 0, 0);
        ctx.restore();
      }
    }
    geom = { left: left, top: top, cell: cell, rows: rows, cols: cols };
    canvas.dataset.left = left; canvas.dataset.top = top; canvas.dataset.cell = cell;
    canvas.dataset.rows = rows; canvas.dataset.cols = cols;
    canvas.dataset.layer = String(o.layers[state.layer]); canvas.dataset.head = String(state.head);
  }

  function drawLegend() {
    var canvas = $p("legend"), ctx = canvas.getContext("2d");
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
    var box = $p("heads");
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
      b.addEventListener("click", function () { state.head = h; $p("head").value = String(h); update(false); });
      box.appendChild(b);
    });
  }

  function update(all) {
    drawHeatmap();
    if (all) drawLegend();
    drawHeads();
  }

  var layerSel = $p("layer"), headSel = $p("head"), scaleSel = $p("scale");
  o.layers.forEach(function (layer, i) {
    var opt = el("option", null, "layer " + layer);
    opt.value = String(i);
    layerSel.appendChild(opt);
  });
  for (var h = 0; h < data.heads; h++) {
    var kv = data.headsKv < data.heads ? " (KV head " + Math.floor(h * data.headsKv / data.heads) + ")" : "";
    var opt = el("option", null, "head " + h + kv);
    opt.value = String(h);
    headSel.appendChild(opt);
  }
  var mean = el("option", null, "mean of all heads");
  mean.value = "-1";
  headSel.appendChild(mean);
  headSel.value = String(state.head);
  layerSel.addEventListener("change", function () { state.layer = Number(layerSel.value); update(false); });
  headSel.addEventListener("change", function () { state.head = Number(headSel.value); update(false); });
  scaleSel.addEventListener("change", function () { state.scale = scaleSel.value; update(true); });

  var canvas = $p("heatmap"), tip = $("tooltip"), mark = $p("cellmark");
  canvas.addEventListener("mousemove", function (e) {
    var rect = canvas.getBoundingClientRect();
    var x = e.clientX - rect.left - geom.left, y = e.clientY - rect.top - geom.top;
    var k = Math.floor(x / geom.cell), r = Math.floor(y / geom.cell);
    if (x < 0 || y < 0 || k >= geom.cols || r >= geom.rows) { tip.hidden = true; mark.hidden = true; return; }
    mark.style.left = (canvas.offsetLeft + geom.left + k * geom.cell - 1) + "px";
    mark.style.top = (canvas.offsetTop + geom.top + r * geom.cell - 1) + "px";
    mark.style.width = mark.style.height = (geom.cell + 2) + "px";
    mark.hidden = geom.cell < 4;
    var w = weight(state.layer, state.head, r, k), q = o.rowPos(r);
    tip.replaceChildren(
      el("div", null, o.rowName + " " + q + "  " + o.rowText(r)),
      el("div", null, o.colName + " " + k + "  " + o.colText(k)),
      el("div", "w", w === null ? "masked: position " + k + " is after the query" : (state.head < 0 ? "mean weight " : "weight ") + w.toFixed(4))
    );
    tip.dataset.map = P || "attention-";
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
`;
