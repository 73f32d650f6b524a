#!/usr/bin/env node
/**
 * A stand-in for node-gyp that builds with cmake-js: prebuildify (and anything else that drives
 * node-gyp) runs it as PREBUILD_NODE_GYP / npm_config_node_gyp.
 *
 *   cmake-js-as-node-gyp.mjs rebuild|build|configure|clean [--target=V] [--arch=A] [--release|--debug] [--devdir=D] ...
 *
 * It builds the project this script belongs to (the folder above scripts/) into `<cwd>/build`,
 * where node-gyp would put it, so that `<cwd>/build/Release/*.node` is the addon and every
 * library and backend module it loads lies beside it.
 *
 * The build is a distributable one: ggml and llama as shared libraries and every CPU variant of
 * ggml as a module chosen at run time (LLAMA_NAPI_CPU_VARIANTS=ON), plus the GPU backend named by
 * LLAMA_NAPI_BACKEND (cuda, vulkan; metal on macOS), if any. LLAMA_NAPI_TARGET=<platform>-<arch>
 * (linux-arm64, win32-x64; set by `npm run prebuilds -- --target ...`) cross-compiles with
 * cmake/toolchain-<platform>-<arch>.cmake.
 *
 * Differences from node-gyp, on purpose:
 *  - `rebuild` does not start from scratch: ninja/make rebuild what changed (a full build of
 *    every CPU variant takes most of an hour on two cores). LLAMA_NAPI_CLEAN=1 cleans first.
 *  - --target (the Node version) is ignored: the addon uses N-API only, one binary serves them all.
 *  - --devdir is ignored: cmake-js takes the N-API headers from the node-api-headers package.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function parse(argv) {
  const out = { command: "rebuild", arch: undefined, debug: false, jobs: undefined };
  for (const arg of argv) {
    if (!arg.startsWith("-")) out.command = arg;
    else if (arg.startsWith("--arch=")) out.arch = arg.slice("--arch=".length);
    else if (arg === "--debug") out.debug = true;
    else if (arg === "--release") out.debug = false;
    else if (arg.startsWith("--jobs=") || arg.startsWith("-j=")) out.jobs = arg.split("=")[1];
    // --target, --devdir, --runtime, --dist-url, --build_v8_with_gn: not needed (see above).
  }
  return out;
}

/** The cmake-js command line for a distributable build of `root` into `outDir`. */
function cmakeJsArgs({ outDir, arch, debug, backend, jobs, target }) {
  const args = ["--directory", root, "--out", outDir, "--CDLLAMA_NAPI_CPU_VARIANTS=ON"];
  if (backend) args.push(`--CDLLAMA_NAPI_BACKEND=${backend}`);
  if (target) {
    const toolchain = path.join(root, "cmake", `toolchain-${target}.cmake`);
    if (!fs.existsSync(toolchain)) throw new Error(`LLAMA_NAPI_TARGET=${target}: there is no ${path.relative(root, toolchain)}`);
    args.push(`--CDCMAKE_TOOLCHAIN_FILE=${toolchain}`);
  }
  if (arch) args.push("--arch", arch);
  if (debug) args.push("--debug");
  if (jobs) args.push("--parallel", String(jobs));
  return args;
}

function run(cmakeJs, command, args) {
  const r = spawnSync(process.execPath, [cmakeJs, command, ...args], { stdio: "inherit", cwd: root });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

function main() {
  const opts = parse(process.argv.slice(2));
  const outDir = path.resolve(process.cwd(), "build");
  const backend = process.env.LLAMA_NAPI_BACKEND || undefined;
  const require = createRequire(path.join(root, "package.json"));
  const cmakeJs = require.resolve("cmake-js/bin/cmake-js");
  const target = process.env.LLAMA_NAPI_TARGET || undefined;
  const args = cmakeJsArgs({ outDir, arch: opts.arch, debug: opts.debug, backend, jobs: opts.jobs ?? process.env.LLAMA_NAPI_JOBS, target });
  if (opts.command === "clean" || (opts.command === "rebuild" && process.env.LLAMA_NAPI_CLEAN === "1")) {
    fs.rmSync(outDir, { recursive: true, force: true });
    if (opts.command === "clean") return 0;
  }
  process.stderr.write(`cmake-js-as-node-gyp: ${opts.command} -> cmake-js ${args.join(" ")}\n`);
  // configure every time: cheap when nothing changed, and picks up a changed backend or option.
  const configured = run(cmakeJs, "configure", args);
  if (configured !== 0 || opts.command === "configure") return configured;
  return run(cmakeJs, "build", args);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main();
}
