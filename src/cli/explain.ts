import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import { loadModel } from "../model.js";
import type { AttentionMap, TraceResult } from "../trace.js";
import { renderExplainReport } from "../report/html.js";
import { positionEncodingOf } from "../report/data.js";
import { attentionPng } from "../report/png.js";
import { UsageError, intOption } from "./args.js";

export const explainUsage = `llama-napi explain -m MODEL -p TEXT [options]

Traces TEXT through the model and writes a self-contained HTML report (no network requests):
the tokens, attention heatmaps per layer and head, the logit lens and the next-token
probabilities.

On an encoder-decoder model (T5), TEXT is the encoder's input (the source) and the report also
shows the encoder's self-attention and the cross-attention, target tokens over source tokens.
The decoder's input (the target) is --target TEXT, teacher-forced; without it the model writes
one greedily (up to --max-tokens tokens, stopping at its end token) and that is traced.

  -m, --model PATH      GGUF model file
  -p, --prompt TEXT     text to trace (encoder-decoder: the source)
      --target TEXT     encoder-decoder: the decoder text to trace (tokenised without special tokens)
      --max-tokens N    encoder-decoder without --target: tokens to generate and trace (default 16)
  -o, --output FILE     the HTML report (default report.html)
      --png DIR         also write one PNG heatmap per layer and head into DIR (encoder-decoder:
                        also encoder-layerL-headH.png and cross-layerL-headH.png)
      --png-scale N     pixels per attention cell in the PNGs (default: about 512 px wide)
  -t, --threads N       CPU threads (default: all available)
      --top-k K         next-token probabilities to show (default 10)
      --lens-k K        tokens per logit-lens cell (default 5)
      --no-bos          do not add the model's BOS token (encoder-decoder: the source's special tokens)`;

/** Prompts longer than this make a large report; the CLI says so. */
const LARGE_PROMPT = 512;

