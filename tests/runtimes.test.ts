/**
 * The package under Bun and Deno: tests/helpers/runtime-smoke.mjs runs the core API (systemInfo,
 * loadModel, tokenize, prompt, a few greedy tokens, the error codes for a missing file and an
 * unknown option, dispose, ERR_DISPOSED) under Node and under each runtime, on the same model
 * and the same addon, and the runtime must give what Node gives. Then the two ways a program
 * ends with native work about: objects never disposed, and process.exit() during a decode.
 *
 * Where the runtimes come from (the first that answers `--version`):
 *   - LLAMA_NAPI_BUN / LLAMA_NAPI_DENO: a binary (set but broken fails the test, not skips it);
 *   - the folder .ci/run installs them into from the npm registry (`bun`, `deno`, pinned):
 *     LLAMA_NAPI_RUNTIMES_DIR, by default ~/.cache/llama-napi-runtimes;
 *   - PATH.
 * Absent, each test skips and says how to get it.
 *
 * Deno runs with --allow-read --allow-env --allow-ffi (the least it needs: ffi to load the .node
 * file, env for the addon loader's variables), the set the README gives.
 */
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { beforeAll, describe, expect, it } from "vitest";

import { fixturePath, repoRoot, storiesModelPath } from "./helpers/fixtures.js";

const SCRIPT = path.join(repoRoot, "tests", "helpers", "runtime-smoke.mjs");
const RUNTIMES_DIR = process.env.LLAMA_NAPI_RUNTIMES_DIR || path.join(os.homedir(), ".cache", "llama-napi-runtimes");
const DENO_FLAGS = ["run", "--no-prompt", "--allow-read", "--allow-env", "--allow-ffi"];

type RuntimeName = "bun" | "deno";

interface Runtime {
  name: RuntimeName;
  /** The binary, or undefined when none was found (then `why` says so). */
  bin?: string;
  version?: string;
  why?: string;
  /** The binary named by LLAMA_NAPI_BUN / LLAMA_NAPI_DENO does not run. */
  broken?: string;
}

/** The binaries the npm packages put in RUNTIMES_DIR (the meta package's after its postinstall; the platform package's). */
function cachedCandidates(name: RuntimeName): string[] {
  const modules = path.join(RUNTIMES_DIR, "node_modules");
  const exe = process.platform === "win32" ? ".exe" : "";
  if (name === "bun") {
    const arch = process.arch === "arm64" ? "aarch64" : process.arch;
    return [
      path.join(modules, ".bin", `bun${exe}`),
      path.join(modules, "bun", "bin", "bun.exe"),
      // Without AVX2 .ci/run adds the baseline build.
      path.join(modules, "@oven", `bun-${process.platform}-${arch}-baseline`, "bin", `bun${exe}`),
      path.join(modules, "@oven", `bun-${process.platform}-${arch}`, "bin", `bun${exe}`),
    ];
  }
  return [
    path.join(modules, ".bin", `deno${exe}`),
    path.join(modules, "deno", `deno${exe}`),
    path.join(modules, "@deno", `${process.platform}-${process.arch}-glibc`, `deno${exe}`),
  ];
}

function onPath(name: string): string[] {
  return (process.env.PATH ?? "").split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, name));
}

/** The version a binary prints, or undefined when it does not run (missing, not executable, SIGILL on an older CPU). */
function versionOf(bin: string): string | undefined {
  if (!fs.existsSync(bin)) return undefined;
  const r = spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 30_000, env: runtimeEnv() });
  if (r.status !== 0) return undefined;
  const match = /(\d+\.\d+\.\d+\S*)/.exec(r.stdout);
  return match?.[1];
}

function findRuntime(name: RuntimeName): Runtime {
  const variable = name === "bun" ? "LLAMA_NAPI_BUN" : "LLAMA_NAPI_DENO";
  const chosen = process.env[variable];
  if (chosen) {
    const version = versionOf(chosen);
    return version ? { name, bin: chosen, version } : { name, broken: `${variable}=${chosen} does not run \`--version\`` };
  }
  for (const bin of [...cachedCandidates(name), ...onPath(name)]) {
    const version = versionOf(bin);
    if (version) return { name, bin, version };
  }
  return {
    name,
    why:
      `skipped: ${name} not found (looked for ${variable}, ${path.join(RUNTIMES_DIR, "node_modules")} and PATH); ` +
      `install it from npm with \`npm install --prefix ${RUNTIMES_DIR} ${name}\` (as .ci/run does) or set ${variable}=/path/to/${name}`,
  };
}

function runtimeEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1", NO_COLOR: "1", ...extra };
}

interface ErrorInfo {
  code: string | null;
  name: string | null;
  message: string;
}

interface SmokeResult {
  ok: boolean;
  runtime: string;
  version: string;
  napi: string | null;
  steps: string[];
  step?: string;
  error?: { code: string | null; message: string };
  binary?: string;
  cpuVariant?: string | null;
  architecture?: string;
  vocabSize?: number;
  promptTokens?: number[];
  detokenized?: string;
  sessionLength?: number;
  tokens?: number[];
  text?: string;
  errors?: { missingFile: ErrorInfo | null; unknownOption: ErrorInfo | null; isLlamaError: boolean };
  disposed?: boolean;
  afterDispose?: ErrorInfo | null;
  ms?: number;
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  result?: SmokeResult;
  ms: number;
}

/** Runs the smoke script under `runtime` (undefined: this Node). */
function smoke(runtime: Runtime | undefined, model: string, extraArgs: string[] = [], env: Record<string, string> = {}): Promise<Run> {
  const [cmd, args] =
    runtime === undefined
      ? [process.execPath, [SCRIPT, model, ...extraArgs]]
      : runtime.name === "bun"
        ? [runtime.bin!, [SCRIPT, model, ...extraArgs]]
        : [runtime.bin!, [...DENO_FLAGS, SCRIPT, model, ...extraArgs]];
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: repoRoot, env: runtimeEnv(env), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const last = stdout.trim().split("\n").at(-1) ?? "";
      let result: SmokeResult | undefined;
      try {
        result = JSON.parse(last) as SmokeResult;
      } catch {
        result = undefined;
      }
      resolve({ code, signal, stdout, stderr, result, ms: Math.round(performance.now() - started) });
    });
  });
}

function describeRun(run: Run): string {
  return `exit ${run.code}${run.signal ? ` (${run.signal})` : ""}\nstdout: ${run.stdout.slice(-2000)}\nstderr: ${run.stderr.slice(-2000)}`;
}

/** The fields that must be the same under every runtime. */
function comparable(r: SmokeResult) {
  return {
    ok: r.ok,
    steps: r.steps,
    binary: r.binary,
    cpuVariant: r.cpuVariant,
    architecture: r.architecture,
    vocabSize: r.vocabSize,
    promptTokens: r.promptTokens,
    detokenized: r.detokenized,
    sessionLength: r.sessionLength,
    tokens: r.tokens,
    text: r.text,
    errors: {
      missingFile: r.errors?.missingFile?.code,
      missingFileClass: r.errors?.missingFile?.name,
      unknownOption: r.errors?.unknownOption?.code,
      unknownOptionMessage: r.errors?.unknownOption?.message,
      isLlamaError: r.errors?.isLlamaError,
    },
    disposed: r.disposed,
    afterDispose: r.afterDispose?.code,
  };
}

const MODELS: Array<{ name: string; file: () => string; present: () => boolean }> = [
  { name: "gpt2-tiny-f32", file: () => fixturePath("gpt2-tiny-f32"), present: () => true },
  { name: "stories260K", file: () => storiesModelPath, present: () => fs.existsSync(storiesModelPath) },
];

/** The prebuilt addon (`npm run prebuilds`), whose CPU variant modules are chosen at run time; undefined when not built. */
function prebuiltAddon(): string | undefined {
  const dir = path.join(repoRoot, "prebuilds", `${process.platform}-${process.arch}`);
  if (!fs.existsSync(dir)) return undefined;
  const addon = fs.readdirSync(dir).find((f) => f.endsWith(".node"));
  return addon ? path.join(dir, addon) : undefined;
}

const RUNTIMES: Runtime[] = [findRuntime("bun"), findRuntime("deno")];
for (const runtime of RUNTIMES) {
  if (runtime.bin) console.log(`runtimes.test.ts: ${runtime.name} ${runtime.version} at ${runtime.bin}`);
  else if (runtime.why) console.warn(`runtimes.test.ts: ${runtime.why}`);
}

