/**
 * The model of the tool-calling tests: a random-weights GPT-2 (the real GPT-2 vocabulary) with
 * 4096 positions, since templates with tool schemas make prompts of 1-3k tokens. Written once to
 * tests/.fixtures/ (gitignored); the name carries a version to bump when the options change.
 */
import fs from "node:fs";
import path from "node:path";

import { writeRandomGpt2 } from "../../src/fixtures/gpt2.js";
import { fixtureDir } from "./fixtures.js";

export async function toolsModelPath(): Promise<string> {
  const file = path.join(fixtureDir, "gpt2-ctx4096-tools-v1.gguf");
  if (!fs.existsSync(file)) {
    fs.mkdirSync(fixtureDir, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeRandomGpt2(tmp, { nEmbd: 64, nHead: 4, nLayer: 2, nCtx: 4096, seed: 4242, type: "f16" });
    fs.renameSync(tmp, file);
  }
  return file;
}
