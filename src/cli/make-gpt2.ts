import { parseArgs } from "node:util";

import { GPT2_PRESETS, writeRandomGpt2 } from "../fixtures/gpt2.js";
import { UsageError, intOption } from "./args.js";

export const makeGpt2Usage = `llama-napi make-gpt2 OUT.gguf [options]

Writes a GPT-2-architecture model with seeded random weights and the real GPT-2 vocabulary.
It produces gibberish, but runs exactly like GPT-2 (for demos, tests and benchmarks).

      --preset NAME     tiny (2 layers, n_embd 64) or small (GPT-2 124M) (default tiny)
      --seed N          weight seed (default 1)
      --f16             store the weight matrices as F16 (default F32)`;

export async function runMakeGpt2(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { preset: { type: "string" }, seed: { type: "string" }, f16: { type: "boolean" } },
    allowPositionals: true,
    strict: true,
  });
  const out = positionals[0];
  if (!out || positionals.length > 1) throw new UsageError("make-gpt2 takes one output path");
  const presetName = values.preset ?? "tiny";
  if (!(presetName in GPT2_PRESETS)) throw new UsageError(`unknown preset "${presetName}"; use tiny or small`);
  const preset = GPT2_PRESETS[presetName as keyof typeof GPT2_PRESETS];
  await writeRandomGpt2(out, { ...preset, seed: intOption(values.seed, "--seed") ?? 1, type: values.f16 ? "f16" : "f32" });
  process.stderr.write(`wrote ${out} (GPT-2 ${presetName}, random weights)\n`);
  return 0;
}
