/**
 * The TypeScript fuzzer through decode, for long runs (`npm run fuzz -- --ts N`): N mutants of
 * small complete models (the native fuzzers' seeds of tests/fuzz/native/make-seeds.ts: GPT-2,
 * Llama, BERT, T5, T5 encoder; plus a GPT-2 and a Llama of width 32, whose rows fit the quantised
 * block types, and a recurrent Mamba), spread evenly over the bases. Each mutant is loaded and, when it loads, run: a small context, a prompt and a few
 * sampled tokens (an embedding for embedding models), in watched child processes
 * (loader-fuzz.ts). Every mutant must either work or be refused with a LlamaError; a crash or
 * hang is saved (bytes and description) to --save and fails the run.
 *
 *   node --import ./tests/helpers/register-ts-cached.mjs tests/fuzz/run-fuzz.ts --count N
 *     [--seed S] [--mutator structure|bytes|both] [--save DIR] [--json FILE]
 *
 * With --media, the media fuzz instead (`npm run fuzz -- --media N`, tests/fuzz/media-fuzz.ts):
 * N mutants of the gemma3 / ultravox fixture projectors and of PNG, JPEG, WAV and MP3 seeds,
 * each run through loadModel(text, { projector }) and a prompt with the medium plus 2 generated
 * tokens, and every projector type over both projectors; the same rule, saved to --save.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { LLAMA_VOCAB_PATHS, writeRandomLlama } from "../../src/fixtures/llama.js";
import { writeTinyMamba } from "../helpers/uncomputable.js";
import { runLoaderFuzz, type FuzzFailure } from "./loader-fuzz.js";
import { runMediaCampaign } from "./media-fuzz.js";
import { cutVocab, writeSeeds } from "./native/make-seeds.js";
import { writeSmallGpt2, writeSmallGpt2Vocab } from "./small-gpt2.js";

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}

const count = Number(option("--count", "1000"));
const seed = Number(option("--seed", "25"));
const mutatorOption = option("--mutator", "structure");
const save = option("--save", "");
const jsonOut = option("--json", "");
if (!Number.isSafeInteger(count) || count < 1) throw new Error("--count must be a positive integer");
if (!["structure", "bytes", "both"].includes(mutatorOption)) throw new Error("--mutator must be structure, bytes or both");
const mutators = mutatorOption === "both" ? (["structure", "bytes"] as const) : ([mutatorOption] as Array<"structure" | "bytes">);

async function bases(dir: string): Promise<string[]> {
  await writeSeeds(dir);
  const vocab = path.join(dir, ".gpt2-vocab.gguf");
  const spm = path.join(dir, ".spm-vocab.gguf");
  await writeSmallGpt2Vocab(vocab, 300);
  await cutVocab(LLAMA_VOCAB_PATHS.spm, spm, 300);
  await writeSmallGpt2(path.join(dir, "gpt2-w32.gguf"), vocab, { nEmbd: 32, nHead: 2, nLayer: 1, nCtx: 32, seed: 11 });
  await writeRandomLlama(path.join(dir, "llama-w32.gguf"), { nEmbd: 32, nHead: 2, nHeadKv: 1, nLayer: 1, nCtx: 32, nFf: 64, seed: 12, vocab: spm });
  await writeTinyMamba(path.join(dir, "mamba-f32.gguf"), vocab, 13);
  return fs.readdirSync(dir).filter((f) => f.endsWith(".gguf") && !f.startsWith(".") && f !== "header-only.gguf").sort().map((f) => path.join(dir, f));
}

if (process.argv.includes("--media")) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-media-fuzz-"));
  try {
    const started = performance.now();
    const r = await runMediaCampaign({
      count,
      seed,
      work,
      saveFailuresTo: save || undefined,
      onProgress: (k) => {
        if (k % 250 === 0) console.log(`  ${k} / ${count} mutants, ${((performance.now() - started) / 1000).toFixed(0)} s`);
      },
    });
    console.log(`media fuzz: ${r.count} inputs (${count} mutants + the projector-type sweep, seed ${seed}) in ${r.seconds.toFixed(0)} s, slowest ${r.slowestMs.toFixed(0)} ms`);
    for (const [target, outcomes] of Object.entries(r.perTarget)) console.log(`  ${target.padEnd(20)} ${JSON.stringify(outcomes)}`);
    for (const f of r.failures) console.log(`FAILURE ${f.kind} ${f.target} #${f.index}: ${f.description} -- ${f.detail}`);
    if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ ...r, seed, seconds: Number(r.seconds.toFixed(1)) }, null, 2) + "\n");
    process.exitCode = r.failures.length > 0 ? 1 : 0;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  process.exit();
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-ts-fuzz-"));
try {
  const files = await bases(work);
  const runs = files.flatMap((base) => mutators.map((mutator) => ({ base, mutator })));
  const outcomes: Record<string, number> = {};
  const perBase: Record<string, Record<string, number>> = {};
  const failures: Array<FuzzFailure & { base: string; mutator: string }> = [];
  const started = performance.now();
  let done = 0;
  let slowestMs = 0;
  for (const [i, run] of runs.entries()) {
    const n = Math.floor(count / runs.length) + (i < count % runs.length ? 1 : 0);
    if (n === 0) continue;
    const before = done;
    const report = await runLoaderFuzz({
      base: run.base,
      seed,
      count: n,
      timeoutMs: 20_000,
      mutator: run.mutator,
      saveFailuresTo: save || undefined,
      onProgress: (k) => {
        if (Math.floor((before + k) / 1000) > Math.floor((before + k - 1) / 1000)) {
          console.log(`  ${before + k} / ${count} mutants, ${((performance.now() - started) / 1000).toFixed(0)} s`);
        }
      },
    });
    done += n;
    slowestMs = Math.max(slowestMs, report.slowestMs);
    const name = `${path.basename(run.base, ".gguf")} (${run.mutator})`;
    perBase[name] = report.outcomes;
    for (const [k, v] of Object.entries(report.outcomes)) outcomes[k] = (outcomes[k] ?? 0) + v;
    for (const f of report.failures) failures.push({ ...f, base: path.basename(run.base), mutator: run.mutator });
  }
  const seconds = (performance.now() - started) / 1000;
  const summary = { count: done, seed, mutators, seconds: Number(seconds.toFixed(1)), slowestMs: Math.round(slowestMs), outcomes, perBase, failures };
  console.log(`ts fuzz: ${done} mutants of ${files.length} bases (${mutators.join(" + ")}, seed ${seed}) in ${seconds.toFixed(0)} s, slowest ${slowestMs.toFixed(0)} ms`);
  for (const [k, v] of Object.entries(outcomes).sort((a, b) => b[1] - a[1])) console.log(`  ${k.padEnd(28)} ${v}`);
  for (const f of failures) console.log(`FAILURE ${f.kind} ${f.base} ${f.mutator} #${f.index}: ${f.description} -- ${f.detail}`);
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(summary, null, 2) + "\n");
  process.exitCode = failures.length > 0 ? 1 : 0;
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
