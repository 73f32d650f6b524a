#!/usr/bin/env node
/**
 * The release set as users get it: scripts/pack-platforms.mjs packs the main package and one
 * package per platform, and npm installs them the way it would from the registry.
 *
 *  1. A prebuilds folder in a temporary directory: this checkout's prebuilds/<tuple>/ for each
 *     platform that has one; for linux-x64 without one, build/Release staged as the prebuild (said
 *     so: it tests the mechanism with this machine's source build); for linux-arm64 and win32-x64
 *     without one, a FAKE folder (a dummy .node file and a dummy library: enough for the layout
 *     checks, never loaded); and a FAKE libggml-cuda.so (not a library) in the host's folder,
 *     which pack-platforms moves into @llama-napi/linux-x64-cuda.
 *  2. `npm run pack:platforms` into that directory.
 *  3. A registry for the @llama-napi scope on 127.0.0.1 (this script serves the packuments and
 *     tarballs it just made; every other package comes from the npm registry or npm's cache):
 *     what `npm install llama-napi` does once the platform packages are published.
 *  4. For foreign platforms, `npm install <main tarball> --os=linux --cpu=arm64 --libc=glibc` and
 *     `--os=win32 --cpu=x64`: exactly the fitting platform package arrives, with its files; the
 *     others and the CUDA package do not.
 *  5. For this platform, with a PATH that holds only `node`: the fitting package arrives; the
 *     installed CLI and API load the addon from it and generate; without it, the loader's
 *     ERR_NATIVE_LOAD names the package to install; with the CUDA package installed beside it,
 *     the addon hands that module to ggml (here a fake one, so it gives no device) and still
 *     generates on the CPU.
 *
 * Usage: node scripts/test-pack-platforms.mjs [--keep]. Exit 0 when every check passes.
 */
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const execFileAsync = promisify(execFile);
const keep = process.argv.includes("--keep");
const host = `${process.platform}-${process.arch}`;
const manifest = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"));
const version = manifest.version;
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

