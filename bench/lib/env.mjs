/** Paths, prerequisites (built library, bench dependencies) and a description of this machine. */
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const BENCH_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const ROOT = path.resolve(BENCH_DIR, "..");
export const WORK_DIR = path.join(BENCH_DIR, ".work");
export const BUILD_LOCK = "/tmp/llama-napi-build.lock";

/** Runs a command with inherited output; throws when it fails. */
export function run(command, args, options = {}) {
  const r = spawnSync(command, args, { stdio: "inherit", ...options });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} exited with ${r.status ?? r.signal}`);
}

/** Runs a command under the shared build lock (flock), so builds do not compete for the CPUs. */
export function runLocked(command, args, options = {}) {
  const hasFlock = spawnSync("flock", ["--version"], { stdio: "ignore" }).status === 0;
  if (hasFlock) run("flock", [BUILD_LOCK, command, ...args], options);
  else run(command, args, options);
}

function newestMtime(dir, filter) {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !filter(entry.name)) continue;
    newest = Math.max(newest, fs.statSync(path.join(entry.parentPath ?? entry.path, entry.name)).mtimeMs);
  }
  return newest;
}

/** Makes sure dist/ (the compiled TypeScript) is there and newer than src/, and the addon is built. */
export function ensureLibrary(log) {
  const distIndex = path.join(ROOT, "dist", "index.js");
  const srcNewest = newestMtime(path.join(ROOT, "src"), (n) => n.endsWith(".ts"));
  const distOldest = fs.existsSync(distIndex) ? fs.statSync(distIndex).mtimeMs : 0;
  if (distOldest < srcNewest) {
    log("compiling the TypeScript (dist/ is missing or older than src/)");
    try {
      run("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: ROOT });
    } catch (err) {
      // tsc still emits when it reports type errors; go on with that output if there is one.
      if (!fs.existsSync(distIndex)) throw err;
      log(`WARNING: ${err.message}; using the JavaScript it emitted anyway`);
    }
  }
  const addon = [path.join(ROOT, "build", "Release", "llama_napi.node"), path.join(ROOT, "prebuilds")].find((p) => fs.existsSync(p));
  if (!addon && !process.env.LLAMA_NAPI_BINARY) {
    log("building the native addon (npm run build:native)");
    runLocked("npm", ["run", "build:native"], { cwd: ROOT });
  }
}

/** Installs bench/package.json's pinned dependencies (node-llama-cpp) into bench/node_modules once. */
export function ensureBenchDependencies(log) {
  const pkg = JSON.parse(fs.readFileSync(path.join(BENCH_DIR, "package.json"), "utf8"));
  const wanted = pkg.devDependencies["node-llama-cpp"];
  const installed = path.join(BENCH_DIR, "node_modules", "node-llama-cpp", "package.json");
  if (fs.existsSync(installed) && JSON.parse(fs.readFileSync(installed, "utf8")).version === wanted) return wanted;
  const hasLock = fs.existsSync(path.join(BENCH_DIR, "package-lock.json"));
  // With the lock: `npm install --no-save` installs exactly the locked versions and leaves the lock
  // as it is. (`npm ci` refuses this lock where the registry lacks some other platforms' optional
  // binary packages, which is the case on this project's registry.) Without it: create it.
  const args = hasLock ? ["install", "--no-save"] : ["install"];
  log(`installing node-llama-cpp ${wanted} into bench/node_modules (npm ${args.join(" ")} --prefix bench)`);
  // Its postinstall would look for (or build) a binary; the prebuilt CPU binaries come as
  // optional dependencies, and the worker loads them with build: "never".
  const env = { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: "true" };
  run("npm", [...args, "--prefix", BENCH_DIR, "--no-audit", "--no-fund"], { cwd: BENCH_DIR, env });
  return wanted;
}

function git(args) {
  try {
    return execFileSync("git", args, { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
}

/** What the results were measured on. */
export function describeMachine() {
  const cpus = os.cpus();
  const pin = JSON.parse(fs.readFileSync(path.join(ROOT, "vendor", "llama.cpp.pin.json"), "utf8"));
  const status = git(["status", "--porcelain"]);
  return {
    cpu: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    availableParallelism: os.availableParallelism(),
    memoryBytes: os.totalmem(),
    platform: `${process.platform}-${process.arch}`,
    kernel: os.release(),
    loadAverage: os.loadavg(),
    node: process.version,
    commit: git(["rev-parse", "HEAD"]),
    dirty: status === null ? null : status.length > 0,
    llamaCpp: { commit: pin.commit, ggml: pin.ggmlVersion },
  };
}
