#!/usr/bin/env node
/**
 * npm run check:gpu: the GPU checks of the CUDA backend module, on a machine with an NVIDIA GPU
 * and the built files (issue 24). Under 10 minutes (about 2 on an H100, most of it writing the model).
 *
 *   1. the CUDA module loads and lists the GPU (systemInfo().gpuDevices);
 *   2. loadModel(..., { gpuLayers: "max" }) offloads every layer (llama.cpp's own count:
 *      "offloaded N/N layers to GPU");
 *   3. the prompt's logits on the GPU equal the CPU's within 1e-2;
 *   4. generation tokens/s >= 0.95 x llama-bench's (tg128, -ngl 99) on the same GPU and model,
 *      llama-bench running the same CUDA module.
 *
 * The files it needs, built on any Linux x64 machine (no GPU needed to build):
 *   dist/                                   npm run build:ts
 *   prebuilds/linux-x64/                    npm run prebuilds (the addon and the CPU modules)
 *   the CUDA module                         LLAMA_NAPI_CUDA_MODULE, else prebuilds/linux-x64-cuda/ or
 *                                           prebuilds/linux-x64/libggml-cuda.so (README: "CUDA")
 *   llama-bench with backend modules        LLAMA_BENCH, else bench/.work/llama-build-dl/bin/llama-bench
 *                                           (`npm run check:gpu -- --build-llama-bench` builds it)
 * and at run time the NVIDIA driver and the CUDA runtime libraries (libcudart.so.13,
 * libcublas.so.13, libcublasLt.so.13) on the loader's path (LD_LIBRARY_PATH).
 *
 * Exit status: 0 all checks passed, 1 a check failed, 2 no GPU here (each reason printed).
 * --dry-run-on-cpu goes on without a GPU, to try the script itself (the offload check fails).
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const prebuildDir = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
const LLAMA_BENCH_BUILD = path.join(root, "bench", ".work", "llama-build-dl");
const MODULE = process.platform === "win32" ? "ggml-cuda.dll" : "libggml-cuda.so";
const N_GEN = 128;
const LOGIT_TOLERANCE = 1e-2;
const SPEED_RATIO = 0.95;
// The same CPU threads on both sides (they matter little with every layer on the GPU).
const THREADS = Math.min(8, os.availableParallelism());

function log(line) {
  process.stdout.write(`check:gpu: ${line}\n`);
}

function fail(line, status = 1) {
  log(line);
  process.exit(status);
}

/** llama-bench from the vendored tree with ggml's backends as modules (GGML_BACKEND_DL), CPU only: the CUDA module is put beside it. */
function buildLlamaBench() {
  const configure = ["-S", path.join(root, "bench", "llama-tools"), "-B", LLAMA_BENCH_BUILD, "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_NAPI_CPU_VARIANTS=ON"];
  for (const args of [configure, ["--build", LLAMA_BENCH_BUILD, "--target", "llama-bench", `-j${os.availableParallelism()}`]]) {
    const r = spawnSync("cmake", args, { stdio: "inherit" });
    if (r.status !== 0) fail(`cmake ${args.join(" ")} failed`);
  }
  log(`built ${path.join(LLAMA_BENCH_BUILD, "bin", "llama-bench")}`);
}

if (process.argv.includes("--build-llama-bench")) {
  buildLlamaBench();
  process.exit(0);
}

const addon = fs.existsSync(prebuildDir) ? fs.readdirSync(prebuildDir).find((f) => f.endsWith(".node")) : undefined;
if (addon === undefined) fail(`no prebuilt addon in ${prebuildDir}: run npm run prebuilds`);
const cudaModule = [process.env.LLAMA_NAPI_CUDA_MODULE, path.join(`${prebuildDir}-cuda`, MODULE), path.join(prebuildDir, MODULE)].find(
  (f) => f !== undefined && f !== "" && fs.existsSync(f),
);
if (cudaModule === undefined) fail(`no ${MODULE}: set LLAMA_NAPI_CUDA_MODULE or put it in ${prebuildDir}-cuda/ (README: CUDA)`);
const llamaBench = process.env.LLAMA_BENCH || path.join(LLAMA_BENCH_BUILD, "bin", "llama-bench");

// The addon and the module, as a user with @llama-napi/linux-x64-cuda installed gets them.
const childEnv = { ...process.env, LLAMA_NAPI_BINARY: path.join(prebuildDir, addon) };
if (path.dirname(cudaModule) !== prebuildDir) childEnv.GGML_BACKEND_PATH = cudaModule;

/** Runs `code` (an async function body with `lib`, llama-napi's dist/index.js, in scope) in a fresh Node; its last stdout line as JSON. */
function child(code, env = {}) {
  const script = `const lib = await import(${JSON.stringify(pathToFileURL(path.join(root, "dist", "index.js")).href)});\n${code}`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { env: { ...childEnv, ...env }, encoding: "utf8", maxBuffer: 256 << 20 });
  if (r.status !== 0) fail(`a child process failed (status ${r.status}):\n${r.stderr}`);
  return { value: JSON.parse(r.stdout.trim().split("\n").pop() ?? "null"), stderr: r.stderr };
}

const started = Date.now();
const smi = spawnSync("nvidia-smi", ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], { encoding: "utf8" });
log(smi.status === 0 ? `nvidia-smi: ${smi.stdout.trim()}` : "nvidia-smi: not found or failed (no NVIDIA driver?)");

