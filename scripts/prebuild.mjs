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
 *
 * Cross builds (on x86-64 Linux): `--target linux-arm64` or `--target win32-x64` (or
 * LLAMA_NAPI_TARGET=...) builds prebuilds/<target>/ with cmake/toolchain-<target>.cmake (Debian's
 * aarch64 GCC; mingw-w64 with POSIX threads) in build-prebuild-<target>/, every CPU variant of that
 * architecture as a module (libggml-cpu-armv8.2_1.so, ggml-cpu-haswell.dll, ...). --check then
 * lists what the folder holds and what its binaries link to, and, when the emulator and the
 * target's Node are installed (scripts/cross.mjs; `npm run prebuilds:cross` installs them), loads
 * the addon under qemu-aarch64 or wine64.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import { CROSS_TARGETS, WINDOWS_SYSTEM_DLL, elfInfo, emulatedNode, missingTools, peInfo } from "./cross.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "package.json"));
const host = `${process.platform}-${process.arch}`;

/** --target <platform>-<arch> (or --target=..., or LLAMA_NAPI_TARGET): a cross build; the host's tuple otherwise. */
function targetArg() {
  const i = process.argv.findIndex((a) => a === "--target" || a.startsWith("--target="));
  if (i === -1) return process.env.LLAMA_NAPI_TARGET || host;
  const value = process.argv[i].includes("=") ? process.argv[i].slice("--target=".length) : process.argv[i + 1];
  if (!value || value.startsWith("--")) fail("--target needs a value: linux-arm64 or win32-x64");
  return value;
}

const tuple = targetArg();
const cross = tuple === host ? undefined : CROSS_TARGETS[tuple];
if (tuple !== host && cross === undefined) {
  fail(`--target ${tuple}: this script cross-builds ${Object.keys(CROSS_TARGETS).join(" and ")} only (from Linux); build other platforms on them`);
}
if (cross !== undefined && process.platform !== "linux") fail(`--target ${tuple}: cross builds run on Linux`);
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

