#!/usr/bin/env node
/**
 * npm run test:stress [-- vitest args]: the long versions of the reliability tests
 * (LLAMA_NAPI_STRESS=1): the concurrency stress for STRESS_SECONDS (default 120), 200
 * load/generate/dispose cycles (MEMORY_CYCLES), and the slow input-limit cases.
 *   STRESS_SECONDS=600 STRESS_SEED=7 npm run test:stress
 */
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const files = ["tests/stress.test.ts", "tests/memory.test.ts", "tests/lifecycle-faults.test.ts", "tests/input-limits.test.ts", "tests/files.test.ts"];
const args = process.argv.slice(2);
const r = spawnSync(process.execPath, [path.join(root, "node_modules", "vitest", "vitest.mjs"), "run", ...(args.some((a) => a.endsWith(".ts")) ? [] : files), ...args], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, LLAMA_NAPI_STRESS: "1" },
});
process.exit(r.status ?? 1);
