/**
 * The release set: one main package without binaries and one package per platform
 * (`@llama-napi/linux-x64`, `linux-arm64`, `win32-x64`, ..., and `linux-x64-cuda` for the CUDA
 * module), made by scripts/pack-platforms.mjs. scripts/test-pack-platforms.mjs packs the set,
 * serves the @llama-napi scope from a registry on 127.0.0.1 and installs the main tarball for
 * foreign platforms with npm's --os/--cpu/--libc flags (only the fitting package's files arrive)
 * and for this one with a PATH that holds only `node` (the addon loads from the platform package
 * and generates; without it the loader names the package to install).
 *
 * Platforms not built in this checkout (no prebuilds/<tuple>/) are FAKE folders there (a dummy
 * addon and library), enough for the layout checks and never loaded; so is the CUDA module
 * unless a real one was built. About 1.5 to 2 minutes here (three npm installs and an npm ci,
 * from npm's cache); LLAMA_NAPI_TEST_PACK=0 skips it (e.g. offline).
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";

import { describe, expect, it } from "vitest";

import { platformPackageName } from "../src/native.js";
import { repoRoot } from "./helpers/fixtures.js";

const run = promisify(execFile);

describe("platformPackageName", () => {
  it("names the package npm installs for a platform", () => {
    expect(platformPackageName("linux", "x64", false)).toBe("@llama-napi/linux-x64");
    expect(platformPackageName("linux", "arm64", true)).toBe("@llama-napi/linuxmusl-arm64");
    expect(platformPackageName("win32", "x64")).toBe("@llama-napi/win32-x64");
    expect(platformPackageName("darwin", "arm64", true)).toBe("@llama-napi/darwin-arm64");
    expect(platformPackageName()).toMatch(new RegExp(`^@llama-napi/${process.platform}(musl)?-${process.arch}$`));
  });
});

describe.skipIf(process.env.LLAMA_NAPI_TEST_PACK === "0")("npm run pack:platforms + install per platform", () => {
  it("installs only the fitting platform package, for foreign platforms and for this one", async () => {
    const script = path.join(repoRoot, "scripts", "test-pack-platforms.mjs");
    let output: string;
    try {
      const { stdout, stderr } = await run(process.execPath, [script], { cwd: repoRoot, maxBuffer: 64 * 1024 * 1024 });
      output = stdout + stderr;
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`test-pack-platforms failed:\n${e.stdout ?? ""}\n${e.stderr ?? e.message}`);
    }
    expect(output).toMatch(/ok +--os=linux --cpu=arm64 --libc=glibc: only @llama-napi\/linux-arm64 arrives/);
    expect(output).toMatch(/ok +--os=win32 --cpu=x64: only @llama-napi\/win32-x64 arrives/);
    expect(output).toMatch(/ok +the addon comes from @llama-napi\//);
    expect(output).toMatch(/ok +generate ran/);
    expect(output).toMatch(/ok +without @llama-napi\/\S+ the loader's ERR_NATIVE_LOAD says `npm install @llama-napi\//);
    expect(output).not.toMatch(/FAIL/);
    expect(output).toMatch(/all checks passed/);
  }, 420_000);
});