/** The binaries' targets and imports: every DLL of a Windows prebuild may import only Windows' own DLLs, node.exe and its siblings. */
function inspectCross(d) {
  if (tuple === "win32-x64") {
    const own = new Set(d.files.map((f) => f.toLowerCase()));
    for (const f of [...d.addon, ...d.libraries]) {
      const pe = peInfo(path.join(prebuildDir, f));
      if (pe === undefined) return step("x86_64-w64-mingw32-objdump is missing: imports not checked");
      if (pe.format !== "pei-x86-64") fail(`${f} is ${pe.format}, not pei-x86-64`);
      const foreign = pe.imports.filter((dll) => !own.has(dll.toLowerCase()) && !WINDOWS_SYSTEM_DLL.test(dll));
      if (foreign.length > 0) fail(`${f} imports ${foreign.join(", ")}, which is neither a Windows DLL nor part of the prebuild`);
      if (f.endsWith(".node") && !pe.exports.includes("napi_register_module_v1")) fail(`${f} does not export napi_register_module_v1`);
    }
    const addonPe = peInfo(path.join(prebuildDir, d.addon[0]));
    if (!addonPe.delayLoadsNodeExe && !addonPe.imports.some((dll) => /^node\.exe$/i.test(dll))) fail(`${d.addon[0]} does not import Node-API from node.exe`);
    step(`${d.addon[0]}: imports ${addonPe.imports.join(", ")}${addonPe.delayLoadsNodeExe ? ", node.exe (delay-loaded)" : ""}; exports ${addonPe.exports.join(", ")}`);
    const system = new Set();
    for (const f of d.libraries) for (const dll of peInfo(path.join(prebuildDir, f)).imports) if (!own.has(dll.toLowerCase())) system.add(dll);
    step(`the DLLs import, besides each other: ${[...system].sort().join(", ")}`);
  } else if (tuple === "linux-arm64") {
    const elf = elfInfo(path.join(prebuildDir, d.addon[0]));
    if (elf === undefined) return step("readelf is missing: the binaries are not checked");
    if (!/AArch64/.test(elf.machine)) fail(`${d.addon[0]} is for ${elf.machine}, not AArch64`);
    const system = new Set();
    for (const f of [...d.addon, ...d.libraries]) {
      const e = elfInfo(path.join(prebuildDir, f));
      if (!/AArch64/.test(e.machine)) fail(`${f} is for ${e.machine}, not AArch64`);
      for (const lib of e.needed) if (!d.files.includes(lib)) system.add(lib);
    }
    step(`${d.addon[0]}: ${elf.machine}, runpath ${elf.runpath || "(none)"}; the libraries need, besides each other: ${[...system].sort().join(", ")}`);
  }
  // Load it under emulation when the emulator and the target's Node are here.
  const script = "const b = require(process.argv[1]); const i = b.systemInfo(); console.log(JSON.stringify(i.devices.map((d) => [d.backend, d.library])))";
  const how = emulatedNode(tuple, ["-e", script, path.join(prebuildDir, d.addon[0])]);
  if (typeof how === "string") return step(`not loaded under emulation: ${how}`);
  // wine's Node cannot write to a pipe (EBADF): its output goes through a file.
  const out = path.join(os.tmpdir(), `llama-napi-prebuild-check-${process.pid}.txt`);
  const fd = fs.openSync(out, "w");
  const started = Date.now();
  const probe = spawnSync(how.command, how.args, { cwd: root, stdio: ["ignore", fd, fd], env: { ...process.env, ...how.env, LLAMA_NAPI_BACKEND_DIR: "" }, timeout: 300_000 });
  fs.closeSync(fd);
  const output = fs.readFileSync(out, "utf8").trim();
  fs.rmSync(out, { force: true });
  if (probe.status !== 0) fail(`the prebuilt addon does not load under ${path.basename(how.command)} (exit ${probe.status ?? probe.signal}):\n${output}`);
  step(`loads under ${path.basename(how.command)} in ${((Date.now() - started) / 1000).toFixed(1)} s; devices: ${output.split("\n").pop()}`);
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
  if (cross !== undefined) return inspectCross(d);
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
  if (cross !== undefined) {
    const missing = missingTools(tuple);
    if (missing.length > 0) fail(`--target ${tuple} needs ${missing.join(", ")}: apt-get install ${cross.apt.join(" ")} (or npm run prebuilds:cross)`);
    if (backend !== "cpu") fail(`--target ${tuple}: cross builds are CPU only (LLAMA_NAPI_BACKEND=${backend})`);
  }
  const staging = path.join(root, cross !== undefined ? `build-prebuild-${tuple}` : backend === "cpu" ? "build-prebuild" : `build-prebuild-${backend}`);
  fs.mkdirSync(staging, { recursive: true });
  // Libraries of an earlier prebuild (another backend, an older layout) must not linger.
  fs.rmSync(prebuildDir, { recursive: true, force: true });
  const shim = path.join(root, "scripts", "cmake-js-as-node-gyp.mjs");
  const started = Date.now();
  const args = [require.resolve("prebuildify/bin.js"), "--napi", "--strip", "--name", "llama-napi", "--cwd", staging, "--out", root];
  if (cross === undefined || cross.tagLibc) args.push("--tag-libc");
  if (cross !== undefined) args.push("--platform", cross.platform, "--arch", cross.arch, "--strip-bin", cross.strip);
  step(`building (${cross !== undefined ? `${tuple}, cross-compiled` : backend}, every CPU variant) in ${path.relative(root, staging)}: prebuildify ${args.slice(1).join(" ")}`);
  const env = {
    ...process.env,
    // Windows spawns it through a shell; elsewhere the script runs by its #! line.
    PREBUILD_NODE_GYP: process.platform === "win32" ? `"${process.execPath}" "${shim}"` : shim,
  };
  if (cross !== undefined) env.LLAMA_NAPI_TARGET = tuple;
  else delete env.LLAMA_NAPI_TARGET;
  const r = spawnSync(process.execPath, args, { stdio: "inherit", cwd: root, env });
  if (r.status !== 0) fail(`prebuildify failed (exit ${r.status})`);
  step(`built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  check();
}

main();
