/**
 * media: images and audio through a projector (libmtmd), against llama.cpp's own: the projector's
 * encoding time and the time to the first token of a prompt with one image (or one audio clip).
 *
 *   llama-napi     model.encodeMedia() and session.prompt([text, { image }, text]) + the first
 *                  greedy token, on a fresh session each round (bench/lib/ours-worker.mjs "media");
 *   media-bench    llama-mtmd-cli's flow through libmtmd in a loop (bench/llama-tools/media-bench.cpp):
 *                  the file decoded, tokenized and encoded (as encodeMedia), and the whole prompt
 *                  (decode, tokenize, mtmd_helper_eval_chunk_single per chunk, argmax) on a cleared cache;
 *   llama-mtmd-cli itself, once per round (-n 1): the encoding time it logs ("mtmd batch encoding
 *                  done in N ms"; it prints no time to first token).
 *
 * The models are random-weight fixtures of a realistic size written with llama-napi's writers into
 * bench/.work/models/media: a Llama (512 wide, 8 layers, 32,000 tokens), a Gemma 3 (SigLIP)
 * projector at 448 px (1,024 patches, 6 layers 384 wide, 64 embeddings per image), an Ultravox
 * (Whisper encoder) projector (4 layers 384 wide, 375 embeddings per 30-s window), a 640x480 PNG
 * and a 5-s WAV. Encoder speed does not depend on the weights' values.
 */
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { ROOT } from "../lib/env.mjs";
import { fmt, fmtRatio, median, ratio } from "../lib/stats.mjs";

const MARKER = "<__media__>";
const PROMPT = `Describe this:\n${MARKER}\nin one sentence.`;

async function ensureMediaModels(ctx) {
  const dir = path.join(ctx.workDir, "models", "media");
  const files = {
    text: path.join(dir, "llama-512x8-seed1.gguf"),
    image: { projector: path.join(dir, "gemma3-mmproj-448px-384x6-seed2.gguf"), media: path.join(dir, "test-640x480.png") },
    audio: { projector: path.join(dir, "ultravox-mmproj-384x4-seed3.gguf"), media: path.join(dir, "tone-5s.wav") },
  };
  if ([files.text, files.image.projector, files.image.media, files.audio.projector, files.audio.media].every((f) => fs.existsSync(f))) return files;
  ctx.log(`writing the media fixtures into ${path.relative(ROOT, dir)}`);
  fs.mkdirSync(dir, { recursive: true });
  const dist = (m) => import(pathToFileURL(path.join(ROOT, "dist", "fixtures", m)).href);
  const { writeRandomLlama, LLAMA2_CHAT_TEMPLATE } = await dist("llama.js");
  const m = await dist("mtmd.js");
  const textEmbd = 512;
  await writeRandomLlama(files.text, { nEmbd: textEmbd, nHead: 8, nLayer: 8, nCtx: 2048, nFf: 1536, seed: 1, chatTemplate: LLAMA2_CHAT_TEMPLATE });
  const encoder = { nEmbd: 384, nHead: 6, nFf: 1536 };
  await m.writeVisionProjector(files.image.projector, { textEmbd, seed: 2, imageSize: 448, patchSize: 14, mergeFactor: 4, nLayer: 6, ...encoder });
  await m.writeAudioProjector(files.audio.projector, { textEmbd, seed: 3, nLayer: 4, ...encoder });
  fs.writeFileSync(files.image.media, m.encodePng(640, 480, m.testImagePixels(640, 480, 7)));
  fs.writeFileSync(files.audio.media, m.encodeWav(m.testToneSamples(5)));
  return files;
}

export default {
  name: "media",
  description: "projector encoding time and time to first token with an image / audio vs llama-mtmd-cli (libmtmd)",
  async run(ctx) {
    const { options } = ctx;
    const tools = await ctx.tools();
    const files = await ensureMediaModels(ctx);
    const rounds = options.quick ? 2 : options.reps;
    const context = { contextSize: 2048, threads: options.threads };
    const results = {};
    const rows = [];
    for (const kind of ["image", "audio"]) {
      const { projector, media } = files[kind];
      ctx.progress(`media: ${kind}, ${rounds} rounds each`);
      const ours = await ctx.runWorker("ours-worker.mjs", { mode: "media", kind, model: files.text, projector, media, prompt: PROMPT, marker: MARKER, rounds, threads: options.threads, context });
      const common = ["-m", files.text, "--mmproj", projector, `--${kind}`, media, "-t", String(options.threads), "-c", "2048"];
      const raw = ctx.lastJsonLine(await ctx.runCommand(tools["media-bench"], [...common, "-p", PROMPT, "-r", String(rounds)]));
      const cli = [];
      for (let round = 0; round < rounds; round++) {
        // Its log goes to stderr, which runCommand keeps only on failure: a shell folds it into stdout.
        const shell = await ctx.runCommand("sh", ["-c", `"$0" "$@" 2>&1`, tools["llama-mtmd-cli"], ...common, "-p", "Describe this.", "-n", "1", "--temp", "0", "--log-colors", "off"]);
        const done = /mtmd batch encoding done in (\d+) ms/.exec(shell);
        if (done) cli.push(Number(done[1]));
      }
      const m = { oursEncode: median(ours.encodeMs), rawEncode: median(raw.encode_ms), cliEncode: median(cli), oursTtft: median(ours.ttftMs), rawTtft: median(raw.ttft_ms) };
      results[kind] = { projector: path.basename(projector), media: path.basename(media), positions: raw.positions, ours, raw, cliEncodeMs: cli, medians: m };
      rows.push([
        kind,
        String(raw.positions),
        fmt(m.oursEncode),
        fmt(m.rawEncode),
        fmtRatio(ratio(m.rawEncode, m.oursEncode)),
        fmt(m.cliEncode),
        fmt(m.oursTtft),
        fmt(m.rawTtft),
        fmtRatio(ratio(m.rawTtft, m.oursTtft)),
      ]);
    }
    const table = {
      title: `media: ${options.threads} threads, median of ${rounds} rounds (times in ms; ratios are speed: theirs / ours, >= 1 means llama-napi is as fast or faster)`,
      columns: ["input", "prompt positions", "encode llama-napi", "encode media-bench", "speed vs media-bench", "encode step llama-mtmd-cli", "TTFT llama-napi", "TTFT media-bench", "speed vs media-bench"],
      rows,
      notes: [
        "image: Gemma 3 (SigLIP) projector, 448 px, 6 layers 384 wide, a 640x480 PNG; audio: Ultravox (Whisper) projector, 4 layers 384 wide, a 5-s WAV; text model: Llama 512 wide, 8 layers (random weights)",
        "encode: the file decoded, preprocessed (resize / mel spectrogram) and encoded, in llama-napi (model.encodeMedia) and media-bench; llama-mtmd-cli logs the encoding step alone",
        "TTFT: from the prompt (the file's bytes) to the first greedy token on an empty cache; llama-mtmd-cli prints no TTFT, so media-bench runs its flow in a loop",
      ],
    };
    return { results: { settings: { rounds, context, prompt: PROMPT }, ...results }, tables: [table] };
  },
};
