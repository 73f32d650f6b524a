/**
 * The context option `batchWindow`: after several sessions were decoded together, an idle context
 * that gets one prompt waits (up to the window, and while prompts keep coming within a fifth of
 * it) for as many prompts as it decoded sessions, so that they are decoded in one batch instead
 * of the first alone. The oracle is the decode count
 * (`context.stats()`): four generations of N tokens in step take N decodes; with the first
 * prompt decoded alone they take more. And the generated tokens are those of each session alone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, type Context, type Model, type Session } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";

const N = 6;
const GREEDY = { temperature: 0, maxTokens: N } as const;
const PROMPTS = ["The pizza came out of the oven and", "Once upon a time, in a village", "The quick brown fox jumps", "In 1492 the ships left"];

let model: Model;
beforeAll(async () => {
  model = await loadModel(fixturePath("gpt2-tiny-f32"));
});
afterAll(() => model?.dispose());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Four generations submitted together, long enough to share batches: the context then expects four. */
async function together(context: Context, sessions: Session[]) {
  await Promise.all(sessions.map((s, i) => s.generate({ temperature: 0, maxTokens: 24, prompt: PROMPTS[i] }).collect()));
  expect(context.stats().maxSequencesPerBatch).toBe(4);
  await sleep(50);
}

/**
 * Generates from `prompts` on `sessions`: the first at once, the others `lagMs` later (all
 * together, or `spread`: one every `lagMs`). Resolves to the decodes it took and the tokens.
 */
async function burst(context: Context, sessions: Session[], prompts: string[], lagMs: number, spread = false) {
  const before = context.stats().decodeCalls;
  const runs = [sessions[0]!.generate({ ...GREEDY, prompt: prompts[0] }).collect()];
  if (!spread && lagMs > 0) await sleep(lagMs);
  for (const [i, s] of sessions.slice(1).entries()) {
    if (spread) await sleep(lagMs);
    runs.push(s.generate({ ...GREEDY, prompt: prompts[i + 1] }).collect());
  }
  const results = await Promise.all(runs);
  return { decodes: context.stats().decodeCalls - before, tokens: results.map((r) => [...r.tokens]) };
}

async function withContext(batchWindow: number, run: (context: Context, sessions: Session[]) => Promise<void>) {
  const context = await model.createContext({ contextSize: 64, threads: 1, sequences: 4, batchWindow });
  const sessions = PROMPTS.map(() => context.createSession());
  try {
    await run(context, sessions);
  } finally {
    context.dispose();
  }
}

describe("batchWindow", () => {
  it("decodes prompts that arrive within the window together with the first, after sessions were decoded together", async () => {
    // Each alone, for the oracle.
    const alone: number[][] = [];
    await withContext(0, async (_context, sessions) => {
      for (const [i, s] of sessions.entries()) alone.push([...(await s.generate({ ...GREEDY, prompt: PROMPTS[i] }).collect()).tokens]);
    });

    await withContext(1000, async (context, sessions) => {
      await together(context, sessions);
      // The first prompt now waits for the three others, sent 60 ms later (within a fifth of the
      // window, 200 ms): N decodes in all.
      const gathered = await burst(context, sessions, PROMPTS, 60);
      expect(gathered.decodes).toBe(N);
      expect(gathered.tokens).toEqual(alone);
      await sleep(50);
      // One every 80 ms: each arrives within 200 ms of the one before, so the wait goes on past
      // 200 ms (240 in all), until the fourth.
      const spread = await burst(context, sessions, PROMPTS, 80, true);
      expect(spread.decodes).toBe(N);
      expect(spread.tokens).toEqual(alone);
    });
  });

  it("without a window, the first prompt of a burst is decoded alone (the control)", async () => {
    await withContext(0, async (context, sessions) => {
      await together(context, sessions);
      const staggered = await burst(context, sessions, PROMPTS, 60);
      expect(staggered.decodes).toBeGreaterThan(N);
    });
  });

  it("a lone session waits a fifth of the window once, then not again; prompt() waits too", async () => {
    await withContext(1000, async (context, sessions) => {
      await together(context, sessions);
      const time = async (f: () => Promise<unknown>) => {
        const t0 = performance.now();
        await f();
        return performance.now() - t0;
      };
      // Expected four prompts, got one: it starts once none has come for 200 ms.
      const first = await time(() => sessions[0]!.prompt(PROMPTS[1]));
      expect(first).toBeGreaterThanOrEqual(190);
      expect(first).toBeLessThan(900);
      await sleep(50);
      // The context last decoded one session: no waiting now.
      const second = await time(() => sessions[0]!.prompt(PROMPTS[2]));
      expect(second).toBeLessThan(150);
    });
  });

  it("is an integer of milliseconds from 0 to 1000", async () => {
    for (const bad of [-1, 1001, 2.5, "20"]) {
      await expect(model.createContext({ contextSize: 64, threads: 1, batchWindow: bad as never })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT", message: expect.stringContaining("batchWindow") });
    }
  });
});