async function exec(file, args, options = {}) {
  try {
    const { stdout, stderr } = await execFileAsync(file, args, { encoding: "utf8", maxBuffer: 256 * 1024 * 1024, ...options });
    return { status: 0, stdout, stderr };
  } catch (err) {
    return { status: typeof err.code === "number" ? err.code : -1, stdout: err.stdout ?? "", stderr: err.stderr ?? String(err) };
  }
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

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-platforms-"));
let server;
function finish() {
  server?.close();
  if (!keep) fs.rmSync(tmp, { recursive: true, force: true });
  else log(`kept ${tmp}`);
  log(failures === 0 ? "all checks passed" : `${failures} check(s) failed`);
  process.exit(failures === 0 ? 0 : 1);
}

function must(r, what) {
  if (r.status !== 0) {
    check(false, what, `${r.stdout}\n${r.stderr}`.trim().slice(-4000));
    finish();
  }
  return r;
}

const place = (from, to) => {
  try {
    fs.linkSync(from, to);
  } catch {
    fs.copyFileSync(from, to);
  }
};

// 1. The prebuilds folder to pack.
const prebuilds = path.join(tmp, "prebuilds");
const fakes = [];
for (const tuple of [...new Set([host, "linux-x64", "linux-arm64", "win32-x64"])]) {
  const dest = path.join(prebuilds, tuple);
  fs.mkdirSync(dest, { recursive: true });
  const real = path.join(root, "prebuilds", tuple);
  if (fs.existsSync(real) && fs.readdirSync(real).some((f) => f.endsWith(".node"))) {
    for (const f of fs.readdirSync(real)) if (fs.statSync(path.join(real, f)).isFile()) place(path.join(real, f), path.join(dest, f));
    log(`prebuilds/${tuple}: this checkout's (${fs.readdirSync(dest).length} files)`);
  } else if (tuple === host) {
    const release = path.join(root, "build", "Release");
    const addon = fs.existsSync(release) ? fs.readdirSync(release).find((f) => f.endsWith(".node")) : undefined;
    if (!addon) {
      check(false, `no prebuilds/${host}/ and no build/Release to stage: run \`npm run prebuilds\` or \`npm run build\``);
      finish();
    }
    const tag = process.platform === "linux" ? ".glibc" : "";
    for (const f of fs.readdirSync(release)) {
      if (f === addon) place(path.join(release, f), path.join(dest, `llama-napi${tag}.node`));
      else if (/\.(so|dylib|dll)$/.test(f)) place(path.join(release, f), path.join(dest, f));
    }
    log(`NOTE: no prebuilds/${host}/ in this checkout: staging build/Release (this machine's source build) as its prebuild, to test the mechanism`);
  } else {
    // FAKE: a stand-in for a platform not built here, for the layout checks only (never loaded).
    const windows = tuple.startsWith("win32");
    fs.writeFileSync(path.join(dest, windows ? "llama-napi.node" : "llama-napi.glibc.node"), `fake ${tuple} addon\n`);
    fs.writeFileSync(path.join(dest, windows ? "llama.dll" : "libllama.so"), `fake ${tuple} library\n`);
    fakes.push(tuple);
    log(`NOTE: no prebuilds/${tuple}/ in this checkout: a FAKE one (a dummy addon and library) for the layout checks`);
  }
}
const hostLib = process.platform === "win32" ? "ggml-cuda.dll" : process.platform === "darwin" ? "libggml-cuda.so" : "libggml-cuda.so";
const realCuda = fs.existsSync(path.join(prebuilds, host, hostLib));
if (!realCuda) fs.writeFileSync(path.join(prebuilds, host, hostLib), "FAKE: not a library\n");
log(`${realCuda ? "" : "FAKE "}${hostLib} in prebuilds/${host}: it goes into @llama-napi/${host}-cuda`);

// 2. Pack the set.
const out = path.join(tmp, "out");
const packed = must(await exec(process.execPath, [path.join(root, "scripts", "pack-platforms.mjs"), "--prebuilds", prebuilds, "--out", out, "--json"], { cwd: root }), "npm run pack:platforms");
const summary = JSON.parse(packed.stdout);
for (const line of packed.stderr.trim().split("\n")) log(line);
const byName = new Map(summary.packages.map((p) => [p.name, p]));
const cpuNames = summary.packages.filter((p) => p.kind === "cpu").map((p) => p.name).sort();
const mainPkg = byName.get("llama-napi");
const hostPkg = `@llama-napi/${host}`;
check(
  JSON.stringify(cpuNames) === JSON.stringify(["@llama-napi/linux-arm64", "@llama-napi/linux-x64", "@llama-napi/win32-x64", hostPkg].filter((v, i, a) => a.indexOf(v) === i).sort()),
  `one CPU package per platform: ${cpuNames.join(", ")}`,
);
check(byName.get(`${hostPkg}-cuda`)?.kind === "cuda", `the CUDA module is its own package, ${hostPkg}-cuda`);
const mainManifest = JSON.parse(fs.readFileSync(path.join(out, "llama-napi", "package.json"), "utf8"));
check(
  JSON.stringify(Object.keys(mainManifest.optionalDependencies ?? {}).sort()) === JSON.stringify(cpuNames) &&
    Object.values(mainManifest.optionalDependencies).every((v) => v === version),
  `the main package's optionalDependencies are the CPU packages at ${version}, not the CUDA one`,
);
const mainTar = await exec("tar", ["-tzf", path.join(out, mainPkg.tarball)]);
check(mainTar.status === 0 && !mainTar.stdout.includes("package/prebuilds/") && !/\.node\n/.test(mainTar.stdout), "the main tarball has no binaries");
for (const p of summary.packages.filter((q) => q.kind !== "main")) {
  const m = JSON.parse(fs.readFileSync(path.join(out, p.name.slice("@llama-napi/".length), "package.json"), "utf8"));
  const [platform, arch] = p.name.slice("@llama-napi/".length).split("-");
  check(
    m.os?.[0] === platform && m.cpu?.[0] === arch && (platform === "linux" ? m.libc?.[0] === "glibc" : m.libc === undefined) && m.version === version,
    `${p.name}: os ${m.os}, cpu ${m.cpu}${m.libc ? `, libc ${m.libc}` : ""}, main ${m.main}`,
  );
}

// 3. A registry for the @llama-napi scope.
const tarballs = new Map();
const packuments = new Map();
server = http.createServer((req, res) => {
  const url = decodeURIComponent((req.url ?? "/").split("?")[0]);
  const tarball = tarballs.get(url);
  if (tarball) {
    res.writeHead(200, { "content-type": "application/octet-stream" });
    res.end(fs.readFileSync(tarball));
    return;
  }
  const packument = packuments.get(url.slice(1));
  if (packument) {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(packument));
    return;
  }
  res.writeHead(404, { "content-type": "application/json" });
  res.end('{"error":"not found"}');
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const registry = `http://127.0.0.1:${server.address().port}/`;
for (const p of summary.packages.filter((q) => q.kind !== "main")) {
  const file = path.join(out, p.tarball);
  const bytes = fs.readFileSync(file);
  const m = JSON.parse(fs.readFileSync(path.join(out, p.name.slice("@llama-napi/".length), "package.json"), "utf8"));
  tarballs.set(`/-/${p.tarball}`, file);
  packuments.set(p.name, {
    name: p.name,
    "dist-tags": { latest: version },
    versions: {
      [version]: {
        ...m,
        _id: `${p.name}@${version}`,
        dist: {
          tarball: `${registry}-/${p.tarball}`,
          integrity: `sha512-${crypto.createHash("sha512").update(bytes).digest("base64")}`,
          shasum: crypto.createHash("sha1").update(bytes).digest("hex"),
        },
      },
    },
  });
}
log(`registry for @llama-napi on ${registry}`);

const npmArgs = ["--no-audit", "--no-fund", "--prefer-offline", `--@llama-napi:registry=${registry}`];
function project(name) {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name, version: "1.0.0", private: true, type: "module" }, null, 2));
  return dir;
}
function installedPlatformPackages(dir) {
  const scope = path.join(dir, "node_modules", "@llama-napi");
  return fs.existsSync(scope) ? fs.readdirSync(scope).sort() : [];
}
const mainTarball = path.join(out, mainPkg.tarball);

