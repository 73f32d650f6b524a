/**
 * A real pretrained model: stories260K (Llama architecture with GQA, trained on TinyStories),
 * from ../shared/models. Greedy generation must reproduce what raw llama.cpp prints.
 */
import fs from "node:fs";

import { describe, expect, it } from "vitest";

import { loadModel } from "../src/index.js";
import { storiesModelPath } from "./helpers/fixtures.js";

const present = fs.existsSync(storiesModelPath);
if (!present) console.warn(`[stories] skipped: ${storiesModelPath} is absent`);

describe.skipIf(!present)("stories260K (real pretrained model)", () => {
  it("greedy generation from 'Once upon a time' reproduces raw llama.cpp's text", async () => {
    // The text the model README records for llama-completion (2 threads, greedy, BOS added),
    // with the echoed prompt removed.
    const expected =
      " Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.";
    using model = await loadModel(storiesModelPath);
    expect(model.info).toMatchObject({ architecture: "llama", vocabSize: 512, layers: 5, heads: 8, headsKv: 4 });
    using context = await model.createContext({ contextSize: 512, threads: 2 });
    using session = context.createSession();
    await session.prompt("Once upon a time");
    expect(session.tokens[0]).toBe(model.specialTokens.bos);
    const { text, tokens } = await session.generate({ maxTokens: 40, temperature: 0 }).collect();
    expect(tokens).toHaveLength(40);
    expect(" Once upon a time" + text).toBe(expected);
  });
});
