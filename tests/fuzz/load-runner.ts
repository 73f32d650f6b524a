/**
 * Child process of the loader fuzz (see loader-fuzz.ts): loads mutations `from`..`to` of a GGUF
 * file with loadModel and reports each outcome over IPC. Before each load it reports "start", so
 * that the parent knows which mutation was running if this process dies or hangs.
 *
 * Run as: node --import ./tests/helpers/register-ts-cached.mjs tests/fuzz/load-runner.ts REQUEST_JSON, with an
 * IPC channel (child_process.fork).
 */
import fs from "node:fs";
import path from "node:path";

import { LlamaError, loadModel } from "../../src/index.js";
import { headerFields, mutate } from "./mutate.js";

/** Loads mutations from..to of `base`, or files[from..to] when `files` is given. */
export interface RunRequest {
  base: string;
  headerEnd: number;
  seed: number;
  from: number;
  to: number;
  tmpDir: string;
  files?: string[];
}

export type RunnerMessage =
  | { type: "start"; index: number; description: string }
  | { type: "done"; index: number; outcome: string; ms: number; rss: number }
  | { type: "end" };

function send(message: RunnerMessage): Promise<void> {
  return new Promise((resolve, reject) => process.send!(message, undefined, {}, (err) => (err ? reject(err) : resolve())));
}

/** "loaded", a LlamaError code, or "NOT_A_LLAMA_ERROR: ..." for anything else thrown. */
async function loadOnce(file: string): Promise<string> {
  try {
    const model = await loadModel(file);
    model.dispose();
    return "loaded";
  } catch (err) {
    if (err instanceof LlamaError) return err.code;
    return `NOT_A_LLAMA_ERROR: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`;
  }
}

async function run(req: RunRequest): Promise<void> {
  const base = req.files ? new Uint8Array(0) : fs.readFileSync(req.base);
  const fields = req.files ? [] : headerFields(base);
  const file = path.join(req.tmpDir, `mutation-${process.pid}.gguf`);
  for (let index = req.from; index < req.to; index++) {
    let input = req.files?.[index];
    if (input === undefined) {
      const m = mutate(base, fields, req.headerEnd, req.seed, index);
      fs.writeFileSync(file, m.bytes);
      await send({ type: "start", index, description: m.description });
      input = file;
    } else {
      await send({ type: "start", index, description: path.basename(input) });
    }
    const started = performance.now();
    const outcome = await loadOnce(input);
    await send({ type: "done", index, outcome, ms: performance.now() - started, rss: process.memoryUsage().rss });
  }
  fs.rmSync(file, { force: true });
  await send({ type: "end" });
}

// The request comes as JSON in argv (an IPC message sent before this module has loaded could be lost).
run(JSON.parse(process.argv[2]) as RunRequest).then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(70);
  },
);
