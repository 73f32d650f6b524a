/**
 * The server with a draft model (`speculative`, llama-server's `--model-draft`): every completion
 * is drafted for, the replies are the plain greedy ones (oracle: the library's own generation on
 * a context without a draft), and `timings` carry llama-server's draft_n and draft_n_accepted.
 * A draft model with another vocabulary stops the server from starting.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, startServer, type Model, type RunningServer } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";

const EXACT = { kvCacheType: "f32", flashAttention: "off", threads: 2 } as const;
const PROMPT = "Hello, my name is";

let server: RunningServer;
let model: Model;

beforeAll(async () => {
  model = await loadModel(fixturePath("gpt2-tiny-f32"));
  // The draft is the served model itself: every greedy draft is right.
  server = await startServer({ model: fixturePath("gpt2-tiny-f32"), port: 0, parallel: 2, contextSize: 256, ...EXACT, log: () => {}, speculative: { draft: fixturePath("gpt2-tiny-f32"), maxDraft: 4 } });
});
afterAll(async () => {
  await server?.close();
  model?.dispose();
});

async function plain(maxTokens: number): Promise<string> {
  using context = await model.createContext({ contextSize: 128, ...EXACT });
  using session = context.createSession();
  await session.prompt(PROMPT);
  return (await session.generate({ maxTokens, temperature: 0 }).collect()).text;
}

describe("server with a draft model", () => {
  it("replies with the plain greedy text and reports the drafts in timings", async () => {
    const res = await fetch(`${server.url}/v1/completions`, { method: "POST", body: JSON.stringify({ prompt: PROMPT, max_tokens: 30, temperature: 0 }) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { choices: Array<{ text: string }>; timings: Record<string, number> };
    expect(body.choices[0]!.text).toBe(await plain(30));
    expect(body.timings.draft_n).toBeGreaterThan(10);
    expect(body.timings.draft_n_accepted).toBe(body.timings.draft_n);
  });

  it("streams the same text, with the draft counts in the last chunk's timings", async () => {
    const res = await fetch(`${server.url}/v1/completions`, { method: "POST", body: JSON.stringify({ prompt: PROMPT, max_tokens: 20, temperature: 0, stream: true }) });
    const events = (await res.text()).split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)) as { choices: Array<{ text: string }>; timings?: Record<string, number> });
    expect(events.map((e) => e.choices[0]?.text ?? "").join("")).toBe(await plain(20));
    const timings = events.at(-1)!.timings!;
    expect(timings.draft_n).toBeGreaterThan(5);
    expect(timings.draft_n_accepted).toBe(timings.draft_n);
  });

  it("does not start with a draft model whose vocabulary differs", async () => {
    await expect(startServer({ model: fixturePath("gpt2-tiny-f32"), port: 0, log: () => {}, speculative: { draft: fixturePath("llama-tiny-f32") } })).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: expect.stringMatching(/cannot draft for this model: its tokenizer type differs/),
    });
    await expect(startServer({ model: fixturePath("gpt2-tiny-f32"), port: 0, log: () => {}, speculative: { draft: fixturePath("gpt2-tiny-f16"), maxDraft: 100 } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });
});
