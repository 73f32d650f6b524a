/**
 * Child process of the loader fuzz (see loader-fuzz.ts): loads mutations `from`..`to` of a GGUF
 * file with loadModel and, for each that loads, creates a small context, evaluates a prompt and
 * generates a few tokens (or computes an embedding, for an embedding model), then reports the
 * outcome over IPC. Before each input it reports "start", so that the parent knows which
 * mutation was running if this process dies or hangs.
 *
 * Run as: node --import ./tests/helpers/register-ts-cached.mjs tests/fuzz/load-runner.ts REQUEST_JSON, with an
 * IPC channel (child_process.fork).
 */
import fs from "node:fs";
import path from "node:path";

import { LlamaError, loadModel, type Model } from "../../src/index.js";
import { headerFields, mutate } from "./mutate.js";
import { mutateStructure, parseGguf } from "./structure.js";

/** Loads mutations from..to of `base`, or files[from..to] when `files` is given. */
export interface RunRequest {
  base: string;
  headerEnd: number;
  seed: number;
  from: number;
  to: number;
  tmpDir: string;
  files?: string[];
  /** "bytes" (mutate.ts, the default) or "structure" (structure.ts). */
  mutator?: "bytes" | "structure";
  /** Stop after the load (no context, no decode). Default false. */
  loadOnly?: boolean;
}

export type RunnerMessage =
  | { type: "start"; index: number; description: string }
  | { type: "done"; index: number; outcome: string; ms: number; rss: number }
  | { type: "end" };

function send(message: RunnerMessage): Promise<void> {
  return new Promise((resolve, reject) => process.send!(message, undefined, {}, (err) => (err ? reject(err) : resolve())));
}

function errorOutcome(err: unknown): string {
  if (err instanceof LlamaError) return err.code;
  return `NOT_A_LLAMA_ERROR: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`;
}

/** What a model that loaded does: generate (or embed, for an embedding model), in a small context. */
async function use(model: Model): Promise<string> {
  const arch = model.info.architecture;
  const contextSize = Math.max(1, Math.min(32, model.info.trainContextSize || 32));
  if (model.metadata[`${arch}.pooling_type`] !== undefined || !model.info.hasDecoder) {
    using embedder = await model.createEmbeddingContext({ contextSize, sequences: 2, threads: 1 });
    await embedder.embed(["Hello world", "a"]);
    return "embedded";
  }
  using context = await model.createContext({ contextSize, batchSize: 16, threads: 1 });
  using session = context.createSession();
  await session.prompt("Hi there");
  // The default sampler chain (temperature, top-k, top-p, min-p) on whatever logits come out.
  await session.generate({ maxTokens: 3, seed: 1 }).collect();
  return "generated";
}

/**
 * "generated" / "embedded"; a LlamaError code when the load failed; "loaded/" + a code when the
 * model loaded and then its context, prompt or generation failed; "NOT_A_LLAMA_ERROR: ..." for
 * anything else thrown. With `loadOnly`, "loaded" for a model that loads.
 */
async function runOnce(file: string, loadOnly: boolean): Promise<string> {
  let model: Model;
  try {
    model = await loadModel(file);
  } catch (err) {
    return errorOutcome(err);
  }
  try {
    return loadOnly ? "loaded" : await use(model);
  } catch (err) {
    return `loaded/${errorOutcome(err)}`;
  } finally {
    model.dispose();
  }
}

async function run(req: RunRequest): Promise<void> {
  const base = req.files ? new Uint8Array(0) : fs.readFileSync(req.base);
  const structure = req.mutator === "structure";
  const fields = req.files || structure ? [] : headerFields(base);
  const parts = !req.files && structure ? parseGguf(base) : undefined;
  const file = path.join(req.tmpDir, `mutation-${process.pid}.gguf`);
  for (let index = req.from; index < req.to; index++) {
    let input = req.files?.[index];
    if (input === undefined) {
      const m = parts ? mutateStructure(parts, req.seed, index) : mutate(base, fields, req.headerEnd, req.seed, index);
      fs.writeFileSync(file, m.bytes);
      await send({ type: "start", index, description: m.description });
      input = file;
    } else {
      await send({ type: "start", index, description: path.basename(input) });
    }
    const started = performance.now();
    const outcome = await runOnce(input, req.loadOnly ?? false);
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
