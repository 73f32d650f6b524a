/**
 * Lifecycle faults: objects disposed while native work runs, objects the garbage collector
 * finalizes without dispose(), processes that exit with live handles, and worker threads (the
 * addon keeps per-environment data) loading and generating at once and terminated mid-work.
 * Each either works or fails with a typed LlamaError; nothing crashes or hangs. The process-level
 * scenarios run in child processes (tests/helpers/fault-child.ts) so that a crash is seen as one.
 */
import { spawn } from "node:child_process";
import path from "node:path";

import { describe, expect, it } from "vitest";

import { AbortError, LlamaError, loadModel } from "../src/index.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";

const gpt2 = fixturePath("gpt2-tiny-f32");
const wide = fixturePath("gpt2-wide-f16");
const llama = fixturePath("llama-tiny-f32");

interface ChildOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  marks: string[];
  result: unknown;
  stderr: string;
  ms: number;
}

/** Runs one scenario of fault-child.ts; a child still running after `limitMs` is killed (a hang). */
function runChild(scenario: string, args: object, options: { limitMs?: number; nodeArgs?: string[] } = {}): Promise<ChildOutcome> {
  const limitMs = options.limitMs ?? 60_000;
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [...(options.nodeArgs ?? []), "--import", path.join(repoRoot, "tests/helpers/register-ts-cached.mjs"), path.join(repoRoot, "tests/helpers/fault-child.ts"), scenario, JSON.stringify(args)],
      { cwd: repoRoot, env: { ...process.env, LLAMA_NAPI_LOG_LEVEL: "none" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      const lines = stdout.split("\n");
      const marks = lines.filter((l) => l.startsWith("MARK ")).map((l) => l.slice(5));
      const resultLine = lines.find((l) => l.startsWith("RESULT "));
      resolve({ code, signal, marks, result: resultLine ? JSON.parse(resultLine.slice(7)) : undefined, stderr, ms: performance.now() - started });
    });
  });
}

function expectCleanExit(outcome: ChildOutcome, mark: string): void {
  const detail = `exit ${outcome.code} signal ${outcome.signal} after ${outcome.ms.toFixed(0)} ms\n${outcome.stderr}`;
  expect(outcome.signal, detail).toBeNull();
  expect(outcome.code, detail).toBe(0);
  expect(outcome.marks, detail).toContain(mark);
}

describe("disposing while native work runs", () => {
  it("model.dispose() while a context generates ends the generation with ERR_DISPOSED", async () => {
    const model = await loadModel(gpt2);
    const context = await model.createContext({ contextSize: 128, threads: 1 });
    const session = context.createSession();
    await session.prompt("Once upon a time");
    const seen: number[] = [];
    const run = (async () => {
      for await (const { token } of session.generate({ temperature: 0, maxTokens: 100 })) {
        seen.push(token);
        if (seen.length === 3) model.dispose();
      }
    })();
    await expect(run).rejects.toMatchObject({ code: "ERR_DISPOSED" });
    expect(context.disposed && session.disposed).toBe(true);
    expect(() => session.tokens).toThrow(expect.objectContaining({ code: "ERR_DISPOSED" }));
    expect(() => model.tokenize("x")).toThrow(LlamaError);
  });

  it("context.dispose() in the middle of a long prompt's decode returns quickly; the prompt rejects with ERR_DISPOSED", async () => {
    using model = await loadModel(wide);
    const context = await model.createContext({ contextSize: 1024, batchSize: 1024, threads: 2 });
    const session = context.createSession();
    const tokens = Array.from({ length: 1000 }, (_, i) => 100 + ((i * 37) % 5000));
    // How long the whole decode takes, to know that the dispose below lands inside it.
    {
      using probe = await model.createContext({ contextSize: 1024, batchSize: 1024, threads: 2 });
      using s = probe.createSession();
      const t0 = performance.now();
      await s.prompt(tokens);
      const full = performance.now() - t0;
      expect(full).toBeGreaterThan(60);
    }
    const pending = session.prompt(tokens);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const t0 = performance.now();
    context.dispose();
    const disposeMs = performance.now() - t0;
    await expect(pending).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_(DISPOSED|ABORTED)$/) });
    // The decode was stopped through llama.cpp's abort callback, not waited for.
    expect(disposeMs).toBeLessThan(500);
  });

  it("session.dispose() during a prompt, a fork and a state save leaves the context usable", async () => {
    using model = await loadModel(gpt2);
    using context = await model.createContext({ contextSize: 128, sequences: 3, threads: 1 });
    const a = context.createSession();
    await a.prompt("Hello there, how are you today?");
    const ops = [a.prompt([1, 2, 3, 4, 5, 6, 7, 8], { append: true }), a.fork(), a.saveState()];
    a.dispose();
    const outcomes = await Promise.allSettled(ops);
    for (const o of outcomes) {
      if (o.status === "rejected") expect(o.reason).toMatchObject({ code: expect.stringMatching(/^ERR_(DISPOSED|ABORTED)$/) });
      else if (o.value && typeof o.value === "object" && "dispose" in o.value) (o.value as { dispose(): void }).dispose();
    }
    expect(context.freeSequences).toBe(3);
    using b = context.createSession();
    await b.prompt("Still works");
    expect((await b.generate({ temperature: 0, maxTokens: 3 }).collect()).tokens).toHaveLength(3);
  });

  it("a generation stopped by its AbortSignal leaves the session idle at once (no ERR_BUSY)", async () => {
    using model = await loadModel(gpt2);
    using context = await model.createContext({ contextSize: 128, threads: 1 });
    using session = context.createSession();
    for (let round = 0; round < 5; round++) {
      await session.prompt("The quick brown fox");
      const controller = new AbortController();
      let n = 0;
      const run = (async () => {
        for await (const _ of session.generate({ temperature: 0, maxTokens: 60, signal: controller.signal })) {
          if (++n === 2) controller.abort();
        }
      })();
      await expect(run).rejects.toBeInstanceOf(AbortError);
      // Synchronous calls right after the AbortError: the native loop has already ended.
      expect(session.length).toBeGreaterThan(4);
      session.rewind(1);
    }
  });
});