// 4. Foreign platforms.
for (const target of [
  { os: "linux", cpu: "arm64", libc: "glibc", expect: "linux-arm64" },
  { os: "win32", cpu: "x64", expect: "win32-x64" },
]) {
  const dir = project(`app-${target.expect}`);
  const flags = [`--os=${target.os}`, `--cpu=${target.cpu}`, ...(target.libc ? [`--libc=${target.libc}`] : [])];
  log(`npm install ${mainPkg.tarball} ${flags.join(" ")}`);
  const r = await exec(process.execPath, [npmCli(), "install", mainTarball, ...flags, ...npmArgs], { cwd: dir });
  if (!check(r.status === 0, `npm install ${flags.join(" ")}`, `${r.stdout}\n${r.stderr}`)) continue;
  const present = installedPlatformPackages(dir);
  check(JSON.stringify(present) === JSON.stringify([target.expect]), `${flags.join(" ")}: only @llama-napi/${target.expect} arrives (${present.join(", ") || "none"})`);
  const pkgDir = path.join(dir, "node_modules", "@llama-napi", target.expect);
  const wanted = fs.readdirSync(path.join(out, target.expect)).sort();
  const got = fs.existsSync(pkgDir) ? fs.readdirSync(pkgDir).sort() : [];
  check(JSON.stringify(got) === JSON.stringify(wanted), `@llama-napi/${target.expect} holds its files: ${got.filter((f) => /\.(node|so|dll|dylib)$/.test(f)).length} binaries${fakes.includes(target.expect) ? " (FAKE)" : ""}`);
  check(!fs.existsSync(path.join(dir, "node_modules", "llama-napi", "prebuilds")), "the main package brings no prebuilds/");
  if (target.expect === "linux-arm64") {
    // The lock file made for linux-arm64, installed here with `npm ci`: it lists every platform
    // package (optional, with os/cpu/libc), and npm ci must pick this machine's (npm/cli#4828).
    const ci = project("app-ci-from-arm64-lock");
    fs.copyFileSync(path.join(dir, "package-lock.json"), path.join(ci, "package-lock.json"));
    fs.writeFileSync(path.join(ci, "package.json"), fs.readFileSync(path.join(dir, "package.json"), "utf8").replace(`"name": "${path.basename(dir)}"`, `"name": "${path.basename(ci)}"`));
    const lock = JSON.parse(fs.readFileSync(path.join(ci, "package-lock.json"), "utf8"));
    lock.name = path.basename(ci);
    if (lock.packages?.[""]) lock.packages[""].name = path.basename(ci);
    fs.writeFileSync(path.join(ci, "package-lock.json"), JSON.stringify(lock, null, 2));
    const inLock = Object.keys(lock.packages ?? {}).filter((k) => k.startsWith("node_modules/@llama-napi/")).map((k) => k.slice("node_modules/@llama-napi/".length)).sort();
    check(JSON.stringify(inLock) === JSON.stringify(cpuNames.map((n) => n.slice("@llama-napi/".length))), `the lock file made for linux-arm64 lists every platform package (${inLock.join(", ")})`);
    const r2 = await exec(process.execPath, [npmCli(), "ci", ...npmArgs], { cwd: ci });
    check(
      r2.status === 0 && JSON.stringify(installedPlatformPackages(ci)) === JSON.stringify([host]),
      `\`npm ci\` here from that lock file installs only ${hostPkg} (${installedPlatformPackages(ci).join(", ") || "none"})`,
      `${r2.stdout}\n${r2.stderr}`,
    );
  }
}

