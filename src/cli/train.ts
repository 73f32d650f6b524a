/** `llama-napi train` (fine-tune or train a model on a text file) and `llama-napi create-model`. */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import { createModel } from "../create-model.js";
import { loadModel } from "../model.js";
import { CREATE_MODEL_OPTIONS } from "../options/create-model.js";
import { TRAIN_OPTIONS, type TrainStep } from "../options/train.js";
import { train } from "../train.js";
import { UsageError } from "./args.js";
import { lossCurveHtml } from "./loss-curve.js";
import { expandAliases, flagGroup } from "./option-flags.js";

const trainFlags = flagGroup(TRAIN_OPTIONS);
const createFlags = flagGroup(CREATE_MODEL_OPTIONS);

export const trainUsage = `llama-napi train -m MODEL --data TEXT_FILE -o OUT.gguf [options]

Trains MODEL (F32 weights, llama architecture) on the text of TEXT_FILE with llama.cpp's optimizer
and writes the result to OUT. Ctrl-C stops at the next step and still writes OUT.

  -m, --model PATH             GGUF model file (F32)
      --data FILE              training text (UTF-8)
  -o, --output PATH            where to write the trained model
      --curve FILE.html        write the loss curve as an HTML page

Training:
${trainFlags.help.join("\n")}`;

export const createModelUsage = `llama-napi create-model OUT.gguf [options]

Writes a new F32 model with nanoGPT's initialisation (normal(0, 0.02), residual projections scaled
by 1/sqrt(2 x layers), biases 0, norms 1). Llama models (the default) are ready for
\`llama-napi train\`; GPT-2 models are for inference only.

${createFlags.help.join("\n")}`;

function duration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export async function runTrain(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: expandAliases(argv, [trainFlags]),
    options: {
      model: { type: "string", short: "m" },
      data: { type: "string" },
      output: { type: "string", short: "o" },
      curve: { type: "string" },
      ...trainFlags.parseOptions,
    },
    strict: true,
  });
  if (!values.model) throw new UsageError("train needs a model: -m MODEL");
  if (!values.data) throw new UsageError("train needs training text: --data FILE");
  if (!values.output) throw new UsageError("train needs an output file: -o OUT.gguf");
  const options = trainFlags.read(values);
  const text = await fs.promises.readFile(values.data, "utf8");
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  const tty = process.stderr.isTTY === true;
  const started = performance.now();
  let lastDraw = 0;
  const draw = (s: TrainStep) => {
    const elapsed = (performance.now() - started) / 1000;
    const eta = (elapsed / s.step) * (s.steps - s.step);
    const line = `epoch ${s.epoch + 1} step ${s.step}/${s.steps} loss ${s.loss.toFixed(4)} acc ${(s.accuracy * 100).toFixed(1)}% ${Math.round(s.tokensPerSecond)} tok/s ETA ${duration(eta)}`;
    process.stderr.write(`\r\x1b[2K${line}`);
  };
  try {
    using model = await loadModel(values.model, { useMmap: false });
    const summary = await train(model, text, {
      ...options,
      signal: controller.signal,
      onProgress: (s) => {
        if (tty && (performance.now() - lastDraw > 100 || s.step === s.steps)) {
          lastDraw = performance.now();
          draw(s);
        }
      },
      onEpoch: (e) => {
        const validation = e.validationLoss === undefined ? "" : `, validation loss ${e.validationLoss.toFixed(4)}`;
        process.stderr.write(`${tty ? "\r\x1b[2K" : ""}epoch ${e.epoch + 1}: loss ${e.loss.toFixed(4)}${validation}\n`);
      },
    });
    if (tty) process.stderr.write("\r\x1b[2K");
    if (summary.initialValidationLoss !== undefined) process.stderr.write(`before training: validation loss ${summary.initialValidationLoss.toFixed(4)}\n`);
    await model.save(values.output);
    if (values.curve) await fs.promises.writeFile(values.curve, lossCurveHtml(summary.history, `Training ${path.basename(values.model)}`));
    process.stderr.write(
      `${summary.aborted ? "stopped" : "trained"}: ${summary.steps} steps, ${summary.trainedTokens} tokens in ${summary.seconds.toFixed(1)} s ` +
        `(${Math.round(summary.tokensPerSecond)} tok/s); loss ${summary.loss?.toFixed(4) ?? "-"}; wrote ${values.output}\n`,
    );
    return summary.aborted ? 130 : 0;
  } finally {
    process.off("SIGINT", onSigint);
  }
}

export async function runCreateModel(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: expandAliases(argv, [createFlags]),
    options: { ...createFlags.parseOptions },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError("create-model takes one output path");
  await createModel(positionals[0]!, createFlags.read(values));
  process.stderr.write(`wrote ${positionals[0]}\n`);
  return 0;
}
