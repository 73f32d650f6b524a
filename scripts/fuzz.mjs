#!/usr/bin/env node
/**
 * npm run fuzz [-- options]: builds the native libFuzzer targets of tests/fuzz/native/ with clang
 * (ASan + UBSan, llama.cpp and ggml included) into build-fuzz/ and runs each for a fixed budget.
 *
 *   fuzz-gguf    ggml's GGUF reader
 *   fuzz-loader  the addon's load path: GgufCheck (native/GgufCheck.cc) then llama.cpp's loader
 *
 * Inputs: the committed corpus (tests/fuzz/native/corpus/<target>/, minimised) and seeds made
 * by tests/fuzz/native/make-seeds.ts (small complete models of three tokenizer families). New
 * inputs go to build-fuzz/corpus/<target>/; a crash is saved to build-fuzz/artifacts/ and fails
 * the run.
 *
 *   --seconds N    budget per target (default 30)
 *   --target NAME  only this target (fuzz-gguf or fuzz-loader)
 *   --merge        afterwards, minimise everything found into the committed corpus
 *   --jobs N       parallel compile jobs (default: the CPU count)
 *   --skip-build
 *
 * --ts N runs the TypeScript fuzzer instead (tests/fuzz/run-fuzz.ts, the addon of build/ as
 * loadModel uses it, no clang needed): N structure-aware mutants (tests/fuzz/structure.ts) of
 * small models, each loaded and, when it loads, run through a context, a prompt and a few
 * generated tokens. Every mutant must work or be refused with a LlamaError; crashes and hangs
 * are saved to tests/fuzz/new-failures/ and fail the run. With it: --ts-seed S (default 25),
 * --mutator structure|bytes|both (default structure), --json FILE (the figures).
 *
 * --media N runs the media fuzz (tests/fuzz/media-fuzz.ts through run-fuzz.ts --media): N
 * mutants of the gemma3 and ultravox fixture projectors (hyperparameters, key types, tensor
 * shapes and types, projector types) and of PNG, JPEG, WAV and MP3 files, each loaded with a
 * text model and run through a prompt and 2 generated tokens, plus every projector type over
 * both projectors. Crashes and hangs are saved to tests/fuzz/new-failures/ and fail the run.
 * With it: --ts-seed S, --json FILE.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const source = path.join(root, "tests", "fuzz", "native");
const buildDir = path.join(root, "build-fuzz");
const lockFile = "/tmp/llama-napi-build.lock";
const TARGETS = ["fuzz-gguf", "fuzz-loader"];

const argv = process.argv.slice(2);
const flag = (name) => {
  const i = argv.indexOf(name);
  if (i >= 0) argv.splice(i, 1);
  return i >= 0;
};
const option = (name, fallback) => {
  const i = argv.indexOf(name);
  if (i < 0) return fallback;
  return argv.splice(i, 2)[1];
};
const tsCount = option("--ts", undefined);
const mediaCount = option("--media", undefined);
const tsSeed = option("--ts-seed", "25");
const tsMutator = option("--mutator", "structure");
const tsJson = option("--json", undefined);
const seconds = Number(option("--seconds", "30"));
const only = option("--target", undefined);
const merge = flag("--merge");
const skipBuild = flag("--skip-build");
const jobs = Number(option("--jobs", String(os.availableParallelism())));
if (argv.length > 0) {
  console.error(`fuzz: unknown arguments ${argv.join(" ")}`);
  process.exit(2);
}
if (mediaCount !== undefined) {
  // The media fuzz through decode (tests/fuzz/run-fuzz.ts --media); no native fuzz build.
  const args = ["--import", path.join(root, "tests/helpers/register-ts-cached.mjs"), path.join(root, "tests/fuzz/run-fuzz.ts"), "--media",
    "--count", mediaCount, "--seed", tsSeed, "--save", path.join(root, "tests", "fuzz", "new-failures"), ...(tsJson ? ["--json", tsJson] : [])];
  process.exit(run(process.execPath, args, { env: { ...process.env, LLAMA_NAPI_LOG_LEVEL: "none" } }));
}
if (tsCount !== undefined) {
  // The TypeScript fuzzer through decode (tests/fuzz/run-fuzz.ts); no native fuzz build.
  const args = ["--import", path.join(root, "tests/helpers/register-ts-cached.mjs"), path.join(root, "tests/fuzz/run-fuzz.ts"),
    "--count", tsCount, "--seed", tsSeed, "--mutator", tsMutator, "--save", path.join(root, "tests", "fuzz", "new-failures"),
    ...(tsJson ? ["--json", tsJson] : [])];
  process.exit(run(process.execPath, args, { env: { ...process.env, LLAMA_NAPI_LOG_LEVEL: "none" } }));
}
const targets = only ? [only] : TARGETS;
for (const t of targets) {
  if (!TARGETS.includes(t)) {
    console.error(`fuzz: unknown target ${t}; use ${TARGETS.join(" or ")}`);
    process.exit(2);
  }
}

function run(cmd, args, opts = {}) {
  console.log(`$ ${[cmd, ...args].join(" ")}`);
  const r = spawnSync(cmd, args, { stdio: "inherit", cwd: root, ...opts });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

function locked(cmd, args) {
  const hasFlock = spawnSync("flock", ["--version"], { stdio: "ignore" }).status === 0;
  return hasFlock ? run("flock", [lockFile, cmd, ...args]) : run(cmd, args);
}

function build() {
  for (const tool of ["clang", "clang++", "cmake"]) {
    if (spawnSync(tool, ["--version"], { stdio: "ignore" }).status !== 0) {
      console.error(`fuzz: ${tool} is missing (Debian: apt-get install clang libclang-rt-14-dev cmake)`);
      process.exit(1);
    }
  }
  const ninja = spawnSync("ninja", ["--version"], { stdio: "ignore" }).status === 0;
  if (!fs.existsSync(path.join(buildDir, "CMakeCache.txt"))) {
    const status = run("cmake", [
      "-S", source, "-B", buildDir, ...(ninja ? ["-G", "Ninja"] : []),
      "-DCMAKE_C_COMPILER=clang", "-DCMAKE_CXX_COMPILER=clang++", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
    ]);
    if (status !== 0) process.exit(status);
  }
  const status = locked("cmake", ["--build", buildDir, "--parallel", String(jobs), "--target", ...targets]);
  if (status !== 0) {
    console.error("fuzz: the build failed");
    process.exit(status);
  }
}

/** Seeds (small complete models) and a dictionary of the GGUF keys they use. */
function prepareInputs() {
  const seeds = path.join(buildDir, "seeds");
  if (!fs.existsSync(seeds) || fs.readdirSync(seeds).length === 0) {
    const status = run(process.execPath, ["--import", path.join(root, "tests/helpers/register-ts-cached.mjs"), path.join(source, "make-seeds.ts"), seeds]);
    if (status !== 0) process.exit(status);
  }
  const dict = path.join(buildDir, "gguf.dict");
  const words = new Set(["GGUF", "general.architecture", "general.alignment", "tokenizer.ggml.model"]);
  for (const f of fs.readdirSync(seeds)) {
    const bytes = fs.readFileSync(path.join(seeds, f));
    // Printable runs of the header: the keys and the string values (architectures, tokenizers).
    for (const m of bytes.toString("latin1").matchAll(/[a-z_][a-z0-9_.]{3,63}/g)) {
      if (m[0].includes(".") || ["gpt2", "llama", "bert", "spm", "bpe", "wpm"].includes(m[0])) words.add(m[0]);
    }
  }
  const escape = (w) => w.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
  fs.writeFileSync(dict, [...words].map((w) => `"${escape(w)}"`).join("\n") + "\n");
  return { seeds, dict };
}

