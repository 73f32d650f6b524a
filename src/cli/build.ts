import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { parseArgs } from "node:util";

import { LlamaError } from "../errors.js";
import { packageRoot } from "../native.js";
import { intOption, UsageError } from "./args.js";

export const buildUsage = `llama-napi build [--backend cpu|cuda|vulkan|metal] [--cpu-variants] [--jobs N] [--debug] [--clean] [-- -DVAR=VALUE ...]

Builds the native addon from source into the package's build/ folder, for when no prebuilt
binary fits this machine (another platform or libc, a GPU flavour) or to tune it to this CPU.
The addon then loads from build/ in preference to the shipped prebuilds/. Needs cmake (>= 3.18)
and a C++17 compiler; the llama.cpp sources ship with the package.

      --backend B       cpu (default; metal on macOS), cuda (needs the CUDA toolkit: nvcc and
                        cuBLAS; CMAKE_CUDA_ARCHITECTURES defaults to this machine's GPUs, else
                        to the prebuilt module's 75-virtual;80-real;89-real;90-real;120a-real)
                        or vulkan (needs the Vulkan headers and glslc). Default:
                        $LLAMA_NAPI_BACKEND, else cpu.
      --cpu-variants    every CPU variant of ggml, chosen at run time (as the prebuilt binaries),
                        instead of one CPU backend compiled for this machine (-march=native)
  -j, --jobs N          parallel compile jobs (default: cmake's choice)
      --debug           a debug build (build/Debug)
      --clean           delete build/ first
  -- -DVAR=VALUE ...    extra CMake definitions, e.g. -DCMAKE_CUDA_ARCHITECTURES=89
                        or -DCMAKE_CUDA_COMPILER=/opt/cuda/bin/nvcc`;

const BACKENDS = ["cpu", "cuda", "vulkan", "metal"] as const;
type Backend = (typeof BACKENDS)[number];

export interface BuildPlan {
  root: string;
  outDir: string;
  backend: Backend;
  cpuVariants: boolean;
  args: string[];
}

/** The cmake-js arguments for a build of the package at `root` (exported for the tests). */
export function buildPlan(
  root: string,
  options: { backend?: string; cpuVariants?: boolean; jobs?: number; debug?: boolean; defines?: readonly string[] },
): BuildPlan {
  const fallback: Backend = process.platform === "darwin" ? "metal" : "cpu";
  const asked = options.backend ?? (process.env.LLAMA_NAPI_BACKEND || fallback);
  if (!(BACKENDS as readonly string[]).includes(asked)) throw new UsageError(`--backend must be one of ${BACKENDS.join(", ")}, got "${asked}"`);
  const backend = asked as Backend;
  const cpuVariants = options.cpuVariants ?? false;
  const outDir = path.join(root, "build");
  // Both options are always passed: CMake caches them, and a later build with other options must
  // not inherit the earlier ones.
  const args = ["--directory", root, "--out", outDir, `--CDLLAMA_NAPI_BACKEND=${backend}`, `--CDLLAMA_NAPI_CPU_VARIANTS=${cpuVariants ? "ON" : "OFF"}`];
  for (const define of options.defines ?? []) {
    if (!/^-D[A-Za-z_][\w.-]*(:[A-Z]+)?=/.test(define)) throw new UsageError(`expected -DVAR=VALUE after --, got "${define}"`);
    args.push(`--CD${define.slice(2)}`);
  }
  if (options.jobs !== undefined) args.push("--parallel", String(options.jobs));
  if (options.debug) args.push("--debug");
  return { root, outDir, backend, cpuVariants, args };
}

function hasProgram(name: string): boolean {
  const r = spawnSync(name, ["--version"], { stdio: "ignore" });
  return r.error === undefined && r.status === 0;
}

function runNode(script: string, args: string[], cwd: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { cwd, stdio: "inherit" });
    child.on("error", reject);
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

