/**
 * Child process of the media fuzz (see media-fuzz.ts). For inputs `from`..`to`, reports "start"
 * (so that the parent knows which input was running if this process dies or hangs), runs the
 * input and reports its outcome over IPC:
 *
 *  - "projector" mode: mutant i of the projector (or files[i]) is loaded with
 *    loadModel(text, { projector }); when it loads, a context, a prompt with one image (or audio,
 *    for a projector that takes no images) between text, and 2 generated tokens.
 *  - "media" mode: the text model is loaded once with the projector; mutant i of seeds[i % n]
 *    (or files[i]) goes in a prompt between text in a new session, then 2 generated tokens; every
 *    third one also through model.encodeMedia.
 *
 * Run as: node --import ./tests/helpers/register-ts-cached.mjs tests/fuzz/media-runner.ts REQUEST_JSON,
 * with an IPC channel (child_process.fork).
 */
import fs from "node:fs";
import path from "node:path";

import { LlamaError, loadModel, type Context, type Model, type PromptPart } from "../../src/index.js";
import { isAudioKind, mediaKindOf, mutateMedia, mutateProjector, type MediaFuzzTarget } from "./media-fuzz.js";
import { parseGguf } from "./structure.js";

export interface MediaRunRequest extends MediaFuzzTarget {
  seed: number;
  from: number;
  to: number;
  tmpDir: string;
  /** Run these files instead of mutants (regressions). */
  files?: string[];
}

export type MediaRunMessage =
  | { type: "start"; index: number; description: string }
  | { type: "done"; index: number; outcome: string; ms: number }
  | { type: "end" };

function send(message: MediaRunMessage): Promise<void> {
  return new Promise((resolve, reject) => process.send!(message, undefined, {}, (err) => (err ? reject(err) : resolve())));
}

function errorOutcome(err: unknown): string {
  if (err instanceof LlamaError) return err.code;
  return `NOT_A_LLAMA_ERROR: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`.slice(0, 300);
}

const CONTEXT = { contextSize: 2048, batchSize: 512, threads: 1 } as const;

/** A prompt with one media item between text, then 2 sampled tokens, in a new session of `context`. */
async function promptWith(context: Context, part: PromptPart): Promise<void> {
  using session = context.createSession();
  await session.prompt(["Look: ", part, " What is it?"]);
  await session.generate({ maxTokens: 2, seed: 1 }).collect();
}

async function runProjector(req: MediaRunRequest, file: string): Promise<string> {
  let model: Model;
  try {
    model = await loadModel(req.text, { projector: file });
  } catch (err) {
    return errorOutcome(err);
  }
  try {
    const info = model.info.projector;
    if (info === null) return "loaded/NO_PROJECTOR";
    const part: PromptPart = info.image ? { image: fs.readFileSync(req.image!) } : info.audio ? { audio: fs.readFileSync(req.audio!) } : "";
    if (typeof part === "string") return "loaded/NO_MODALITY";
    using context = await model.createContext(CONTEXT);
    await promptWith(context, part);
    return "generated";
  } catch (err) {
    return `loaded/${errorOutcome(err)}`;
  } finally {
    model.dispose();
  }
}

async function runMedia(model: Model, context: Context, bytes: Uint8Array, audio: boolean, encode: boolean): Promise<string> {
  const part: PromptPart = audio ? { audio: bytes } : { image: bytes };
  try {
    await promptWith(context, part);
  } catch (err) {
    return errorOutcome(err);
  }
  if (!encode) return "generated";
  try {
    const e = await model.encodeMedia(part as { image: Uint8Array } | { audio: Uint8Array });
    if (e.embeddings.length !== e.tokens * e.width) return "NOT_A_LLAMA_ERROR: encodeMedia gave a wrong number of floats";
    return "generated+encoded";
  } catch (err) {
    return `generated/encode-${errorOutcome(err)}`;
  }
}

async function run(req: MediaRunRequest): Promise<void> {
  const tmpFile = path.join(req.tmpDir, `mutant-${process.pid}.gguf`);
  let model: Model | undefined;
  let context: Context | undefined;
  const projectorBase = req.mode === "projector" && !req.files ? parseGguf(fs.readFileSync(req.projector)) : undefined;
  const seeds = req.mode === "media" ? (req.seeds ?? []).map((f) => ({ kind: mediaKindOf(f), bytes: fs.readFileSync(f) })) : [];
  if (req.mode === "media") {
    model = await loadModel(req.text, { projector: req.projector });
    context = await model.createContext(CONTEXT);
  }
  for (let index = req.from; index < req.to; index++) {
    const started = performance.now();
    let outcome: string;
    if (req.mode === "projector") {
      let file = req.files?.[index];
      if (file === undefined) {
        const m = mutateProjector(projectorBase!, req.seed, index);
        fs.writeFileSync(tmpFile, m.bytes);
        await send({ type: "start", index, description: m.description });
        file = tmpFile;
      } else {
        await send({ type: "start", index, description: path.basename(file) });
      }
      outcome = await runProjector(req, file);
    } else {
      let bytes: Uint8Array;
      let audio: boolean;
      const file = req.files?.[index];
      if (file === undefined) {
        const s = seeds[index % seeds.length];
        const m = mutateMedia(s.bytes, s.kind, req.seed, index);
        await send({ type: "start", index, description: `${s.kind}: ${m.description}` });
        bytes = m.bytes;
        audio = isAudioKind(s.kind);
      } else {
        await send({ type: "start", index, description: path.basename(file) });
        bytes = fs.readFileSync(file);
        audio = isAudioKind(mediaKindOf(file));
      }
      // An empty mutant is the caller's mistake, not the decoder's: refused in TypeScript as ERR_MEDIA_INVALID.
      outcome = await runMedia(model!, context!, bytes, audio, index % 3 === 0);
    }
    await send({ type: "done", index, outcome, ms: performance.now() - started });
  }
  context?.dispose();
  model?.dispose();
  fs.rmSync(tmpFile, { force: true });
  await send({ type: "end" });
}

// The request comes as JSON in argv (an IPC message sent before this module has loaded could be lost).
run(JSON.parse(process.argv[2]) as MediaRunRequest).then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(70);
  },
);
