/** A training loss curve as a small self-contained HTML page with an inline SVG (no scripts, no downloads). */
import type { TrainEpoch, TrainStep } from "../options/train.js";

const W = 720;
const H = 360;
const PAD = { left: 56, right: 16, top: 24, bottom: 40 };

function escapeHtml(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);
}

/** The page: step losses as a line, validation losses (after each epoch) as dots. */
export function lossCurveHtml(history: { steps: readonly TrainStep[]; epochs: readonly TrainEpoch[] }, title: string): string {
  const steps = history.steps;
  const validation = history.epochs.filter((e) => e.validationLoss !== undefined);
  const values = [...steps.map((s) => s.loss), ...validation.map((e) => e.validationLoss!)].filter(Number.isFinite);
  const maxStep = Math.max(1, steps.length > 0 ? steps[steps.length - 1]!.step : 1);
  const lo = values.length > 0 ? Math.min(...values) : 0;
  const hi = values.length > 0 ? Math.max(...values) : 1;
  const span = hi - lo || 1;
  const x = (step: number) => PAD.left + ((W - PAD.left - PAD.right) * step) / maxStep;
  const y = (loss: number) => PAD.top + ((H - PAD.top - PAD.bottom) * (hi - loss)) / span;
  const points = steps.filter((s) => Number.isFinite(s.loss)).map((s) => `${x(s.step).toFixed(1)},${y(s.loss).toFixed(1)}`);
  const dots = validation.map((e) => `<circle class="val" cx="${x(e.step).toFixed(1)}" cy="${y(e.validationLoss!).toFixed(1)}" r="4"/>`);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = lo + f * span;
    return `<text x="${PAD.left - 6}" y="${y(v).toFixed(1)}" text-anchor="end" dominant-baseline="middle">${v.toFixed(3)}</text>`;
  });
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font:14px system-ui,sans-serif;margin:24px}svg text{font-size:11px;fill:#444}.loss{fill:none;stroke:#1f6feb;stroke-width:1.5}.val{fill:#d1242f}.axis{stroke:#888}</style>
</head><body>
<h1>${escapeHtml(title)}</h1>
<p>Training loss (nats per token) of each optimizer step${validation.length > 0 ? '; <span style="color:#d1242f">●</span> validation loss after each epoch' : ""}. ${steps.length} steps.</p>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">
<line class="axis" x1="${PAD.left}" y1="${H - PAD.bottom}" x2="${W - PAD.right}" y2="${H - PAD.bottom}"/>
<line class="axis" x1="${PAD.left}" y1="${PAD.top}" x2="${PAD.left}" y2="${H - PAD.bottom}"/>
${ticks.join("\n")}
<text x="${(W + PAD.left) / 2}" y="${H - 8}" text-anchor="middle">step (of ${maxStep})</text>
<polyline class="loss" points="${points.join(" ")}"/>
${dots.join("\n")}
</svg>
</body></html>
`;
}