/** Makes sure vendor/llama.cpp is there (it ships in the package; a git checkout fetches it). */
async function ensureSources(root: string): Promise<void> {
  if (fs.existsSync(path.join(root, "vendor", "llama.cpp", "CMakeLists.txt"))) return;
  const vendor = path.join(root, "scripts", "vendor.mjs");
  if (!fs.existsSync(vendor)) {
    throw new LlamaError("ERR_FILE_NOT_FOUND", `The llama.cpp sources are missing from ${path.join(root, "vendor", "llama.cpp")} (reinstall llama-napi)`);
  }
  process.stderr.write("llama-napi build: fetching the pinned llama.cpp sources (scripts/vendor.mjs)\n");
  if ((await runNode(vendor, [], root)) !== 0) throw new LlamaError("ERR_INTERNAL", "Fetching the llama.cpp sources failed (see above)");
}

export async function runBuild(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      backend: { type: "string" },
      "cpu-variants": { type: "boolean" },
      jobs: { type: "string", short: "j" },
      debug: { type: "boolean" },
      clean: { type: "boolean" },
    },
    allowPositionals: true,
  });
  const dashes = argv.indexOf("--");
  if (positionals.length > 0 && (dashes === -1 || positionals.length !== argv.length - dashes - 1)) {
    throw new UsageError(`unexpected argument "${positionals[0]}" (CMake definitions go after --)`);
  }
  const plan = buildPlan(packageRoot, {
    defines: positionals,
    ...(values.backend !== undefined ? { backend: values.backend } : {}),
    cpuVariants: values["cpu-variants"] ?? false,
    ...(values.jobs !== undefined ? { jobs: intOption(values.jobs, "--jobs") } : {}),
    debug: values.debug ?? false,
  });
  if (!hasProgram("cmake")) {
    throw new LlamaError(
      "ERR_UNSUPPORTED",
      "cmake was not found on PATH. Building from source needs cmake >= 3.18 and a C++17 compiler " +
        "(Debian/Ubuntu: apt-get install cmake g++; macOS: xcode-select --install && brew install cmake; " +
        "Windows: Visual Studio with the C++ workload and CMake)",
    );
  }
  await ensureSources(plan.root);
  if (values.clean) fs.rmSync(plan.outDir, { recursive: true, force: true });
  const cmakeJs = createRequire(path.join(plan.root, "package.json")).resolve("cmake-js/bin/cmake-js");
  const started = Date.now();
  process.stderr.write(
    `llama-napi build: ${plan.backend}${plan.cpuVariants ? " + every CPU variant" : ""} into ${plan.outDir}\n` +
      `  cmake-js configure/build ${plan.args.join(" ")}\n`,
  );
  for (const step of ["configure", "build"]) {
    const code = await runNode(cmakeJs, [step, ...plan.args], plan.root);
    if (code !== 0) throw new LlamaError("ERR_INTERNAL", `cmake-js ${step} failed with exit code ${code} (see above)`);
  }
  const addon = path.join(plan.outDir, values.debug ? "Debug" : "Release", "llama_napi.node");
  if (!fs.existsSync(addon)) throw new LlamaError("ERR_INTERNAL", `The build finished but ${addon} is missing`);
  // Load it in a fresh process: a missing library shows up here rather than in the user's program.
  const probe = spawnSync(
    process.execPath,
    ["-e", "const i = require(process.argv[1]).systemInfo(); console.log(i.devices.map((d) => `${d.backend} (${d.library})`).join(', '))", addon],
    { encoding: "utf8" },
  );
  if (probe.status !== 0) throw new LlamaError("ERR_NATIVE_LOAD", `The built addon ${addon} does not load:\n${probe.stderr}`);
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  process.stdout.write(`Built ${addon} in ${seconds} s; devices: ${probe.stdout.trim()}\nIt is used in preference to the prebuilt binaries. \`llama-napi info\` shows what runs.\n`);
  return 0;
}