// 5. This platform, with a PATH that holds only node.
const bin = path.join(tmp, "bin");
fs.mkdirSync(bin);
fs.symlinkSync(process.execPath, path.join(bin, process.platform === "win32" ? "node.exe" : "node"));
const env = { ...process.env, PATH: bin };
for (const key of Object.keys(env)) if (key.startsWith("npm_") || key === "INIT_CWD" || key === "LLAMA_NAPI_BINARY" || key === "GGML_BACKEND_PATH") delete env[key];
const app = project("app-host");
log(`npm install ${mainPkg.tarball} (this platform, PATH=${bin})`);
const installed = await exec(process.execPath, [npmCli(), "install", mainTarball, ...npmArgs], { cwd: app, env });
if (!check(installed.status === 0, "npm install on this platform with no compiler", `${installed.stdout}\n${installed.stderr}`)) finish();
check(JSON.stringify(installedPlatformPackages(app)) === JSON.stringify([host]), `only ${hostPkg} arrives (${installedPlatformPackages(app).join(", ")})`);
const hostDir = path.join(app, "node_modules", "@llama-napi", host);
const cli = path.join(app, "node_modules", "llama-napi", "dist", "cli", "main.js");
const info = must(await exec(process.execPath, [cli, "info", "--json"], { cwd: app, env }), "llama-napi info --json");
const sys = JSON.parse(info.stdout);
check(
  sys.origin === "package" && sys.prebuilt === true && path.dirname(sys.binary) === hostDir && /^prebuilt binary \(platform package\)/.test(sys.buildMode),
  `the addon comes from ${hostPkg} (${path.relative(app, sys.binary)}, CPU variant ${sys.cpuVariant})`,
  JSON.stringify({ origin: sys.origin, binary: sys.binary, buildMode: sys.buildMode }),
);
const model = path.join(app, "tiny.gguf");
must(await exec(process.execPath, [cli, "make-gpt2", model, "--preset", "tiny", "--seed", "3"], { cwd: app, env }), "llama-napi make-gpt2");
const gen = must(await exec(process.execPath, [cli, "generate", "-m", model, "-p", "Hello, my name is", "-n", "12", "--temp", "0", "-t", "2"], { cwd: app, env }), "llama-napi generate");
check(gen.stdout.startsWith("Hello, my name is") && gen.stdout.trim().length > "Hello, my name is".length, `generate ran: ${JSON.stringify(gen.stdout.trim().slice(0, 120))}`);
const apiScript = `import { loadModel, systemInfo } from "llama-napi"; const m = await loadModel(${JSON.stringify(model)}); const c = await m.createContext({ contextSize: 64, threads: 2 }); const s = c.createSession(); await s.prompt("Hello, my name is"); const r = await s.generate({ temperature: 0, maxTokens: 12 }).collect(); const i = systemInfo(); console.log(JSON.stringify({ text: r.text, origin: i.origin, unavailable: i.unavailableGpuModules, gpus: i.gpuDevices.length })); m.dispose();`;
const api = await exec(process.execPath, ["--input-type=module", "-e", apiScript], { cwd: app, env });
const apiResult = api.status === 0 ? JSON.parse(api.stdout.trim().split("\n").pop()) : {};
check(api.status === 0 && apiResult.origin === "package" && gen.stdout.includes(apiResult.text), "the API from `import \"llama-napi\"` uses the platform package and generates the same greedy text", api.stderr);

