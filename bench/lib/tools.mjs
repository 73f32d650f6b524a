/**
 * The raw llama.cpp side: llama-bench, llama-batched-bench, llama-server, llama-mtmd-cli, llama-lookup and our three small programs
 * (bench/llama-tools), built from vendor/llama.cpp with cmake/llama-options.cmake into
 * bench/.work/llama-build. Built only when missing or older than their sources.
 */
import fs from "node:fs";
import path from "node:path";

import { BENCH_DIR, ROOT, WORK_DIR, run, runLocked } from "./env.mjs";

export const TOOLS_SOURCE = path.join(BENCH_DIR, "llama-tools");
export const TOOLS_BUILD = path.join(WORK_DIR, "llama-build");
const TARGETS = ["llama-bench", "llama-batched-bench", "llama-server", "llama-mtmd-cli", "llama-lookup", "llama-speculative-simple", "tokenize-bench", "load-bench", "media-bench"];

/** Source trees whose changes make the tools stale (ninja is the final judge once it runs). */
const INPUTS = [
  TOOLS_SOURCE,
  path.join(ROOT, "cmake"),
  ...["src", "include", "ggml", "common", "tools/llama-bench", "tools/batched-bench", "tools/server", "tools/mtmd", "examples/lookup", "CMakeLists.txt"].map((p) =>
    path.join(ROOT, "vendor", "llama.cpp", p),
  ),
];

function newestMtime(p) {
  const stat = fs.statSync(p);
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = stat.mtimeMs;
  for (const entry of fs.readdirSync(p, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) newest = Math.max(newest, fs.statSync(path.join(entry.parentPath ?? entry.path, entry.name)).mtimeMs);
  }
  return newest;
}

export function toolPath(name) {
  return path.join(TOOLS_BUILD, "bin", name);
}

/** Builds the tools when one is missing or stale; returns their paths. */
export function ensureTools(log) {
  const paths = Object.fromEntries(TARGETS.map((t) => [t, toolPath(t)]));
  const oldest = Math.min(...TARGETS.map((t) => (fs.existsSync(paths[t]) ? fs.statSync(paths[t]).mtimeMs : 0)));
  const newestInput = Math.max(...INPUTS.filter((p) => fs.existsSync(p)).map(newestMtime));
  if (oldest > newestInput) return paths;

  log(`building ${TARGETS.join(", ")} into ${path.relative(ROOT, TOOLS_BUILD)} (same source and options as the addon)`);
  if (!fs.existsSync(path.join(TOOLS_BUILD, "CMakeCache.txt"))) {
    const ninja = spawnOk("ninja", ["--version"]) ? ["-G", "Ninja"] : [];
    run("cmake", ["-S", TOOLS_SOURCE, "-B", TOOLS_BUILD, ...ninja, "-DCMAKE_BUILD_TYPE=Release"]);
  }
  runLocked("cmake", ["--build", TOOLS_BUILD, "--target", ...TARGETS, "-j2"]);
  for (const t of TARGETS) fs.utimesSync(paths[t], new Date(), new Date()); // ninja may skip an up-to-date link
  return paths;
}

function spawnOk(command, args) {
  try {
    run(command, args, { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * Compares the compile commands of ggml's CPU backend and of llama in the addon's build (build/)
 * and in the tools' build: the flags must match for the comparison to be like for like.
 */
export function compareCompileFlags() {
  const load = (dir) => {
    const file = path.join(dir, "compile_commands.json");
    return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : null;
  };
  const addon = load(path.join(ROOT, "build"));
  const tools = load(TOOLS_BUILD);
  if (!addon || !tools) return { checked: false, reason: "compile_commands.json missing in build/ or the tools' build" };
  const probes = ["ggml/src/ggml-cpu/ggml-cpu.c", "ggml/src/ggml-cpu/ops.cpp", "src/llama-context.cpp"];
  const flags = (db, suffix) => {
    const entry = db.find((e) => e.file.endsWith(suffix));
    if (!entry) return null;
    const words = entry.command ?? entry.arguments.join(" ");
    // Keep what changes code generation: defines, -f/-m/-O/-std flags; drop paths and outputs.
    return words
      .split(/\s+/)
      .filter((w) => /^-(D|O|f|m|std=|g$)/.test(w) && !w.startsWith("-DBUILDING_NODE_EXTENSION"))
      .filter((w) => !w.startsWith("-fdiagnostics"))
      .sort();
  };
  const differences = [];
  for (const probe of probes) {
    const a = flags(addon, probe);
    const b = flags(tools, probe);
    if (!a || !b) {
      differences.push({ file: probe, missing: !a ? "addon" : "tools" });
      continue;
    }
    const onlyAddon = a.filter((w) => !b.includes(w));
    const onlyTools = b.filter((w) => !a.includes(w));
    if (onlyAddon.length || onlyTools.length) differences.push({ file: probe, onlyAddon, onlyTools });
  }
  return { checked: true, identical: differences.length === 0, files: probes, differences };
}
