/**
 * Test fixtures: GGUF models generated from seeded random weights, cached in tests/.fixtures/
 * (gitignored). The cache key includes a hash of the generator's source, so a change to the
 * generator makes new files.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { GPT2_PRESETS, writeRandomGpt2, type Gpt2Options } from "../../src/fixtures/gpt2.js";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const fixtureDir = path.join(repoRoot, "tests", ".fixtures");
export const sharedModelsDir = path.resolve(repoRoot, "..", "shared", "models");
export const storiesModelPath = path.join(sharedModelsDir, "stories260K.gguf");

/** The fixtures the suite uses, by name. */
export const FIXTURES = {
  /** GPT-2 architecture, 2 layers, n_embd 64, real GPT-2 vocabulary, F32. */
  "gpt2-tiny-f32": { ...GPT2_PRESETS.tiny, seed: 1234, type: "f32" },
  /** The same shape with other weights, F16. */
  "gpt2-tiny-f16": { ...GPT2_PRESETS.tiny, seed: 99, type: "f16" },
  /** Wider and with a 1024-token context: slow enough to measure the event loop during a decode. */
  "gpt2-wide-f16": { nEmbd: 384, nHead: 6, nLayer: 4, nCtx: 1024, seed: 7, type: "f16" },
} as const satisfies Record<string, Gpt2Options>;

export type FixtureName = keyof typeof FIXTURES;

function generatorHash(): string {
  const hash = createHash("sha256");
  for (const file of ["src/fixtures/gpt2.ts", "src/gguf/writer.ts"]) {
    hash.update(fs.readFileSync(path.join(repoRoot, file)));
  }
  return hash.digest("hex").slice(0, 10);
}

export function fixturePath(name: FixtureName): string {
  return path.join(fixtureDir, `${name}-${generatorHash()}.gguf`);
}

/** Writes every fixture that is not cached yet. */
export async function ensureFixtures(): Promise<void> {
  fs.mkdirSync(fixtureDir, { recursive: true });
  for (const [name, options] of Object.entries(FIXTURES) as Array<[FixtureName, Gpt2Options]>) {
    const file = fixturePath(name);
    if (!fs.existsSync(file)) await writeRandomGpt2(file, options);
  }
}
