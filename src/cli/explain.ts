import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import { loadModel } from "../model.js";
import { renderExplainReport } from "../report/html.js";
import { positionEncodingOf } from "../report/data.js";
import { attentionPng } from "../report/png.js";
import { UsageError, intOption } from "./args.js";

export const explainUsage = `llama-napi explain -m MODEL -p TEXT [options]

Traces TEXT through the model and writes a self-contained HTML report (no network requests):
the tokens, attention heatmaps per layer and head, the logit lens and the next-token
probabilities.

  -m, --model PATH      GGUF model file
  -p, --prompt TEXT     text to trace
  -o, --output FILE     the HTML report (default report.html)
      --png DIR         also write one PNG heatmap per layer and head into DIR
      --png-scale N     pixels per attention cell in the PNGs (default: about 512 px wide)
  -t, --threads N       CPU threads (default: all available)
      --top-k K         next-token probabilities to show (default 10)
      --lens-k K        tokens per logit-lens cell (default 5)
      --no-bos          do not add the model's BOS token`;

/** Prompts longer than this make a large report; the CLI says so. */
const LARGE_PROMPT = 512;

export async function runExplain(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string", short: "m" },
      prompt: { type: "string", short: "p" },
      output: { type: "string", short: "o" },
      png: { type: "string" },
      "png-scale": { type: "string" },
      threads: { type: "string", short: "t" },
      "top-k": { type: "string" },
      "lens-k": { type: "string" },
      "no-bos": { type: "boolean" },
    },
    strict: true,
  });
  if (!values.model) throw new UsageError("explain needs a model: -m MODEL");
  if (values.prompt === undefined) throw new UsageError("explain needs a prompt: -p TEXT");
  const topK = intOption(values["top-k"], "--top-k") ?? 10;
  const lensK = intOption(values["lens-k"], "--lens-k") ?? 5;
  const pngScale = intOption(values["png-scale"], "--png-scale");
  if (topK < 1) throw new UsageError("--top-k must be at least 1");
  if (lensK < 1 || lensK > 100) throw new UsageError("--lens-k must be from 1 to 100");
  if (pngScale !== undefined && (pngScale < 1 || pngScale > 64)) throw new UsageError("--png-scale must be from 1 to 64");
  const output = values.output ?? "report.html";

  using model = await loadModel(values.model);
  const addSpecial = !values["no-bos"];
  const count = model.tokenize(values.prompt, { addSpecial }).length;
  if (count === 0) throw new UsageError("the prompt has no tokens");
  if (count > model.info.trainContextSize) {
    throw new UsageError(`the prompt has ${count} tokens; the model was trained on at most ${model.info.trainContextSize}`);
  }
  if (count > LARGE_PROMPT) {
    process.stderr.write(`llama-napi: warning: ${count} tokens × ${model.info.layers} layers × ${model.info.heads} heads of attention make a large report\n`);
  }
  using context = await model.createContext({ contextSize: Math.max(64, count + 1), threads: intOption(values.threads, "--threads") });
  using session = context.createSession();
  const trace = await session.trace(values.prompt, { logitLens: lensK, topK, addSpecial });
  const html = renderExplainReport(trace, {
    model: model.info.name && model.info.name !== model.info.architecture ? model.info.name : path.basename(values.model),
    prompt: values.prompt,
    architecture: model.info.architecture,
    layerCount: model.info.layers,
    positionEncoding: positionEncodingOf(model.info),
    onWarning: (message) => process.stderr.write(`llama-napi: warning: ${message}\n`),
  });
  fs.mkdirSync(path.dirname(path.resolve(output)), { recursive: true });
  fs.writeFileSync(output, html);
  process.stdout.write(
    `wrote ${output} (${formatBytes(Buffer.byteLength(html))}): ${trace.tokens.length} tokens, ${trace.layers.length} layers × ${trace.heads} heads\n`,
  );
  if (values.png !== undefined) {
    fs.mkdirSync(values.png, { recursive: true });
    const layerDigits = String(Math.max(...trace.layers)).length;
    const headDigits = String(trace.heads - 1).length;
    let written = 0;
    for (const map of trace.attention ?? []) {
      for (let h = 0; h < map.heads; h++) {
        const name = `layer${String(map.layer).padStart(layerDigits, "0")}-head${String(h).padStart(headDigits, "0")}.png`;
        fs.writeFileSync(path.join(values.png, name), attentionPng(map, h, pngScale));
        written++;
      }
    }
    process.stdout.write(`wrote ${written} PNG heatmaps to ${values.png}\n`);
  }
  const top = trace.next[0];
  if (top) process.stdout.write(`most likely next token: ${JSON.stringify(top.text)} (${(top.probability * 100).toFixed(1)}%)\n`);
  return 0;
}

function formatBytes(n: number): string {
  return n < 1024 ? `${n} B` : n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}
