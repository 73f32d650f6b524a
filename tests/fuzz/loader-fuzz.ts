/**
 * The loader fuzz driver: runs load-runner.ts in a child process and watches it. A child that
 * dies (abort, segfault) or does not finish an input in time (load, context, prompt and a few
 * generated tokens) is recorded against the mutation it was running, and a new child goes on
 * with the next mutation, so one crash does not hide others.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { readGguf } from "../../src/gguf/index.js";
import type { RunRequest } from "./load-runner.js";
import { headerFields, mutate } from "./mutate.js";
import { mutateStructure, parseGguf } from "./structure.js";
import { runWatchedChild } from "./watch-child.js";


export interface FuzzFailure {
  index: number;
  description: string;
  kind: "crash" | "hang" | "not-a-llama-error";
  detail: string;
}

export interface FuzzReport {
  count: number;
  /** How many mutations ended each way: "generated", "embedded", an error code, or "loaded/" + an error code. */
  outcomes: Record<string, number>;
  failures: FuzzFailure[];
  /** The outcome of each input, by index (as in `outcomes`, or "crash" or "hang"). */
  results: string[];
  slowestMs: number;
  /** Child RSS after the first `warmup` loads, and the largest seen afterwards (bytes). */
  rssAfterWarmup: number;
  rssMax: number;
  seconds: number;
}

export interface FuzzOptions {
  base: string;
  seed: number;
  count: number;
  /** A load slower than this counts as a hang (the child is killed). */
  timeoutMs: number;
  warmup?: number;
  /** Where to keep the bytes of each crashing or hanging mutation (a regression corpus). */
  saveFailuresTo?: string;
  /** "bytes" (mutate.ts, default) or "structure" (structure.ts). */
  mutator?: "bytes" | "structure";
  /** Only load each input (no context, no decode). Default false. */
  loadOnly?: boolean;
  /** Called after each input with the number done (progress for long runs). */
  onProgress?: (done: number) => void;
}

function runChild(req: RunRequest, timeoutMs: number, report: FuzzReport, warmup: number, onProgress?: (done: number) => void): Promise<{ next: number; failure?: FuzzFailure }> {
  return runWatchedChild<{ outcome: string; ms: number; rss: number }>({
    runner: "load-runner.ts",
    request: req,
    timeoutMs,
    onDone: (m) => {
      report.outcomes[m.outcome] = (report.outcomes[m.outcome] ?? 0) + 1;
      report.results[m.index] = m.outcome;
      report.slowestMs = Math.max(report.slowestMs, m.ms);
      onProgress?.(m.index + 1);
      if (m.index === warmup - 1) report.rssAfterWarmup = m.rss;
      if (m.index >= warmup) report.rssMax = Math.max(report.rssMax, m.rss);
      if (m.outcome.startsWith("NOT_A_LLAMA_ERROR")) {
        report.failures.push({ index: m.index, description: "", kind: "not-a-llama-error", detail: m.outcome });
      }
    },
  });
}

/** Runs inputs 0..count of `template` (mutations, or its files) in watched child processes. */
async function drive(template: Omit<RunRequest, "from" | "to" | "tmpDir">, count: number, options: FuzzOptions): Promise<FuzzReport> {
  const started = performance.now();
  const warmup = options.warmup ?? 50;
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-fuzz-"));
  const report: FuzzReport = { count, outcomes: {}, failures: [], results: [], slowestMs: 0, rssAfterWarmup: 0, rssMax: 0, seconds: 0 };
  try {
    for (let from = 0; from < count; ) {
      const result = await runChild({ ...template, from, to: count, tmpDir }, options.timeoutMs, report, warmup, options.onProgress);
      if (result.failure) {
        report.failures.push(result.failure);
        report.outcomes[result.failure.kind] = (report.outcomes[result.failure.kind] ?? 0) + 1;
        report.results[result.failure.index] = result.failure.kind;
        if (options.saveFailuresTo && !template.files) saveFailure(options, result.failure, template.headerEnd);
        if (options.saveFailuresTo && template.files) saveFailureFile(options.saveFailuresTo, template.files[result.failure.index], result.failure);
      }
      if (result.next <= from) throw new Error(`the fuzz child made no progress at input ${from}`);
      from = result.next;
    }
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
  report.seconds = (performance.now() - started) / 1000;
  return report;
}

/** Runs `count` seeded mutations of `base` (load, then decode what loads), in watched child processes. */
export async function runLoaderFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const header = await readGguf(options.base, { maxArrayLength: 0 });
  const template = { base: options.base, headerEnd: header.dataOffset, seed: options.seed, mutator: options.mutator, loadOnly: options.loadOnly };
  return drive(template, options.count, options);
}

/** Loads (and decodes) each file, in watched child processes (for the regression corpus). */
export async function loadFilesInChild(files: string[], timeoutMs: number, options: { loadOnly?: boolean } = {}): Promise<FuzzReport> {
  return drive({ base: "", headerEnd: 0, seed: 0, files, loadOnly: options.loadOnly }, files.length, { base: "", seed: 0, count: files.length, timeoutMs, warmup: 0 });
}

/** The bytes of mutation `index` of `base`, as the child made them. */
export function mutationOf(options: Pick<FuzzOptions, "base" | "seed" | "mutator">, headerEnd: number, index: number): { description: string; bytes: Uint8Array } {
  const base = fs.readFileSync(options.base);
  return options.mutator === "structure"
    ? mutateStructure(parseGguf(base), options.seed, index)
    : mutate(base, headerFields(base), headerEnd, options.seed, index);
}

/** Regenerates the failing mutation (the same bytes the child loaded) and keeps it. */
function saveFailure(options: FuzzOptions, failure: FuzzFailure, headerEnd: number): void {
  const m = mutationOf(options, headerEnd, failure.index);
  fs.mkdirSync(options.saveFailuresTo!, { recursive: true });
  const name = `${failure.kind}-${options.mutator ?? "bytes"}-${path.basename(options.base, ".gguf")}-seed${options.seed}-${failure.index}`;
  fs.writeFileSync(path.join(options.saveFailuresTo!, `${name}.gguf`), m.bytes);
  fs.writeFileSync(path.join(options.saveFailuresTo!, `${name}.txt`), `${m.description}\n${failure.detail}\n`);
}

function saveFailureFile(dir: string, file: string, failure: FuzzFailure): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(file, path.join(dir, `${failure.kind}-${path.basename(file)}`));
  fs.writeFileSync(path.join(dir, `${failure.kind}-${path.basename(file, ".gguf")}.txt`), `${failure.detail}\n`);
}