describe("the core API under Node, Bun and Deno", () => {
  const reference = new Map<string, SmokeResult>();
  beforeAll(async () => {
    for (const model of MODELS) {
      if (!model.present()) continue;
      const run = await smoke(undefined, model.file());
      if (run.code === 0 && run.result?.ok) reference.set(model.name, run.result);
    }
  }, 120_000);

  it.for(MODELS.map((m) => m.name))("node (the reference), %s: runs every step and gives the expected error codes", (name, ctx) => {
    const model = MODELS.find((m) => m.name === name)!;
    if (!model.present()) ctx.skip(`skipped: ${model.file()} is absent`);
    const r = reference.get(name);
    expect(r, "the Node run failed").toBeDefined();
    expect(r!.steps).toEqual(["systemInfo", "loadModel", "tokenize", "createContext", "prompt", "generate", "errors", "dispose"]);
    expect(r!.tokens).toHaveLength(8);
    expect(r!.errors).toMatchObject({ missingFile: { code: "ERR_FILE_NOT_FOUND" }, unknownOption: { code: "ERR_INVALID_ARGUMENT" }, isLlamaError: true });
    expect(r!.afterDispose?.code).toBe("ERR_DISPOSED");
    if (name === "stories260K") expect(r!.text).toBe(", there was a little girl");
  });

  for (const runtime of RUNTIMES) {
    describe(runtime.name, () => {
      const skipUnlessPresent = (ctx: { skip: (note?: string) => never }) => {
        if (runtime.broken) throw new Error(runtime.broken);
        if (!runtime.bin) ctx.skip(runtime.why);
      };

      it.for(MODELS.map((m) => m.name))("%s: loads, tokenizes, generates Node's greedy tokens, gives the same error codes, disposes", async (name, ctx) => {
        skipUnlessPresent(ctx);
        const model = MODELS.find((m) => m.name === name)!;
        if (!model.present()) ctx.skip(`skipped: ${model.file()} is absent`);
        const expected = reference.get(name);
        expect(expected, "the Node run failed").toBeDefined();
        const run = await smoke(runtime, model.file());
        expect(run.code, describeRun(run)).toBe(0);
        expect(run.result, describeRun(run)).toBeDefined();
        expect(run.result!.runtime).toBe(runtime.name);
        expect(run.result!.version).toBe(runtime.version);
        expect(comparable(run.result!)).toEqual(comparable(expected!));
      });

      it("ends cleanly with objects left undisposed, and on process.exit() during a decode", async (ctx) => {
        skipUnlessPresent(ctx);
        for (const mode of ["--keep", "--exit-busy"]) {
          // 1024 positions, slow enough that the decode thread is still running at exit.
          const run = await smoke(runtime, fixturePath("gpt2-wide-f16"), [mode]);
          expect(run.signal, `${mode}: ${describeRun(run)}`).toBeNull();
          expect(run.code, `${mode}: ${describeRun(run)}`).toBe(0);
          expect(run.result?.ok, `${mode}: ${describeRun(run)}`).toBe(true);
          expect(run.result!.steps.at(-1)).toBe(mode === "--keep" ? "errors" : "exit-busy");
        }
      });

      it("loads the prebuilt addon and picks the CPU variant Node picks", async (ctx) => {
        skipUnlessPresent(ctx);
        const addon = prebuiltAddon();
        if (!addon) ctx.skip("skipped: no prebuilt addon in prebuilds/ (npm run prebuilds)");
        const model = fixturePath("gpt2-tiny-f32");
        const env = { LLAMA_NAPI_BINARY: addon! };
        const [node, other] = [await smoke(undefined, model, [], env), await smoke(runtime, model, [], env)];
        expect(node.code, describeRun(node)).toBe(0);
        expect(other.code, describeRun(other)).toBe(0);
        expect(node.result!.binary).toBe(path.basename(addon!));
        expect(node.result!.cpuVariant).not.toBeNull();
        expect(node.result!.cpuVariant).not.toBe("native");
        expect(comparable(other.result!)).toEqual(comparable(node.result!));
      });
    });
  }
});