export async function runExplain(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string", short: "m" },
      prompt: { type: "string", short: "p" },
      target: { type: "string" },
      "max-tokens": { type: "string" },
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
  const maxTokens = intOption(values["max-tokens"], "--max-tokens");
  if (topK < 1) throw new UsageError("--top-k must be at least 1");
  if (lensK < 1 || lensK > 100) throw new UsageError("--lens-k must be from 1 to 100");
  if (pngScale !== undefined && (pngScale < 1 || pngScale > 64)) throw new UsageError("--png-scale must be from 1 to 64");
  if (maxTokens !== undefined && maxTokens < 1) throw new UsageError("--max-tokens must be at least 1");
  if (maxTokens !== undefined && values.target !== undefined) throw new UsageError("--max-tokens is for a generated target; --target gives it");
  const output = values.output ?? "report.html";

  using model = await loadModel(values.model);
  const encoderDecoder = model.info.decoderStartToken !== null;
  if (!encoderDecoder && (values.target !== undefined || maxTokens !== undefined)) {
    throw new UsageError(`${values.target !== undefined ? "--target" : "--max-tokens"} needs an encoder-decoder model (such as T5); this one is ${model.info.architecture}`);
  }
  const addSpecial = !values["no-bos"];
  const count = model.tokenize(values.prompt, { addSpecial }).length;
  if (count === 0) throw new UsageError("the prompt has no tokens");
  if (count > model.info.trainContextSize) {
    throw new UsageError(`the prompt has ${count} tokens; the model was trained on at most ${model.info.trainContextSize}`);
  }
  if (count > LARGE_PROMPT) {
    process.stderr.write(`llama-napi: warning: ${count} tokens × ${model.info.layers} layers × ${model.info.heads} heads of attention make a large report\n`);
  }
  const name = model.info.name && model.info.name !== model.info.architecture ? model.info.name : path.basename(values.model);
  const onWarning = (message: string) => process.stderr.write(`llama-napi: warning: ${message}\n`);
  const threads = intOption(values.threads, "--threads");
  let trace: TraceResult;
  let html: string;
  let summary: string;
  if (encoderDecoder) {
    let target = values.target === undefined ? undefined : model.tokenize(values.target, { addSpecial: false });
    if (target?.length === 0) throw new UsageError("the target has no tokens");
    const decoderLength = 1 + (target?.length ?? maxTokens ?? DEFAULT_TARGET_TOKENS);
    if (decoderLength > model.info.trainContextSize) {
      throw new UsageError(`the target takes ${decoderLength} decoder positions; the model was trained on at most ${model.info.trainContextSize}`);
    }
    using context = await model.createContext({ contextSize: Math.max(64, count + 1, decoderLength + 1), threads });
    using session = context.createSession();
    await session.prompt(values.prompt, { addSpecial });
    let how = "from --target, teacher-forced";
    if (target === undefined) {
      const limit = maxTokens ?? DEFAULT_TARGET_TOKENS;
      const generated = await session.generate({ temperature: 0, topK: 0, maxTokens: limit }).collect();
      if (generated.tokens.length > 0) {
        target = Int32Array.from(generated.tokens);
        how = `generated greedily, ${generated.finishReason === "length" ? `stopped at --max-tokens ${limit}` : "until the model's end token"}`;
      } else {
        // The model ended the target at once: trace the end token it chose.
        target = Int32Array.of(argmax(session.logits()));
        how = "the model's end token: it generated nothing else";
      }
      await session.prompt(values.prompt, { addSpecial }); // back to the decoder start; the encoder's output is reused
    }
    const targetText = values.target ?? model.detokenize(target);
    process.stdout.write(`source: ${count} tokens\ntraced target (${how}): ${target.length} tokens ${JSON.stringify(targetText)}\n`);
    trace = await session.trace(target, { logitLens: lensK, topK });
    html = renderExplainReport(trace, {
      model: name,
      prompt: values.prompt,
      target: targetText,
      architecture: model.info.architecture,
      layerCount: model.info.decoderLayers,
      encoderLayerCount: model.info.layers,
      positionEncoding: positionEncodingOf(model.info),
      onWarning,
    });
    summary = `${trace.encoder?.tokens.length ?? 0} source tokens, ${trace.tokens.length} decoder tokens, ${trace.encoder?.layers.length ?? 0} encoder + ${trace.layers.length} decoder layers × ${trace.heads} heads`;
  } else {
    using context = await model.createContext({ contextSize: Math.max(64, count + 1), threads });
    using session = context.createSession();
    trace = await session.trace(values.prompt, { logitLens: lensK, topK, addSpecial });
    html = renderExplainReport(trace, {
      model: name,
      prompt: values.prompt,
      architecture: model.info.architecture,
      layerCount: model.info.layers,
      positionEncoding: positionEncodingOf(model.info),
      onWarning,
    });
    summary = `${trace.tokens.length} tokens, ${trace.layers.length} layers × ${trace.heads} heads`;
  }
  fs.mkdirSync(path.dirname(path.resolve(output)), { recursive: true });
  fs.writeFileSync(output, html);
  process.stdout.write(`wrote ${output} (${formatBytes(Buffer.byteLength(html))}): ${summary}\n`);
  if (values.png !== undefined) {
    fs.mkdirSync(values.png, { recursive: true });
    const written =
      writePngs(values.png, "", trace.attention ?? [], pngScale, true) +
      writePngs(values.png, "encoder-", trace.encoder?.attention ?? [], pngScale, false) +
      writePngs(values.png, "cross-", trace.crossAttention ?? [], pngScale, false);
    const kinds = encoderDecoder ? " (decoder self-attention layer*, encoder self-attention encoder-layer*, cross-attention cross-layer*)" : "";
    process.stdout.write(`wrote ${written} PNG heatmaps to ${values.png}${kinds}\n`);
  }
  const top = trace.next[0];
  if (top) process.stdout.write(`most likely next token: ${JSON.stringify(top.text)} (${(top.probability * 100).toFixed(1)}%)\n`);
  return 0;
}

/** Tokens an encoder-decoder model generates for the target when --target is not given. */
const DEFAULT_TARGET_TOKENS = 16;

/** One PNG per map and head: `${prefix}layerL-headH.png`. Returns how many. */
function writePngs(dir: string, prefix: string, maps: AttentionMap[], scale: number | undefined, causal: boolean): number {
  if (maps.length === 0) return 0;
  const layerDigits = String(Math.max(...maps.map((m) => m.layer))).length;
  const headDigits = String(maps[0].heads - 1).length;
  let written = 0;
  for (const map of maps) {
    for (let h = 0; h < map.heads; h++) {
      const file = `${prefix}layer${String(map.layer).padStart(layerDigits, "0")}-head${String(h).padStart(headDigits, "0")}.png`;
      fs.writeFileSync(path.join(dir, file), attentionPng(map, h, scale, { causal }));
      written++;
    }
  }
  return written;
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

function formatBytes(n: number): string {
  return n < 1024 ? `${n} B` : n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}
