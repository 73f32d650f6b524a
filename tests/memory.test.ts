/**
 * Memory: native memory is reported to V8 (Napi::MemoryManagement::AdjustExternalMemory: a model
 * its weights, a context its KV cache and compute buffers), and load → generate → dispose cycles
 * do not grow the process: RSS after the loop stays within 10% of RSS after the first cycle
 * (each measured after a full GC). 20 cycles in npm test, 200 in npm run test:stress.
 */
import { spawn } from "node:child_process";
import path from "node:path";

import { describe, expect, it } from "vitest";

import { loadModel } from "../src/index.js";
import { binding } from "../src/native.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";

const LONG = process.env.LLAMA_NAPI_STRESS === "1";
// Under npm run test:asan, ASan's allocator (and its quarantine of freed memory) replaces the one
// whose behaviour is measured: 5 cycles still run (LeakSanitizer checks them), RSS is not.
const SANITIZED = process.env.LLAMA_NAPI_SANITIZER !== undefined;
const CYCLES = Number(process.env.MEMORY_CYCLES ?? (LONG ? 200 : SANITIZED ? 5 : 20));

describe("external memory reported to V8", () => {
  // process.memoryUsage().external counts ArrayBuffers only on Node 20 (V8 11): what addons report
  // through AdjustExternalMemory is read from V8's own counter (the addon's externalMemory()).
  it("rises by the model's size on load and by the context's buffers on createContext, and falls back on dispose", async () => {
    const external = () => binding().externalMemory();
    const base = external();
    const model = await loadModel(fixturePath("gpt2-tiny-f32"));
    const afterLoad = external();
    const size = model.info.sizeBytes;
    expect(size).toBeGreaterThan(10_000_000);
    // Other allocations (metadata strings, buffers) move the count by a little too.
    expect(Math.abs(afterLoad - base - size)).toBeLessThan(0.05 * size);

    const context = await model.createContext({ contextSize: 128, sequences: 4, threads: 1, kvCacheType: "f32" });
    const afterContext = external();
    // At least the KV cache: 512 cells × 2 layers × (K + V) × 64 floats.
    const kvBytes = 512 * 2 * 2 * 64 * 4;
    expect(afterContext - afterLoad).toBeGreaterThanOrEqual(kvBytes);
    const session = context.createSession();
    await session.prompt("Hello");
    session.dispose();
    context.dispose();
    const afterContextDispose = external();
    expect(Math.abs(afterContextDispose - afterLoad)).toBeLessThan(kvBytes / 2);
    model.dispose();
    expect(Math.abs(external() - base)).toBeLessThan(0.05 * size);
  });
});

describe(`load → generate → dispose × ${CYCLES}`, () => {
  it("RSS after the loop is within 10% of RSS after the first cycle", { timeout: 60_000 + CYCLES * 2_000 }, async () => {
    const child = `
      import { loadModel } from ${JSON.stringify(path.join(repoRoot, "src/index.ts"))};
      import { binding } from ${JSON.stringify(path.join(repoRoot, "src/native.ts"))};
      const externalMemory = () => binding().externalMemory();
      const gc = globalThis.gc;
      const settle = async () => {
        for (let i = 0; i < 4; i++) {
          gc();
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        return process.memoryUsage();
      };
      const rss = [];
      const external = [];
      for (let cycle = 0; cycle < ${CYCLES}; cycle++) {
        const model = await loadModel(${JSON.stringify(fixturePath("gpt2-tiny-f32"))});
        const context = await model.createContext({ contextSize: 128, sequences: 2, threads: 1 });
        const a = context.createSession();
        await a.prompt("Once upon a time, in a land far away");
        const b = await a.fork();
        await Promise.all([a.generate({ temperature: 0, maxTokens: 16 }).collect(), b.generate({ temperature: 0.8, seed: cycle, maxTokens: 16 }).collect()]);
        await a.saveState();
        model.dispose();
        const usage = await settle();
        rss.push(usage.rss);
        external.push(externalMemory());
      }
      console.log("RESULT " + JSON.stringify({ rss, external }));
    `;
    const { code, signal, stdout, stderr } = await new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((resolve, reject) => {
      const proc = spawn(process.execPath, ["--expose-gc", "--import", path.join(repoRoot, "tests/helpers/register-ts-cached.mjs"), "--input-type=module", "-e", child], {
        cwd: repoRoot,
        env: { ...process.env, LLAMA_NAPI_LOG_LEVEL: "none" },
      });
      let out = "";
      let err = "";
      proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
      proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
      proc.on("error", reject);
      proc.on("exit", (c, s) => resolve({ code: c, signal: s, stdout: out, stderr: err }));
    });
    expect(signal, stderr).toBeNull();
    expect(code, stderr).toBe(0);
    const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
    const { rss, external } = JSON.parse(line!.slice(7)) as { rss: number[]; external: number[] };
    expect(rss).toHaveLength(CYCLES);
    const first = rss[0];
    const last = rss[CYCLES - 1];
    const drift = (last - first) / first;
    const mb = (b: number) => (b / 2 ** 20).toFixed(1);
    console.log(
      `memory: ${CYCLES} cycles: RSS after the first ${mb(first)} MB, after the last ${mb(last)} MB (drift ${(drift * 100).toFixed(1)}%), ` +
        `max ${mb(Math.max(...rss))} MB; external ${mb(external[0])} → ${mb(external[CYCLES - 1])} MB`,
    );
    if (!SANITIZED) expect(drift).toBeLessThan(0.1);
    // Everything reported to V8 was given back each time.
    expect(Math.abs(external[CYCLES - 1] - external[0])).toBeLessThan(2 ** 20);
  });
});
