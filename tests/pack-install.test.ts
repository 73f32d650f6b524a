/**
 * The package as users get it: scripts/test-pack-install.mjs packs this checkout, installs the
 * tarball into an empty project with a PATH that holds only `node` (no compiler, cmake, make or
 * shell) and generates text with the installed CLI and API; it also checks the loader's message
 * when no prebuild fits and that the shipped llama.cpp sources configure.
 *
 * It takes about 40 s here (npm pack, npm install from the registry's cache, two generations),
 * so it runs by default; LLAMA_NAPI_TEST_PACK=0 skips it (e.g. offline).
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";

import { describe, expect, it } from "vitest";

import { repoRoot } from "./helpers/fixtures.js";

const run = promisify(execFile);

describe.skipIf(process.env.LLAMA_NAPI_TEST_PACK === "0")("npm pack + install without a compiler", () => {
  it("installs from the tarball with no build step and generates", async () => {
    const script = path.join(repoRoot, "scripts", "test-pack-install.mjs");
    let output: string;
    try {
      const { stdout, stderr } = await run(process.execPath, [script], { cwd: repoRoot, maxBuffer: 64 * 1024 * 1024 });
      output = stdout + stderr;
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`test-pack-install failed:\n${e.stdout ?? ""}\n${e.stderr ?? e.message}`);
    }
    expect(output).toMatch(/ok +npm install of the tarball with no compiler, cmake or shell/);
    expect(output).toMatch(/ok +generate ran/);
    expect(output).toMatch(/ok +without a fitting prebuild the loader says to run `npx llama-napi build`/);
    expect(output).not.toMatch(/FAIL/);
    expect(output).toMatch(/all checks passed/);
  }, 180_000);
});
