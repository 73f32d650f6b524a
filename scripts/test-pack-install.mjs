#!/usr/bin/env node
/**
 * Installs llama-napi the way a user does, on a machine without a compiler, and runs it.
 *
 *  1. prepack (dist/, vendor check) and `npm pack` of this checkout;
 *  2. when prebuilds/<platform>-<arch>/ is missing, the current build/Release is staged into the
 *     tarball as the prebuild (said so in the output: it tests the mechanism, with this machine's
 *     source build instead of the distributable one);
 *  3. `npm install <tarball>` into an empty project with a PATH holding only `node` (no cc, c++,
 *     gcc, g++, clang, cmake, make, sh: checked), npm run as `node npm-cli.js`; the package has
 *     no install script, so nothing is built;
 *  4. `llama-napi info --json` (the prebuilt binary must be the one in use), `make-gpt2` and a
 *     greedy `generate` with the installed CLI;
 *  5. without a fitting prebuild, the loader's error must say how to build from source, and
 *     `llama-napi build` must say that cmake is missing;
 *  6. cmake configures the installed package's pruned llama.cpp sources (with the full PATH):
 *     everything CMake needs to rebuild is in the tarball. --full-build compiles it too (slow).
 *
 * Usage: node scripts/test-pack-install.mjs [--keep] [--full-build]. Exit 0 when every check passes.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const tuple = `${process.platform}-${process.arch}`;
const keep = process.argv.includes("--keep");
const fullBuild = process.argv.includes("--full-build");
const HIDDEN = ["cc", "c++", "gcc", "g++", "clang", "clang++", "cmake", "make", "ninja", "sh", "git"];
const started = Date.now();
let failures = 0;

function log(message) {
  process.stdout.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${message}\n`);
}

function check(ok, message, detail = "") {
  if (ok) log(`ok   ${message}`);
  else {
    failures++;
    log(`FAIL ${message}${detail ? `\n${detail}` : ""}`);
  }
  return ok;
}

function exec(file, args, options = {}) {
  const r = spawnSync(file, args, { encoding: "utf8", maxBuffer: 256 * 1024 * 1024, ...options });
  if (r.error) return { status: -1, stdout: "", stderr: String(r.error) };
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function must(r, what) {
  if (r.status !== 0) {
    check(false, what, `${r.stdout}\n${r.stderr}`.trim().slice(-4000));
    finish();
  }
  return r;
}

function npmCli() {
  const candidates = [
    process.env.npm_execpath,
    path.join(path.dirname(process.execPath), "..", "lib", "node_modules", "npm", "bin", "npm-cli.js"),
    path.join(path.dirname(process.execPath), "node_modules", "npm", "bin", "npm-cli.js"),
  ];
  const found = candidates.find((c) => c && c.endsWith("npm-cli.js") && fs.existsSync(c));
  if (!found) throw new Error("npm-cli.js not found next to node");
  return found;
}

/** The first executable called `name` on `pathVar`, or undefined. */
function which(name, pathVar) {
  for (const dir of pathVar.split(path.delimiter)) {
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {
      // not there
    }
  }
  return undefined;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-pack-"));
function finish() {
  if (!keep) fs.rmSync(tmp, { recursive: true, force: true });
  else log(`kept ${tmp}`);
  log(failures === 0 ? "all checks passed" : `${failures} check(s) failed`);
  process.exit(failures === 0 ? 0 : 1);
}

// 1. prepack and pack (scripts off: `prepare` would build the native addon from source).
log(`packing ${root}`);
must(exec(process.execPath, [path.join(root, "scripts", "prepack.mjs")], { cwd: root }), "prepack");
const packed = must(exec(process.execPath, [npmCli(), "pack", "--ignore-scripts", "--json", "--pack-destination", tmp], { cwd: root }), "npm pack");
const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("[")))[0];
let tarball = path.join(tmp, info.filename);
log(`packed ${info.filename}: ${info.entryCount} files, ${(info.size / 1048576).toFixed(1)} MiB (${(info.unpackedSize / 1048576).toFixed(1)} MiB unpacked)`);
const manifest = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"));
check(!["preinstall", "install", "postinstall"].some((s) => manifest.scripts?.[s]), "package.json has no install scripts for consumers");
const paths = info.files.map((f) => f.path);
check(!paths.includes("binding.gyp"), "no binding.gyp (npm would run node-gyp rebuild on install)");
check(paths.includes("vendor/llama.cpp/.llama-napi-vendor.json") && paths.includes("vendor/llama.cpp/CMakeLists.txt"), "the pruned llama.cpp sources and their stamp are in the tarball");
check(!paths.some((p) => /^vendor\/llama\.cpp\/(?:(?:tests|docs|examples|\.git)\/|tools\/(?!mtmd\/))/.test(p)), "no llama.cpp tests, docs, examples, tools (but libmtmd's sources) or .git in the tarball");
check(!paths.some((p) => /^vendor\/llama\.cpp\/tools\/mtmd\/(tests\/|legacy-models\/|test-)/.test(p)), "no libmtmd test media or legacy converters in the tarball");

