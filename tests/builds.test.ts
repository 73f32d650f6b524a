/**
 * Builds and platforms: systemInfo()'s build fields, the `info` and `build` commands' plumbing,
 * gpuLayers falling back to the CPU, and, when prebuilds/ holds a prebuilt binary for this
 * platform (`npm run prebuilds`), runtime CPU dispatch: the variant chosen for this CPU, and on a
 * simulated older CPU (the newer variant modules removed from a copy of the folder) the next best
 * one, with the same greedy tokens and close logits.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LlamaError, loadModel, systemInfo } from "../src/index.js";
import { buildPlan } from "../src/cli/build.js";
import { formatInfo } from "../src/cli/info.js";
import { cpuVariantOf } from "../src/system.js";
import { ensureDist } from "./helpers/dist.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";
import { maxAbsDiff } from "./helpers/math.js";

const run = promisify(execFile);
const prebuildDir = path.join(repoRoot, "prebuilds", `${process.platform}-${process.arch}`);
const prebuiltAddon = fs.existsSync(prebuildDir) ? fs.readdirSync(prebuildDir).find((f) => f.endsWith(".node")) : undefined;

describe("cpuVariantOf", () => {
  it("names the variant from the module file", () => {
    expect(cpuVariantOf("libggml-cpu-haswell.so")).toBe("haswell");
    expect(cpuVariantOf("libggml-cpu-zen4.so")).toBe("zen4");
    expect(cpuVariantOf("ggml-cpu-skylakex.dll")).toBe("skylakex");
    expect(cpuVariantOf("libggml-cpu-armv8.2_1.so")).toBe("armv8.2_1");
    expect(cpuVariantOf("libggml-cpu-apple_m2_m3.so")).toBe("apple_m2_m3");
    expect(cpuVariantOf("libggml-cpu.so")).toBe("default");
    expect(cpuVariantOf("llama_napi.node")).toBe("native");
    expect(cpuVariantOf("libggml-cuda.so")).toBeNull();
    expect(cpuVariantOf("")).toBeNull();
  });
});

describe("llama-napi build: the cmake-js command", () => {
  it("always passes the backend and the CPU-variant switch, so a rebuild never inherits old ones", () => {
    const plan = buildPlan("/pkg", { backend: "cuda", cpuVariants: false, jobs: 3 });
    expect(plan.outDir).toBe(path.join("/pkg", "build"));
    expect(plan.args).toEqual([
      "--directory",
      "/pkg",
      "--out",
      path.join("/pkg", "build"),
      "--CDLLAMA_NAPI_BACKEND=cuda",
      "--CDLLAMA_NAPI_CPU_VARIANTS=OFF",
      "--parallel",
      "3",
    ]);
    expect(buildPlan("/pkg", { backend: "cpu", cpuVariants: true }).args).toContain("--CDLLAMA_NAPI_CPU_VARIANTS=ON");
  });

  it("passes CMake definitions given after --", () => {
    const plan = buildPlan("/pkg", { backend: "cuda", defines: ["-DCMAKE_CUDA_ARCHITECTURES=89", "-DGGML_CUDA_FA:BOOL=OFF"] });
    expect(plan.args).toContain("--CDCMAKE_CUDA_ARCHITECTURES=89");
    expect(plan.args).toContain("--CDGGML_CUDA_FA:BOOL=OFF");
    expect(() => buildPlan("/pkg", { defines: ["--clean"] })).toThrow(/expected -DVAR=VALUE/);
  });

  it("refuses an unknown backend", () => {
    expect(() => buildPlan("/pkg", { backend: "opencl" })).toThrow(/--backend must be one of cpu, cuda, vulkan, metal/);
  });
});

describe("systemInfo() of the addon in use", () => {
  it("reports the binary, the CPU variant, the build mode and the devices", () => {
    const info = systemInfo();
    expect(fs.existsSync(info.binary)).toBe(true);
    const cpu = info.devices.find((d) => d.type === "cpu");
    expect(cpu).toBeDefined();
    expect(info.cpuVariant).toBe(cpuVariantOf(cpu?.library ?? ""));
    expect(Array.isArray(cpu?.features)).toBe(true);
    if (!info.dynamicBackends) {
      // A source build: the CPU backend is compiled into the addon for this machine.
      expect(cpu?.library).toBe(path.basename(info.binary));
      expect(info.cpuVariant).toBe("native");
    } else {
      expect(fs.existsSync(path.join(info.backendDir, cpu?.library ?? "?"))).toBe(true);
    }
    expect(info.gpuDevices.every((d) => d.type === "gpu" || d.type === "igpu")).toBe(true);
    const text = formatInfo(info);
    expect(text).toContain(`CPU variant:  ${info.cpuVariant}`);
    expect(text).toContain(cpu?.library ?? "?");
  });
});

describe("llama-napi info", () => {
  it("prints the same as systemInfo(), as text and as JSON", async () => {
    await ensureDist();
    const cli = path.join(repoRoot, "dist", "cli", "main.js");
    const json = JSON.parse((await run(process.execPath, [cli, "info", "--json"])).stdout) as { cpuVariant: string; buildMode: string; devices: unknown[] };
    const info = systemInfo();
    expect(json.cpuVariant).toBe(info.cpuVariant);
    expect(json.devices).toHaveLength(info.devices.length);
    expect(json.buildMode).toMatch(info.prebuilt ? /^prebuilt binary/ : /^build from source/);
    const text = (await run(process.execPath, [cli, "info"])).stdout;
    expect(text).toContain(`CPU variant:  ${info.cpuVariant}`);
    expect(text).toMatch(/^devices \(\d+\):$/m);
  }, 60_000);
});

describe("gpuLayers without a GPU", () => {
  const hasGpu = systemInfo().gpuDevices.length > 0;

  it.skipIf(hasGpu)("falls back to the CPU with one warning, and the output is the CPU's", async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on("warning", onWarning);
    try {
      const greedy = async (gpuLayers: number | "max" | undefined) => {
        using model = await loadModel(fixturePath("gpt2-tiny-f32"), gpuLayers === undefined ? {} : { gpuLayers });
        using context = await model.createContext({ contextSize: 64, threads: 1 });
        using session = context.createSession();
        await session.prompt("Hello, my name is");
        return Array.from((await session.generate({ temperature: 0, maxTokens: 8 }).collect()).tokens);
      };
      const cpu = await greedy(undefined);
      expect(await greedy(12)).toEqual(cpu);
      expect(await greedy("max")).toEqual(cpu);
      await new Promise((resolve) => setImmediate(resolve));
      const ours = warnings.filter((w) => (w as Error & { code?: string }).code === "LLAMA_NAPI_NO_GPU");
      expect(ours).toHaveLength(1);
      expect(ours[0]?.message).toMatch(/no GPU device is available/);
    } finally {
      process.off("warning", onWarning);
    }
  });

  it("refuses a negative or fractional layer count", async () => {
    for (const gpuLayers of [-1, 1.5]) {
      await expect(loadModel(fixturePath("gpt2-tiny-f32"), { gpuLayers })).rejects.toSatisfy(
        (e: unknown) => e instanceof LlamaError && e.code === "ERR_INVALID_ARGUMENT",
      );
    }
  });
});

interface ChildReport {
  cpuVariant: string | null;
  unavailableGpuModules: { module: string; reason: string }[];
  warnings: string[];
  prebuilt: boolean;
  dynamicBackends: boolean;
  tokens: number[];
  logits: number[];
}

/** Greedy tokens and the prompt's logits from a fresh process that loads `binary` (under `wrapper`, e.g. qemu). */
async function childRun(binary: string, env: Record<string, string> = {}, wrapper: string[] = []): Promise<ChildReport> {
  const script = `
    const { loadModel, systemInfo } = await import(${JSON.stringify(path.join(repoRoot, "dist", "index.js"))});
    const warnings = [];
    process.on("warning", (w) => warnings.push(w.code + ": " + w.message));
    const info = systemInfo();
    const gpuLayers = process.env.TEST_GPU_LAYERS ? Number(process.env.TEST_GPU_LAYERS) : undefined;
    const model = await loadModel(process.argv[1], gpuLayers === undefined ? {} : { gpuLayers });
    const context = await model.createContext({ contextSize: 64, threads: 2 });
    const session = context.createSession();
    await session.prompt("Hello, my name is");
    const logits = Array.from(session.logits());
    const r = await session.generate({ temperature: 0, maxTokens: 16 }).collect();
    await new Promise((resolve) => setImmediate(resolve));
    console.log(JSON.stringify({ cpuVariant: info.cpuVariant, unavailableGpuModules: info.unavailableGpuModules, warnings, prebuilt: info.prebuilt, dynamicBackends: info.dynamicBackends, tokens: Array.from(r.tokens), logits }));
    model.dispose();`;
  const command = [...wrapper, process.execPath, "--input-type=module", "-e", script, fixturePath("gpt2-tiny-f32")];
  const childEnv: NodeJS.ProcessEnv = { ...process.env, LLAMA_NAPI_BINARY: binary, ...env };
  // Under `npm run test:asan` every process preloads the ASan runtime, which cannot map its
  // shadow memory inside qemu-user; the emulated run checks the uninstrumented prebuilt binary.
  if (wrapper.length > 0) delete childEnv.LD_PRELOAD;
  const { stdout } = await run(command[0] ?? process.execPath, command.slice(1), {
    env: childEnv,
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(stdout.trim().split("\n").pop() ?? "") as ChildReport;
}

/** qemu-x86_64 (Debian package qemu-user), to run on an emulated older CPU; undefined if absent. */
const qemu = ["/usr/bin/qemu-x86_64", "/usr/local/bin/qemu-x86_64"].find((f) => fs.existsSync(f));

/** x86-64 variants an older CPU would still have (in order of preference, best last). */
const OLDER = [
  { name: "haswell (AVX2, no AVX-512)", keep: ["x64", "sse42", "sandybridge", "ivybridge", "piledriver", "haswell"], expect: "haswell" },
  { name: "sandybridge (AVX only)", keep: ["x64", "sse42", "sandybridge"], expect: "sandybridge" },
  { name: "x86-64 baseline (SSE2)", keep: ["x64"], expect: "x64" },
];

describe.skipIf(prebuiltAddon === undefined)(`prebuilt binary (${path.relative(repoRoot, prebuildDir)})`, () => {
  const addon = path.join(prebuildDir, prebuiltAddon ?? "none");
  let tmp = "";
  let reference: ChildReport;

  beforeAll(async () => {
    await ensureDist();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-older-cpu-"));
    reference = await childRun(addon);
  }, 120_000);
  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("loads its libraries from its own folder and picks a CPU variant for this CPU", () => {
    expect(reference.prebuilt).toBe(true);
    expect(reference.dynamicBackends).toBe(true);
    expect(fs.existsSync(path.join(prebuildDir, `libggml-cpu-${reference.cpuVariant}.so`))).toBe(true);
    expect(reference.tokens).toHaveLength(16);
  });

  it("generates what the source build (-march=native) generates", async (ctx) => {
    const source = path.join(repoRoot, "build", "Release", "llama_napi.node");
    if (!fs.existsSync(source)) return ctx.skip("skipped: no source build in build/Release (npm run build:native; CI tests the prebuilt binary only)");
    const native = await childRun(source);
    expect(native.cpuVariant).toBe("native");
    expect(native.tokens).toEqual(reference.tokens);
    expect(maxAbsDiff(native.logits, reference.logits)).toBeLessThan(1e-3);
  }, 60_000);

  it.runIf(process.platform === "linux" && process.arch === "x64").each(OLDER)(
    "on an older CPU, $name: the next best variant, the same tokens",
    async ({ keep, expect: variant }) => {
      const dir = path.join(tmp, variant);
      fs.mkdirSync(dir);
      for (const f of fs.readdirSync(prebuildDir)) {
        const v = cpuVariantOf(f);
        if (v !== null && v !== "native" && !keep.includes(v)) continue;
        try {
          fs.linkSync(path.join(prebuildDir, f), path.join(dir, f));
        } catch {
          fs.copyFileSync(path.join(prebuildDir, f), path.join(dir, f));
        }
      }
      const older = await childRun(path.join(dir, path.basename(addon)));
      expect(older.cpuVariant).toBe(variant);
      expect(older.tokens).toEqual(reference.tokens);
      expect(maxAbsDiff(older.logits, reference.logits)).toBeLessThan(1e-3);
    },
    60_000,
  );

  it("a CUDA module is not loaded without the NVIDIA driver, and one that cannot load says why; gpuLayers falls back to the CPU", async (ctx) => {
    if (process.platform !== "linux") ctx.skip(); // the module and driver names below are Linux's
    const dir = path.join(tmp, "broken-gpu-module");
    fs.mkdirSync(dir);
    for (const f of fs.readdirSync(prebuildDir)) fs.copyFileSync(path.join(prebuildDir, f), path.join(dir, f));
    // Not a loadable library: what the loader says of a module whose libcudart is missing is
    // of the same kind ("cannot open shared object file" instead of "invalid ELF header").
    fs.writeFileSync(path.join(dir, "libggml-cuda.so"), "not an ELF file");
    // Without a driver (libcuda.so.1) the module is never opened.
    const noDriver = fs.mkdtempSync(path.join(tmp, "no-driver-"));
    const withoutDriver = await childRun(path.join(dir, path.basename(addon)), { TEST_GPU_LAYERS: "99", LD_LIBRARY_PATH: noDriver });
    expect(withoutDriver.unavailableGpuModules).toHaveLength(1);
    // (Where an NVIDIA driver is installed the module is opened as below.)
    if (/is not installed/.test(withoutDriver.unavailableGpuModules[0]?.reason ?? "")) {
      expect(withoutDriver.unavailableGpuModules).toEqual([{ module: "libggml-cuda.so", reason: expect.stringMatching(/^not loaded: the NVIDIA driver \(libcuda\.so\.1\) is not installed: /) }]);
    }
    // With a stand-in libcuda.so.1 (any loadable library) the module is opened, and fails.
    const fakeDriver = fs.mkdtempSync(path.join(tmp, "fake-driver-"));
    fs.copyFileSync(path.join(prebuildDir, "libggml.so"), path.join(fakeDriver, "libcuda.so.1"));
    const r = await childRun(path.join(dir, path.basename(addon)), { TEST_GPU_LAYERS: "99", LD_LIBRARY_PATH: fakeDriver });
    expect(r.unavailableGpuModules).toEqual([{ module: "libggml-cuda.so", reason: expect.stringMatching(/^cannot be loaded: .*libggml-cuda\.so: (invalid ELF header|file too short)/) }]);
    for (const run of [withoutDriver, r]) {
      expect(run.warnings.filter((w) => w.startsWith("LLAMA_NAPI_NO_GPU"))).toHaveLength(1);
      expect(run.warnings.join("\n")).toContain(`libggml-cuda.so ${run.unavailableGpuModules[0]?.reason ?? "?"}`);
      expect(run.tokens).toEqual(reference.tokens);
    }
  }, 60_000);

  // The real module, where one was built (README: CUDA): not in CI, which builds no CUDA.
  const cudaModule = process.env.LLAMA_NAPI_CUDA_MODULE || path.join(`${prebuildDir}-cuda`, "libggml-cuda.so");
  const cudaRuntime = process.env.LLAMA_NAPI_CUDA_RUNTIME; // a folder with libcudart.so.13, libcublas.so.13, libcublasLt.so.13
  it("the built CUDA module: not loaded without a driver, says which runtime library is missing, and finds no device without a GPU", async (ctx) => {
    if (process.platform !== "linux" || !fs.existsSync(cudaModule)) ctx.skip(`no CUDA module at ${cudaModule} (set LLAMA_NAPI_CUDA_MODULE; README: CUDA)`);
    if (cudaRuntime === undefined || !fs.existsSync(path.join(cudaRuntime, "libcudart.so.13"))) ctx.skip("set LLAMA_NAPI_CUDA_RUNTIME to a folder with libcudart.so.13 and libcublas.so.13");
    const fakeDriver = fs.mkdtempSync(path.join(tmp, "cuda-driver-"));
    fs.copyFileSync(path.join(prebuildDir, "libggml.so"), path.join(fakeDriver, "libcuda.so.1"));
    const reasons = async (libraryPath: string) => {
      const r = await childRun(path.join(prebuildDir, path.basename(addon)), { GGML_BACKEND_PATH: cudaModule, LD_LIBRARY_PATH: libraryPath, TEST_GPU_LAYERS: "99" });
      expect(r.tokens).toEqual(reference.tokens);
      return r.unavailableGpuModules;
    };
    const [noDriver, noRuntime, noGpu] = [await reasons(""), await reasons(fakeDriver), await reasons(`${fakeDriver}:${cudaRuntime}`)];
    if (noDriver[0]?.reason.startsWith("not loaded")) expect(noDriver).toEqual([{ module: "libggml-cuda.so", reason: expect.stringContaining("the NVIDIA driver (libcuda.so.1) is not installed") }]);
    expect(noRuntime).toEqual([{ module: "libggml-cuda.so", reason: expect.stringMatching(/^cannot be loaded: libcu(dart|blas)\.so\.13: cannot open shared object file/) }]);
    // A stand-in libcuda.so.1 is no driver: CUDA's runtime says so, and ggml-cuda has no device.
    expect(noGpu).toEqual([{ module: "libggml-cuda.so", reason: expect.stringMatching(/^loaded, but found no device .*failed to initialize CUDA/) }]);
  }, 120_000);

  // A really older CPU: qemu's emulated Nehalem (SSE4.2, no AVX) and Sandy Bridge (AVX, no AVX2).
  it.runIf(qemu !== undefined && process.platform === "linux" && process.arch === "x64").each([
    { cpu: "Nehalem", variant: "sse42" },
    { cpu: "SandyBridge", variant: "sandybridge" },
  ])(
    "under qemu -cpu $cpu the prebuilt binary picks $variant and generates the same tokens",
    async ({ cpu, variant }) => {
      const emulated = await childRun(addon, {}, [qemu ?? "qemu-x86_64", "-cpu", cpu]);
      expect(emulated.cpuVariant).toBe(variant);
      expect(emulated.tokens).toEqual(reference.tokens);
      expect(maxAbsDiff(emulated.logits, reference.logits)).toBeLessThan(1e-3);
    },
    180_000,
  );
});
