import { parseArgs } from "node:util";

import { IMATRIX_QUANT_TYPES, QUANT_TYPES, quantize, type QuantType } from "../quantize.js";
import { UsageError, intOption } from "./args.js";
import { formatBytes } from "./inspect.js";

export const quantizeUsage = `llama-napi quantize IN.gguf OUT.gguf TYPE [options]

Quantises a model with llama.cpp (the same tensor types as llama.cpp's llama-quantize).
OUT is written only when the quantisation completes. Ctrl-C stops it and deletes the partial file.

TYPE: ${QUANT_TYPES.join(", ")}

  -t, --threads N         threads (default: the cores, at most 16)
      --allow-requantize  quantise tensors that are already quantised (lower quality)`;

const BAR_WIDTH = 30;

/** Progress on stderr: a redrawn bar on a terminal, a line per 10% otherwise. */
function progressReporter(): { update(p: number): void; done(): void } {
  const tty = process.stderr.isTTY === true;
  let lastDecile = -1;
  return {
    update(p: number) {
      const percent = Math.floor(p * 100);
      if (tty) {
        const filled = Math.round(p * BAR_WIDTH);
        process.stderr.write(`\r[${"#".repeat(filled)}${".".repeat(BAR_WIDTH - filled)}] ${String(percent).padStart(3)}%`);
      } else if (Math.floor(percent / 10) > lastDecile) {
        lastDecile = Math.floor(percent / 10);
        process.stderr.write(`quantize: ${percent}%\n`);
      }
    },
    done() {
      if (tty) process.stderr.write("\n");
    },
  };
}

function parseType(value: string): QuantType {
  const upper = value.toUpperCase();
  if ((QUANT_TYPES as readonly string[]).includes(upper) || IMATRIX_QUANT_TYPES.includes(upper)) return upper as QuantType;
  throw new UsageError(`unknown quantisation type "${value}"; use one of ${QUANT_TYPES.join(", ")}`);
}

export async function runQuantize(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { threads: { type: "string", short: "t" }, "allow-requantize": { type: "boolean" } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 3) throw new UsageError("quantize takes IN OUT TYPE");
  const [input, output, typeName] = positionals;
  const type = parseType(typeName);
  const threads = intOption(values.threads, "--threads");
  if (threads !== undefined && threads < 1) throw new UsageError("--threads must be at least 1");
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  const progress = progressReporter();
  try {
    const r = await quantize(input, output, {
      type,
      threads,
      allowRequantize: values["allow-requantize"] ?? false,
      onProgress: (p) => progress.update(p),
      signal: controller.signal,
    });
    progress.done();
    const types = Object.entries(r.tensorTypes)
      .map(([t, n]) => `${n} ${t}`)
      .join(", ");
    process.stderr.write(
      `wrote ${r.output}: ${type}, ${formatBytes(r.inputBytes)} -> ${formatBytes(r.outputBytes)} ` +
        `(${((100 * r.outputBytes) / r.inputBytes).toFixed(1)}%), ${r.tensors} tensors (${types}), ${r.seconds.toFixed(1)} s\n`,
    );
    return 0;
  } catch (err) {
    progress.done();
    if (controller.signal.aborted) {
      process.stderr.write("llama-napi: quantisation interrupted; nothing was written\n");
      return 130;
    }
    throw err;
  } finally {
    process.removeListener("SIGINT", onSigint);
  }
}
