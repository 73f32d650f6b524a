/**
 * The README's isolation example (examples/isolated-generate.mjs): a model run in a child
 * process whose death the parent survives. The abort is simulated (tests/helpers/abort-in-child.mjs
 * calls process.abort() in the child when LLAMA_NAPI_TEST_ABORT_CHILD=1): after the checks of
 * issue 25 no known model input aborts the process any more, and the point here is the parent's
 * side, which is the same whatever ends the child.
 */
import path from "node:path";
import fs from "node:fs";
import os from "node:os";

import { afterAll, describe, expect, it } from "vitest";

import { GgmlType } from "../src/index.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";
import { writeRetyped } from "./helpers/uncomputable.js";

interface Answer {
  ok: boolean;
  text?: string;
  code?: string;
  signal?: string | null;
  message?: string;
}
type GenerateIsolated = (model: string, prompt: string, options?: { maxTokens?: number; timeoutMs?: number; execArgv?: string[]; env?: NodeJS.ProcessEnv }) => Promise<Answer>;

const example = path.join(repoRoot, "examples", "isolated-generate.mjs");
const abortHelper = path.join(repoRoot, "tests", "helpers", "abort-in-child.mjs");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-isolation-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("examples/isolated-generate.mjs", () => {
  it("generates in a child, survives the child aborting, and reports refusals as LlamaError codes", { timeout: 120_000 }, async () => {
    const { generateIsolated } = (await import(example)) as { generateIsolated: GenerateIsolated };
    const model = fixturePath("gpt2-tiny-f32");
    const env = { ...process.env, LLAMA_NAPI_LOG_LEVEL: "none" };

    const first = await generateIsolated(model, "Hello world", { maxTokens: 4, env });
    expect(first.ok, first.message).toBe(true);
    expect(typeof first.text).toBe("string");

    // The child dies with SIGABRT, as on a GGML_ASSERT; the parent gets an answer, not a crash.
    const aborted = await generateIsolated(model, "Hello world", {
      maxTokens: 4,
      execArgv: ["--import", abortHelper],
      env: { ...env, LLAMA_NAPI_TEST_ABORT_CHILD: "1" },
    });
    expect(aborted).toMatchObject({ ok: false, code: "ERR_CHILD_DIED", signal: "SIGABRT" });

    // A model the checks refuse comes back as its error code, from a child that exited normally.
    const refused = path.join(tmp, "f16-norm.gguf");
    await writeRetyped(model, refused, { "blk.0.attn_norm.weight": GgmlType.F16 });
    const answer = await generateIsolated(refused, "Hello world", { maxTokens: 4, env });
    expect(answer).toMatchObject({ ok: false, code: "ERR_UNSUPPORTED" });
    expect(answer.message).toContain("blk.0.attn_norm.weight");

    // And the parent carries on: the same greedy text as the first run.
    const again = await generateIsolated(model, "Hello world", { maxTokens: 4, env });
    expect(again).toEqual(first);
  });
});