describe("process exit and garbage collection", () => {
  it("process.exit() in the middle of a generation exits cleanly", async () => {
    expectCleanExit(await runChild("exit-mid-generation", { model: gpt2 }), "exiting");
  });

  it("process.exit() in the middle of a long decode exits cleanly", async () => {
    expectCleanExit(await runChild("exit-mid-decode", { model: gpt2, wide }), "exiting");
  });

  it("process.exit() in the middle of a model load exits cleanly", async () => {
    expectCleanExit(await runChild("exit-mid-load", { model: gpt2, wide }), "exiting");
  });

  it("returning from main while a generation is paused (its consumer stopped reading) exits, without dispose", async () => {
    expectCleanExit(await runChild("return-while-paused", { model: llama }, { limitMs: 120_000 }), "returning");
  });

  it("returning from main with live models, contexts and sessions exits cleanly", async () => {
    expectCleanExit(await runChild("return-with-live-handles", { model: gpt2 }), "returning");
  });

  it("objects dropped without dispose() are finalized by the GC and their memory returns", async () => {
    const rounds = 8;
    const outcome = await runChild("gc-finalize", { model: gpt2, rounds }, { nodeArgs: ["--expose-gc"], limitMs: 120_000 });
    expect(outcome.signal, outcome.stderr).toBeNull();
    expect(outcome.code, outcome.stderr).toBe(0);
    const { rss, external } = outcome.result as { rss: number[]; external: number[] };
    expect(rss).toHaveLength(rounds);
    // Each round maps a 15 MB model and allocates a context; were they never freed, RSS would
    // grow by that much per round. After the allocator warms up (the first rounds) it stays flat.
    const warm = rss[3];
    const last = rss[rounds - 1];
    console.log(`gc-finalize: RSS ${rss.map((r) => (r / 2 ** 20).toFixed(0)).join(" ")} MB; external ${external.map((e) => (e / 2 ** 20).toFixed(1)).join(" ")} MB`);
    // (Not under ASan, whose allocator quarantines freed memory.)
    if (process.env.LLAMA_NAPI_SANITIZER === undefined) expect(last - warm).toBeLessThan(0.1 * warm);
    // The finalizers took back what each model (13 MB) and context reported to V8.
    expect(Math.abs(external[rounds - 1] - external[0])).toBeLessThan(2 ** 20);
    expect(Math.max(...external)).toBeLessThan(13e6);
  });
});

describe("worker threads", () => {
  it("several workers load and generate at once, agree with the main thread, and can be terminated mid-load, mid-decode and mid-generation", async () => {
    const outcome = await runChild("workers", { model: gpt2, wide, workers: 3, tokens: 8 }, { limitMs: 180_000 });
    expect(outcome.signal, outcome.stderr).toBeNull();
    expect(outcome.code, outcome.stderr).toBe(0);
    const { outputs, main, terminated } = outcome.result as { outputs: number[][]; main: number[]; terminated: string[] };
    expect(main).toHaveLength(8);
    expect(outputs).toHaveLength(3);
    for (const tokens of outputs) expect(tokens).toEqual(main);
    // worker.terminate() resolves with exit code 1.
    expect(terminated).toEqual(["load:1", "decode:1", "generate-forever:1"]);
  });
});