function fuzz(target, inputs) {
  const committed = path.join(source, "corpus", target);
  const work = path.join(buildDir, "corpus", target);
  const artifacts = path.join(buildDir, "artifacts");
  fs.mkdirSync(committed, { recursive: true });
  fs.mkdirSync(work, { recursive: true });
  fs.mkdirSync(artifacts, { recursive: true });
  const binary = path.join(buildDir, target);
  const env = {
    ...process.env,
    ASAN_OPTIONS: "detect_leaks=1:allocator_may_return_null=1:abort_on_error=0",
    UBSAN_OPTIONS: "halt_on_error=1:print_stacktrace=1",
  };
  const status = run(binary, [
    `-max_total_time=${seconds}`, "-max_len=65536", "-timeout=20", "-rss_limit_mb=3072", "-print_final_stats=1",
    `-dict=${inputs.dict}`, `-artifact_prefix=${artifacts}/${target}-`,
    work, committed, inputs.seeds,
  ], { env });
  if (merge) {
    // Minimise: the smallest set of inputs with the same coverage, into the committed corpus.
    const next = `${committed}.next`;
    fs.rmSync(next, { recursive: true, force: true });
    fs.mkdirSync(next);
    const m = run(binary, ["-merge=1", `-dict=${inputs.dict}`, next, committed, work, inputs.seeds], { env });
    if (m === 0) {
      fs.rmSync(committed, { recursive: true, force: true });
      fs.renameSync(next, committed);
    }
  }
  return status;
}

if (!skipBuild) build();
const inputs = prepareInputs();
// Each run reports its own crashes (copy build-fuzz/artifacts/ away to keep older ones).
fs.rmSync(path.join(buildDir, "artifacts"), { recursive: true, force: true });
const failed = [];
for (const target of targets) {
  if (fuzz(target, inputs) !== 0) failed.push(target);
}
const crashes = fs.existsSync(path.join(buildDir, "artifacts")) ? fs.readdirSync(path.join(buildDir, "artifacts")) : [];
if (failed.length > 0 || crashes.length > 0) {
  console.error(`fuzz: failures in ${failed.join(", ") || "an earlier run"}; inputs saved in build-fuzz/artifacts/: ${crashes.join(", ")}`);
  process.exit(1);
}
console.log(`fuzz: ${targets.join(", ")}: ${seconds} s each, no crash`);
