/**
 * `llama-napi generate`, run as a user runs it: `node dist/cli/main.js` in a child process. Its
 * output must be the prompt followed by exactly the text the API streams for the same greedy
 * generation (the CLI prints generate()'s chunks, so it inherits the native streaming
 * detokenizer), and a newline.
 *
 * dist/ is built by the test setup (tests/helpers/dist.ts) when it is missing or older than src/.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, type Context, type Model } from "../src/index.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";
import { utf8OrUndefined } from "./helpers/text-oracles.js";

const run = promisify(execFile);
const MAIN = path.join(repoRoot, "dist", "cli", "main.js");
const MAX_TOKENS = 40;



describe("llama-napi generate (CLI)", () => {
  let model: Model;
  let context: Context;
  const modelPath = fixturePath("gpt2-tiny-f32");

  beforeAll(async () => {
    model = await loadModel(modelPath);
    context = await model.createContext({ contextSize: 128, threads: 1 });
  }, 180_000);
  afterAll(() => model?.dispose());

  /** The same greedy generation through the API. */
  async function apiGenerate(prompt: string, stop?: string[]) {
    using session = context.createSession();
    await session.prompt(prompt);
    return await session.generate({ temperature: 0, maxTokens: MAX_TOKENS, stop }).collect();
  }

  async function cli(...args: string[]): Promise<string> {
    const { stdout } = await run(
      process.execPath,
      [MAIN, "generate", "-m", modelPath, "-n", String(MAX_TOKENS), "--temp", "0", "-t", "1", "-c", "128", ...args],
      { cwd: repoRoot, encoding: "utf8" },
    );
    return stdout;
  }

  it("prints the prompt and the API's greedy completion", async () => {
    const prompt = "Hello, my name is";
    const expected = await apiGenerate(prompt);
    expect(expected.tokens.length).toBeGreaterThan(5);
    // The streamed text is the tokens' pieces, as detokenize() gives them.
    const pieces = Buffer.concat(expected.tokens.map((t) => model.tokenToBytes(t))).toString("utf8");
    expect(expected.text).toBe(pieces);
    expect(model.detokenize(expected.tokens)).toBe(expected.text);

    expect(await cli("-p", prompt)).toBe(`${prompt}${expected.text}\n`);
  });

  it("takes a draft model (-md, --draft-max) and prints the same completion; refuses one with another vocabulary", async () => {
    const prompt = "Hello, my name is";
    // F32 cache, flash attention off: batched verification rounds as one-token decoding does.
    using exactContext = await model.createContext({ contextSize: 128, threads: 1, kvCacheType: "f32", flashAttention: "off" });
    using session = exactContext.createSession();
    await session.prompt(prompt);
    const expected = await session.generate({ temperature: 0, maxTokens: MAX_TOKENS }).collect();
    const exact = ["--kv-cache-type", "f32", "--flash-attn", "off", "--no-echo"];
    expect(await cli("-p", prompt, ...exact, "-md", fixturePath("gpt2-tiny-f16"), "--draft-max", "4")).toBe(`${expected.text}\n`);
    expect(await cli("-p", prompt, ...exact, "--spec-draft-model", modelPath, "--draft-p-min", "0.1")).toBe(`${expected.text}\n`);
    const failed = await cli("-p", prompt, "--no-echo", "-md", fixturePath("llama-tiny-f32")).then(
      () => undefined,
      (err: { code: number; stderr: string }) => err,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toMatch(/cannot draft for this model: its tokenizer type differs.*\[ERR_INVALID_ARGUMENT\]/);
  });

  it("passes a non-ASCII prompt through intact, and --no-echo leaves it out", async () => {
    const prompt = "Grüße aus 東京 🙂:";
    const expected = await apiGenerate(prompt);
    expect(await cli("-p", prompt)).toBe(`${prompt}${expected.text}\n`);
    expect(await cli("-p", prompt, "--no-echo")).toBe(`${expected.text}\n`);
  });

  it("streams sampled text whose characters are split across tokens, as the API does", async () => {
    // Sample from the whole vocabulary until a seed gives tokens that are partial UTF-8
    // characters on their own (GPT-2 has a few hundred); the CLI must print the same text.
    const prompt = "Random:";
    const sampling = { temperature: 1, topK: 0, topP: 1, minP: 0 };
    let found: { seed: number; text: string } | undefined;
    for (let seed = 1; seed <= 200 && !found; seed++) {
      using session = context.createSession();
      await session.prompt(prompt);
      const r = await session.generate({ ...sampling, seed, maxTokens: MAX_TOKENS }).collect();
      const partial = r.tokens.filter((t) => utf8OrUndefined(model.tokenToBytes(t)) === undefined);
      if (partial.length >= 2 && /[^\x00-\x7f]/u.test(r.text)) found = { seed, text: r.text };
    }
    expect(found).toBeDefined();
    const { seed, text } = found!;
    const stdout = await cli("-p", prompt, "--temp", "1", "--top-k", "0", "--top-p", "1", "--min-p", "0", "--seed", String(seed));
    expect(stdout).toBe(`${prompt}${text}\n`);
  });

  it("stops where the API stops with the same --stop string", async () => {
    const prompt = "Once upon a time";
    const free = await apiGenerate(prompt);
    // A stop string (three ASCII letters) from the second half of the greedy output: both cut
    // before its first occurrence.
    const text = free.text;
    const stop = /[A-Za-z]{3}/.exec(text.slice(Math.floor(text.length / 2)))?.[0];
    expect(stop).toBeDefined();
    if (stop === undefined) return;
    const stopped = await apiGenerate(prompt, [stop]);
    expect(stopped.finishReason).toBe("stop");
    expect(stopped.text).toBe(text.slice(0, text.indexOf(stop)));
    expect(await cli("-p", prompt, "--stop", stop)).toBe(`${prompt}${stopped.text}\n`);
  });
});
