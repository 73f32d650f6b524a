#!/usr/bin/env node
/**
 * npm run prebuilds: the prebuilt binaries that the npm package ships, in prebuildify's layout.
 *
 *   prebuilds/<platform>-<arch>/llama-napi.<libc>.node        the addon (node-gyp-build picks it)
 *   prebuilds/<platform>-<arch>/lib*.so|*.dylib|*.dll         libllama, libggml*, and every
 *                                                             backend module (each CPU variant,
 *                                                             CUDA/Vulkan when asked for)
 *
 * prebuildify drives the build through scripts/cmake-js-as-node-gyp.mjs (instead of node-gyp) in
 * a staging folder, build-prebuild/ (build-prebuild-<backend>/ for a GPU flavour), so that the
 * developer's build/ stays the -march=native one; then it moves the addon and copies the
 * libraries into prebuilds/ (one folder: the addon's rpath is $ORIGIN / @loader_path, and it
 * loads its backend modules from its own folder).
 *
 * Not named "prebuild" in package.json: npm would run that before every `npm run build`.
 *
 * Options (environment): LLAMA_NAPI_BACKEND=cuda|vulkan adds a GPU backend module;
 * LLAMA_NAPI_JOBS=N parallel compile jobs; LLAMA_NAPI_CLEAN=1 starts the staging build afresh.
 * Run with --check to only check an existing prebuilds/ folder.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "package.json"));
const tuple = `${process.platform}-${process.arch}`;
const prebuildDir = path.join(root, "prebuilds", tuple);
const LIBRARY = /\.(so|dylib|dll)$/;

function step(message) {
  process.stdout.write(`prebuild: ${message}\n`);
}

function fail(message) {
  process.stderr.write(`prebuild: ${message}\n`);
  process.exit(1);
}

/** What a prebuild folder holds: the addon, the libraries, and the CPU variant modules. */
function describePrebuild(dir) {
  const files = fs.readdirSync(dir).sort();
  const addon = files.filter((f) => f.endsWith(".node"));
  const libraries = files.filter((f) => LIBRARY.test(f));
  const variants = libraries.map((f) => /ggml-cpu-([\w.]+)\.(so|dylib|dll)$/.exec(f)?.[1]).filter((v) => v !== undefined);
  const bytes = files.reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
  return { files, addon, libraries, variants, bytes };
}

function check() {
  if (!fs.existsSync(prebuildDir)) fail(`${path.relative(root, prebuildDir)} does not exist`);
  const d = describePrebuild(prebuildDir);
  if (d.addon.length !== 1) fail(`expected one .node file in ${prebuildDir}, found ${d.addon.join(", ") || "none"}`);
  if (!d.libraries.some((f) => /^(lib)?llama\./.test(f))) fail("libllama is missing");
  if (!d.libraries.some((f) => /^(lib)?ggml-base\./.test(f))) fail("libggml-base is missing");
  if (d.variants.length === 0 && !d.libraries.some((f) => /ggml-cpu\./.test(f))) fail("no CPU backend module");
  step(`${path.relative(root, prebuildDir)}: ${d.addon[0]}, ${d.libraries.length} libraries, ${(d.bytes / 1048576).toFixed(1)} MiB`);
  step(`CPU variants: ${d.variants.join(", ") || "(one CPU module)"}`);
  const gpu = d.libraries.filter((f) => /ggml-(cuda|vulkan|metal)/.test(f));
  if (gpu.length > 0) step(`GPU backends: ${gpu.join(", ")}`);
  // The addon must load its libraries from its own folder, whatever the working directory.
  const probe = spawnSync(
    process.execPath,
    ["-e", "const b = require(process.argv[1]); const i = b.systemInfo(); console.log(JSON.stringify(i.devices.map((d) => [d.backend, d.library])))", path.join(prebuildDir, d.addon[0])],
    { cwd: "/", encoding: "utf8", env: { ...process.env, LLAMA_NAPI_BACKEND_DIR: "" } },
  );
  if (probe.status !== 0) fail(`the prebuilt addon does not load:\n${probe.stderr}`);
  step(`loads; devices: ${probe.stdout.trim()}`);
}

function main() {
  if (process.argv.includes("--check")) return check();
  if (!fs.existsSync(path.join(root, "vendor", "llama.cpp", "CMakeLists.txt"))) {
    step("vendor/llama.cpp is missing: running scripts/vendor.mjs");
    const v = spawnSync(process.execPath, [path.join(root, "scripts", "vendor.mjs")], { stdio: "inherit", cwd: root });
    if (v.status !== 0) fail("vendoring llama.cpp failed");
  }
  const backend = process.env.LLAMA_NAPI_BACKEND || "cpu";
  const staging = path.join(root, backend === "cpu" ? "build-prebuild" : `build-prebuild-${backend}`);
  fs.mkdirSync(staging, { recursive: true });
  // Libraries of an earlier prebuild (another backend, an older layout) must not linger.
  fs.rmSync(prebuildDir, { recursive: true, force: true });
  const shim = path.join(root, "scripts", "cmake-js-as-node-gyp.mjs");
  const started = Date.now();
  const args = [require.resolve("prebuildify/bin.js"), "--napi", "--strip", "--tag-libc", "--name", "llama-napi", "--cwd", staging, "--out", root];
  step(`building (${backend}, every CPU variant) in ${path.relative(root, staging)}: prebuildify ${args.slice(1).join(" ")}`);
  const env = {
    ...process.env,
    // Windows spawns it through a shell; elsewhere the script runs by its #! line.
    PREBUILD_NODE_GYP: process.platform === "win32" ? `"${process.execPath}" "${shim}"` : shim,
  };
  const r = spawnSync(process.execPath, args, { stdio: "inherit", cwd: root, env });
  if (r.status !== 0) fail(`prebuildify failed (exit ${r.status})`);
  step(`built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  check();
}

main();