// 1. The device.
const info = child("const i = lib.systemInfo(); console.log(JSON.stringify({ gpus: i.gpuDevices, unavailable: i.unavailableGpuModules }));").value;
// --dry-run-on-cpu: the same steps without a GPU, to try this script (the offload check then fails).
const dryRun = process.argv.includes("--dry-run-on-cpu");
if (info.gpus.length === 0 && !dryRun) {
  for (const m of info.unavailable) log(`${m.module}: ${m.reason}`);
  fail("no GPU device: the checks need a machine with an NVIDIA GPU, its driver and the CUDA runtime libraries", 2);
}
for (const d of info.gpus) log(`device: ${d.name} (${d.description}), ${Math.round(d.memoryTotal / 2 ** 20)} MiB, ${d.features.join(" ")}`);

// The model: GPT-2 small, random weights, Q8_0 (the benchmark's, made once into bench/.work/models).
const { ensureModels } = await import(pathToFileURL(path.join(root, "bench", "lib", "models.mjs")).href);
const models = await ensureModels(log, { threads: os.availableParallelism() });
const model = models.q8_0.file;
const failures = [];
const check = (ok, line) => {
  log(`${ok ? "ok  " : "FAIL"} ${line}`);
  if (!ok) failures.push(line);
};

// 2. Every layer offloaded, by llama.cpp's own count.
const offload = child(`const m = await lib.loadModel(${JSON.stringify(model)}, { gpuLayers: "max" }); m.dispose(); console.log("null");`, {
  LLAMA_NAPI_LOG_LEVEL: "info",
});
const counted = /offloaded (\d+)\/(\d+) layers to GPU/.exec(offload.stderr);
check(counted !== null && counted[1] === counted[2], `gpuLayers "max": ${counted ? `offloaded ${counted[1]}/${counted[2]} layers` : "no offload line in llama.cpp's log"}`);

// 3. The prompt's logits, GPU against CPU.
const prompt = "The quick brown fox jumps over the lazy dog. ".repeat(8);
const logitsOf = (gpuLayers) =>
  child(`
    const m = await lib.loadModel(${JSON.stringify(model)}, { gpuLayers: ${JSON.stringify(gpuLayers)} });
    const c = await m.createContext({ contextSize: 512 });
    const s = c.createSession();
    await s.prompt(${JSON.stringify(prompt)});
    console.log(JSON.stringify(Array.from(s.logits())));
    m.dispose();`).value;
const cpu = logitsOf(0);
const gpu = logitsOf("max");
const maxDiff = cpu.reduce((max, v, i) => Math.max(max, Math.abs(v - gpu[i])), 0);
check(cpu.length === gpu.length && maxDiff <= LOGIT_TOLERANCE, `logits on the GPU within ${LOGIT_TOLERANCE} of the CPU's: max |diff| ${maxDiff.toExponential(2)} over ${cpu.length}`);

// 4. Generation speed against llama-bench (tg128: 128 tokens after an empty prompt, median of 3).
const ours = child(`
  const m = await lib.loadModel(${JSON.stringify(model)}, { gpuLayers: "max" });
  const c = await m.createContext({ contextSize: 512, threads: ${THREADS} });
  const rates = [];
  for (let round = 0; round < 4; round++) {
    const s = c.createSession();
    await s.prompt("The");
    let first = 0, last = 0, n = 0;
    for await (const _ of s.generate({ maxTokens: ${N_GEN + 1}, temperature: 0 })) { last = performance.now(); if (n++ === 0) first = last; }
    if (round > 0) rates.push((n - 1) / ((last - first) / 1e3));  // round 0 warms up
    s.dispose();
  }
  rates.sort((a, b) => a - b);
  console.log(JSON.stringify(rates[1]));
  m.dispose();`).value;
if (!fs.existsSync(llamaBench)) {
  check(false, `generation ${ours.toFixed(1)} tokens/s; no llama-bench at ${llamaBench} to compare with (npm run check:gpu -- --build-llama-bench)`);
} else {
  // llama-bench loads its modules from its own folder: a copy of it with its CPU modules and the
  // CUDA module beside it. The module asks for libggml-base.so (the addon's unversioned name), which
  // must be llama-bench's own (libggml-base.so.0 there): a link by that name beside the module.
  const benchDir = path.dirname(llamaBench);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-gpu-check-"));
  fs.copyFileSync(llamaBench, path.join(dir, "llama-bench"));
  fs.chmodSync(path.join(dir, "llama-bench"), 0o755);
  for (const f of fs.readdirSync(benchDir).filter((f) => /ggml-cpu/.test(f))) fs.symlinkSync(path.join(benchDir, f), path.join(dir, f));
  fs.copyFileSync(cudaModule, path.join(dir, MODULE));
  fs.symlinkSync(fs.realpathSync(path.join(benchDir, "libggml-base.so")), path.join(dir, "libggml-base.so"));
  const r = spawnSync(path.join(dir, "llama-bench"), ["-m", model, "-ngl", "99", "-p", "0", "-n", String(N_GEN), "-r", "3", "-t", String(THREADS), "-o", "json"], {
    cwd: dir,
    encoding: "utf8",
  });
  fs.rmSync(dir, { recursive: true, force: true });
  const row = r.status === 0 ? JSON.parse(r.stdout)[0] : undefined;
  if (row === undefined) {
    check(false, `llama-bench failed (status ${r.status}): ${r.stderr.slice(-2000)}`);
  } else {
    const ratio = ours / row.avg_ts;
    check(
      ratio >= SPEED_RATIO,
      `generation ${ours.toFixed(1)} tokens/s, llama-bench ${row.avg_ts.toFixed(1)} (${row.gpu_info || row.backends || "?"}, ${THREADS} threads): ${ratio.toFixed(3)}x (>= ${SPEED_RATIO})`,
    );
  }
}

log(`${failures.length === 0 ? "all checks passed" : `${failures.length} check(s) failed`} in ${Math.round((Date.now() - started) / 1000)} s`);
process.exit(failures.length === 0 ? 0 : 1);