// 2. the prebuild: shipped, or staged from build/Release.
const shipped = paths.filter((p) => p.startsWith(`prebuilds/${tuple}/`));
if (shipped.some((p) => p.endsWith(".node"))) {
  log(`the tarball ships prebuilds/${tuple}/ (${shipped.length} files)`);
} else {
  const release = path.join(root, "build", "Release");
  const addon = fs.existsSync(release) ? fs.readdirSync(release).find((f) => f.endsWith(".node")) : undefined;
  if (!addon) {
    check(false, `no prebuilds/${tuple}/ and no build/Release to stage: run \`npm run prebuilds\` or \`npm run build\``);
    finish();
  }
  log(`NOTE: no prebuilds/${tuple}/ in this checkout: staging build/Release (this machine's source build) as the prebuild, to test the mechanism`);
  const unpacked = path.join(tmp, "unpacked");
  fs.mkdirSync(unpacked);
  must(exec("tar", ["-xzf", tarball, "-C", unpacked]), "unpack the tarball");
  const dest = path.join(unpacked, "package", "prebuilds", tuple);
  fs.mkdirSync(dest, { recursive: true });
  for (const f of fs.readdirSync(release)) {
    // No libc tag: node-gyp-build takes an untagged prebuild on glibc and musl alike.
    if (f === addon) fs.copyFileSync(path.join(release, f), path.join(dest, "llama-napi.napi.node"));
    else if (/\.(so|dylib|dll)$/.test(f)) fs.copyFileSync(path.join(release, f), path.join(dest, f));
  }
  const repacked = must(exec(process.execPath, [npmCli(), "pack", "--ignore-scripts", "--json", "--pack-destination", tmp], { cwd: path.join(unpacked, "package") }), "repack");
  tarball = path.join(tmp, JSON.parse(repacked.stdout.slice(repacked.stdout.indexOf("[")))[0].filename);
}

// 3. an empty project, a PATH with node only.
const bin = path.join(tmp, "bin");
fs.mkdirSync(bin);
fs.symlinkSync(process.execPath, path.join(bin, process.platform === "win32" ? "node.exe" : "node"));
const env = { ...process.env, PATH: bin };
for (const key of Object.keys(env)) if (key.startsWith("npm_") || key === "INIT_CWD" || key === "LLAMA_NAPI_BINARY") delete env[key];
for (const name of HIDDEN) {
  check(which(name, env.PATH) === undefined && exec(name, ["--version"], { env }).status !== 0, `\`${name}\` is not available in the install environment`);
}
const app = path.join(tmp, "app");
fs.mkdirSync(app);
fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", private: true, type: "module" }, null, 2));
log(`npm install ${path.basename(tarball)} (PATH=${bin})`);
const installed = exec(process.execPath, [npmCli(), "install", tarball, "--no-audit", "--no-fund", "--foreground-scripts"], { cwd: app, env });
if (!check(installed.status === 0, "npm install of the tarball with no compiler, cmake or shell", `${installed.stdout}\n${installed.stderr}`)) finish();
check(!/node-gyp|cmake-js (build|configure)|> llama-napi@.* (prepare|install)/.test(installed.stdout + installed.stderr), "npm ran no build and no install script (prepare does not run for tarballs)");
const pkgDir = path.join(app, "node_modules", "llama-napi");
const cli = path.join(pkgDir, "dist", "cli", "main.js");