// Without the platform package: the loader names it.
fs.renameSync(hostDir, `${hostDir}.off`);
const missing = await exec(process.execPath, ["--input-type=module", "-e", 'import { systemInfo } from "llama-napi"; try { systemInfo(); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }'], { cwd: app, env });
const err = missing.status === 0 && missing.stdout.trim() ? JSON.parse(missing.stdout) : {};
check(
  err.code === "ERR_NATIVE_LOAD" && err.message.includes(`npm install ${hostPkg}@${version}`) && err.message.includes("npx llama-napi build"),
  `without ${hostPkg} the loader's ERR_NATIVE_LOAD says \`npm install ${hostPkg}@${version}\` (or \`npx llama-napi build\`)`,
  JSON.stringify(err),
);
fs.renameSync(`${hostDir}.off`, hostDir);

// The CUDA package, installed by name beside the rest.
const cudaPkg = `${hostPkg}-cuda`;
log(`npm install ${cudaPkg}@${version}`);
const cuda = await exec(process.execPath, [npmCli(), "install", `${cudaPkg}@${version}`, ...npmArgs], { cwd: app, env });
if (check(cuda.status === 0, `npm install ${cudaPkg}@${version}`, `${cuda.stdout}\n${cuda.stderr}`)) {
  check(JSON.stringify(installedPlatformPackages(app)) === JSON.stringify([host, `${host}-cuda`]), `${cudaPkg} sits beside ${hostPkg}`);
  const withCuda = await exec(process.execPath, ["--input-type=module", "-e", apiScript], { cwd: app, env });
  const r = withCuda.status === 0 ? JSON.parse(withCuda.stdout.trim().split("\n").pop()) : {};
  if (sys.dynamicBackends) {
    check(
      withCuda.status === 0 && r.text === apiResult.text && (realCuda || (r.unavailable?.some((m) => m.module === hostLib) && r.gpus === 0)),
      realCuda
        ? `with ${cudaPkg} the addon loads its module and generates the same text (GPU devices: ${r.gpus})`
        : `with ${cudaPkg} (a FAKE module) the addon finds it, reports it in unavailableGpuModules with why, and generates the same text on the CPU`,
      `${withCuda.stderr}\n${JSON.stringify(r)}`,
    );
  } else {
    check(withCuda.status === 0 && r.text === apiResult.text, `with ${cudaPkg} the staged source build (static ggml, no backend modules) ignores it and generates the same text`, withCuda.stderr);
  }
}
finish();