// 4. info, make-gpt2, generate.
const infoRun = must(exec(process.execPath, [cli, "info", "--json"], { cwd: app, env }), "llama-napi info --json");
const sys = JSON.parse(infoRun.stdout);
check(sys.prebuilt === true && sys.binary.startsWith(path.join(pkgDir, "prebuilds", tuple)), `the prebuilt binary is in use (${path.relative(app, sys.binary)}, CPU variant ${sys.cpuVariant})`);
const model = path.join(app, "tiny.gguf");
must(exec(process.execPath, [cli, "make-gpt2", model, "--preset", "tiny", "--seed", "3"], { cwd: app, env }), "llama-napi make-gpt2");
const gen = must(exec(process.execPath, [cli, "generate", "-m", model, "-p", "Hello, my name is", "-n", "12", "--temp", "0", "-t", "2"], { cwd: app, env }), "llama-napi generate");
check(gen.stdout.startsWith("Hello, my name is") && gen.stdout.trim().length > "Hello, my name is".length, `generate ran: ${JSON.stringify(gen.stdout.trim().slice(0, 120))}`);
const api = exec(process.execPath, ["--input-type=module", "-e", `import { loadModel } from "llama-napi"; const m = await loadModel(${JSON.stringify(model)}); const c = await m.createContext({ contextSize: 64, threads: 2 }); const s = c.createSession(); await s.prompt("Hello, my name is"); const r = await s.generate({ temperature: 0, maxTokens: 12 }).collect(); console.log(r.text); m.dispose();`], { cwd: app, env });
check(api.status === 0 && gen.stdout.includes(api.stdout.trim()), "the API from `import \"llama-napi\"` generates the same greedy text", api.stderr);

// 5. no fitting prebuild: the loader's message, and `llama-napi build` without cmake.
const prebuildsDir = path.join(pkgDir, "prebuilds");
fs.renameSync(prebuildsDir, `${prebuildsDir}.off`);
const missing = exec(process.execPath, ["--input-type=module", "-e", 'import { systemInfo } from "llama-napi"; try { systemInfo(); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }'], { cwd: app, env });
const err = missing.status === 0 && missing.stdout.trim() ? JSON.parse(missing.stdout) : {};
check(err.code === "ERR_NATIVE_LOAD" && err.message.includes("npx llama-napi build"), "without a fitting prebuild the loader says to run `npx llama-napi build`", JSON.stringify(err));
const build = exec(process.execPath, [cli, "build"], { cwd: app, env });
check(build.status === 1 && /cmake was not found on PATH/.test(build.stderr), "`llama-napi build` without cmake says what to install", build.stderr);
fs.renameSync(`${prebuildsDir}.off`, prebuildsDir);

// 6. the pruned sources configure (and with --full-build, compile) with the real PATH.
const cmakeJs = createRequire(path.join(pkgDir, "package.json")).resolve("cmake-js/bin/cmake-js");
if (which("cmake", process.env.PATH ?? "")) {
  const cfg = exec(process.execPath, [cmakeJs, "configure", "--directory", pkgDir, "--out", path.join(tmp, "cfg")], { cwd: app });
  check(cfg.status === 0, "cmake configures the installed package's pruned llama.cpp sources", `${cfg.stdout}\n${cfg.stderr}`.slice(-4000));
  if (fullBuild) {
    const b = exec(process.execPath, [cli, "build"], { cwd: app, stdio: "inherit" });
    check(b.status === 0, "`llama-napi build` compiles the installed package from its pruned sources");
    const after = exec(process.execPath, [cli, "info", "--json"], { cwd: app });
    check(after.status === 0 && JSON.parse(after.stdout).prebuilt === false, "after `llama-napi build` the source build is the one in use");
  }
} else {
  log("skipped: cmake is not installed here, so the pruned sources were not configured");
}
finish();
