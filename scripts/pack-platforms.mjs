#!/usr/bin/env node
/**
 * npm run pack:platforms: the release set of npm packages, each user downloading only the
 * binaries of their own platform (as esbuild and sharp do).
 *
 *   llama-napi-<v>.tgz                      dist/, the llama.cpp sources for `npx llama-napi build`,
 *                                           no binaries; optionalDependencies: every platform
 *                                           package below that has CPU binaries, at <v>
 *   llama-napi-linux-x64-<v>.tgz            @llama-napi/linux-x64: prebuilds/linux-x64/ (the addon,
 *                                           libllama, libggml*, every CPU variant module), with
 *                                           "os": ["linux"], "cpu": ["x64"], "libc": ["glibc"]
 *   llama-napi-linux-arm64-<v>.tgz, llama-napi-win32-x64-<v>.tgz, ...   likewise, one per folder
 *   llama-napi-linux-x64-cuda-<v>.tgz       @llama-napi/linux-x64-cuda: only libggml-cuda.so; NOT an
 *                                           optional dependency (it would be every Linux user's
 *                                           download): a user who wants CUDA installs it, and the
 *                                           loader hands it to ggml when it is there
 *
 * Input: prebuilds/<platform>-<arch>/ as `npm run prebuilds` makes it (prebuildify's layout; a
 * Linux addon tagged .musl.node becomes @llama-napi/linuxmusl-<arch>). GPU backend modules found
 * in such a folder (libggml-cuda.so, ggml-vulkan.dll, ...; Metal stays with the macOS package)
 * and folders prebuilds/<platform>-<arch>-<gpu>/ become the GPU packages.
 *
 * Output: the package folders and tarballs in dist-packages/ (gitignored), and
 * dist-packages/packages.json with each tarball's size. Publish the platform tarballs first,
 * then the main one: `npm publish dist-packages/<file>.tgz`.
 *
 * Options: --prebuilds DIR (default prebuilds/), --out DIR (default dist-packages/),
 * --no-prepack (dist/ is current: skip scripts/prepack.mjs), --json (print packages.json).
 * The checkout is not modified (the main package is staged in the output folder).
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const SCOPE = "@llama-napi";
const LIBRARY = /\.(so|dylib|dll)$/;
/** GPU backend modules that go into their own package (Metal is part of macOS and stays). */
const GPU_MODULE = /^(lib)?ggml-(cuda|vulkan|hip|musa|sycl|opencl)\.(so|dll|dylib)$/;
const OS_NAMES = { linux: "Linux", linuxmusl: "Linux (musl)", darwin: "macOS", win32: "Windows", freebsd: "FreeBSD" };

function say(message) {
  process.stderr.write(`pack-platforms: ${message}\n`);
}

function fail(message) {
  say(message);
  process.exit(1);
}

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  if (i === -1) return fallback;
  const value = process.argv[i + 1];
  if (value === undefined || value.startsWith("--")) fail(`${name} needs a value`);
  return path.resolve(value);
}

function npmCli() {
  const candidates = [
    process.env.npm_execpath,
    path.join(path.dirname(process.execPath), "..", "lib", "node_modules", "npm", "bin", "npm-cli.js"),
    path.join(path.dirname(process.execPath), "node_modules", "npm", "bin", "npm-cli.js"),
  ];
  const found = candidates.find((c) => c && c.endsWith("npm-cli.js") && fs.existsSync(c));
  if (!found) fail("npm-cli.js not found next to node");
  return found;
}

function npm(args, cwd) {
  const r = spawnSync(process.execPath, [npmCli(), ...args], { cwd, encoding: "utf8", maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) fail(`npm ${args.join(" ")} (in ${cwd}) failed:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(r.stdout.slice(r.stdout.indexOf("[")));
}

/** Hard link when the file system allows it (the binaries are tens of MB), else copy. */
function place(from, to) {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  try {
    fs.linkSync(from, to);
  } catch {
    fs.copyFileSync(from, to);
  }
}

const prebuilds = option("--prebuilds", path.join(root, "prebuilds"));
const out = option("--out", path.join(root, "dist-packages"));
const manifest = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"));
const version = manifest.version;
const llamaLicense = path.join(root, "vendor", "llama.cpp", "LICENSE");

// What scripts/prepack.mjs does for the main package (the llama.cpp sources, dist/), without its
// check of this checkout's prebuilds/: the binaries come from --prebuilds here.
if (!process.argv.includes("--no-prepack")) {
  const vendor = path.join(root, "vendor", "llama.cpp");
  if (!fs.existsSync(path.join(vendor, ".llama-napi-vendor.json"))) {
    say("vendor/llama.cpp is missing: running scripts/vendor.mjs");
    const v = spawnSync(process.execPath, [path.join(root, "scripts", "vendor.mjs")], { cwd: root, stdio: ["ignore", 2, 2] });
    if (v.status !== 0) fail("vendoring llama.cpp failed");
  }
  for (const needed of ["CMakeLists.txt", "LICENSE", path.join("models", "ggml-vocab-gpt-2.gguf")]) {
    if (!fs.existsSync(path.join(vendor, needed))) fail(`vendor/llama.cpp/${needed} is missing (run \`npm run vendor\`)`);
  }
  say("compiling the TypeScript into dist/");
  const tsc = spawnSync(process.execPath, [createRequire(path.join(root, "package.json")).resolve("typescript/bin/tsc"), "-p", "tsconfig.build.json"], { cwd: root, stdio: ["ignore", 2, 2] });
  if (tsc.status !== 0) fail("tsc failed");
}

// 1. What the prebuilds folder holds: CPU folders (<platform>-<arch>) and GPU modules.
/** @type {Map<string, {base: string, platform: string, arch: string, libc?: string, files: string[], dir: string}>} */
const cpuPackages = new Map();
/** @type {Map<string, {base: string, gpu: string, platform: string, arch: string, libc?: string, file: string}>} */
const gpuPackages = new Map();
const folders = fs.existsSync(prebuilds) ? fs.readdirSync(prebuilds).filter((d) => fs.statSync(path.join(prebuilds, d)).isDirectory()).sort() : [];
const TUPLE = /^([a-z0-9]+)-([a-z0-9]+)$/;
const GPU_TUPLE = /^([a-z0-9]+)-([a-z0-9]+)-([a-z]+)$/;

function libcOf(platform, addonFile) {
  if (platform !== "linux") return undefined;
  return /\.musl\./.test(addonFile) ? "musl" : "glibc";
}

function packageBase(platform, arch, libc) {
  return `${platform === "linux" && libc === "musl" ? "linuxmusl" : platform}-${arch}`;
}

function addGpu(base, gpu, platform, arch, libc, file) {
  const name = `${base}-${gpu}`;
  if (gpuPackages.has(name)) fail(`two ${gpu} modules for ${base}: ${gpuPackages.get(name).file} and ${file}`);
  gpuPackages.set(name, { base, gpu, platform, arch, libc, file });
}

for (const folder of folders) {
  const dir = path.join(prebuilds, folder);
  const files = fs.readdirSync(dir).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
  const tuple = TUPLE.exec(folder);
  if (tuple) {
    const [, platform, arch] = tuple;
    const addons = files.filter((f) => f.endsWith(".node"));
    if (addons.length !== 1) fail(`prebuilds/${folder} must hold exactly one .node file, not ${addons.length}`);
    const libc = libcOf(platform, addons[0]);
    const base = packageBase(platform, arch, libc);
    for (const f of files.filter((f) => GPU_MODULE.test(f))) addGpu(base, GPU_MODULE.exec(f)[2], platform, arch, libc, path.join(dir, f));
    cpuPackages.set(base, { base, platform, arch, libc, dir, files: files.filter((f) => !GPU_MODULE.test(f)) });
    continue;
  }
  const gpuTuple = GPU_TUPLE.exec(folder);
  if (gpuTuple) {
    const [, platform, arch, gpu] = gpuTuple;
    const modules = files.filter((f) => GPU_MODULE.test(f) && GPU_MODULE.exec(f)[2] === gpu);
    if (modules.length !== 1) fail(`prebuilds/${folder} must hold one ggml-${gpu} module, not ${modules.length}`);
    const addon = files.find((f) => f.endsWith(".node")) ?? "";
    const libc = libcOf(platform, addon);
    if (files.length > 1) say(`prebuilds/${folder}: only ${modules[0]} goes into the ${gpu} package (the rest comes from the CPU package)`);
    addGpu(packageBase(platform, arch, libc), gpu, platform, arch, libc, path.join(dir, modules[0]));
    continue;
  }
  say(`skipped prebuilds/${folder}: not <platform>-<arch> or <platform>-<arch>-<gpu>`);
}
for (const [name, gpu] of gpuPackages) {
  if (!cpuPackages.has(gpu.base)) fail(`${SCOPE}/${name}: there is no CPU package ${SCOPE}/${gpu.base} for it to load beside`);
}

fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });

function platformManifest(name, description, main, { platform, arch, libc }) {
  return {
    name: `${SCOPE}/${name}`,
    version,
    description,
    license: manifest.license,
    ...(manifest.repository ? { repository: manifest.repository } : {}),
    main,
    os: [platform],
    cpu: [arch],
    ...(libc ? { libc: [libc] } : {}),
    // Yarn PnP: binaries must be real files on disk.
    preferUnplugged: true,
  };
}

function writePackage(folder, pkg, readme) {
  fs.writeFileSync(path.join(folder, "package.json"), `${JSON.stringify(pkg, null, 2)}\n`);
  fs.writeFileSync(path.join(folder, "README.md"), `# ${pkg.name}\n\n${readme}\n`);
  if (fs.existsSync(llamaLicense)) fs.copyFileSync(llamaLicense, path.join(folder, "LICENSE.llama.cpp"));
}

function pack(folder) {
  const [info] = npm(["pack", "--ignore-scripts", "--json", "--pack-destination", out], folder);
  return { tarball: info.filename, size: info.size, unpackedSize: info.unpackedSize, entryCount: info.entryCount };
}

const summary = { version, packages: [] };

// 2. The CPU platform packages.
for (const p of cpuPackages.values()) {
  const folder = path.join(out, p.base);
  const addon = p.files.find((f) => f.endsWith(".node"));
  for (const f of p.files) place(path.join(p.dir, f), path.join(folder, f));
  const where = `${OS_NAMES[p.platform === "linux" && p.libc === "musl" ? "linuxmusl" : p.platform] ?? p.platform} ${p.arch}`;
  const variants = p.files.map((f) => /ggml-cpu-([\w.]+)\.(so|dylib|dll)$/.exec(f)?.[1]).filter(Boolean);
  const pkg = platformManifest(p.base, `Prebuilt llama-napi binaries for ${where}${p.libc ? ` (${p.libc})` : ""}: the addon, llama.cpp and ggml with its CPU variants`, addon, p);
  writePackage(
    folder,
    pkg,
    `The prebuilt native part of [llama-napi](https://www.npmjs.com/package/llama-napi) ${version} for ${where}${p.libc ? ` (${p.libc})` : ""}: ` +
      `\`${addon}\`, llama.cpp's and ggml's libraries, and ${variants.length > 0 ? `the CPU variant modules (${variants.join(", ")}), one of which is chosen at run time` : "the CPU backend"}.\n\n` +
      "Do not depend on it directly: `npm install llama-napi` installs the one package that fits the machine (it is one of llama-napi's optionalDependencies, " +
      "and npm skips those whose `os`, `cpu` and `libc` do not fit). It must be the same version as llama-napi.",
  );
  summary.packages.push({ name: pkg.name, kind: "cpu", os: pkg.os, cpu: pkg.cpu, libc: pkg.libc, files: p.files.length, ...pack(folder) });
}

// 3. The GPU packages.
for (const [name, g] of gpuPackages) {
  const folder = path.join(out, name);
  const file = path.basename(g.file);
  place(g.file, path.join(folder, file));
  const pkg = platformManifest(name, `The ${g.gpu} backend module of llama-napi for ${g.base} (install it beside llama-napi to offload layers to the GPU)`, file, g);
  writePackage(
    folder,
    pkg,
    `ggml's ${g.gpu} backend module (\`${file}\`) for [llama-napi](https://www.npmjs.com/package/llama-napi) ${version} on ${g.base}.\n\n` +
      `Install it next to llama-napi (\`npm install llama-napi ${pkg.name}@${version}\`): when it is installed, llama-napi hands the module to ggml ` +
      `(GGML_BACKEND_PATH) beside the CPU modules of ${SCOPE}/${g.base}; without a driver or a device it gives no device and the model runs on the CPU. ` +
      (g.gpu === "cuda" ? "It needs the NVIDIA driver (libcuda) and the CUDA runtime libraries (libcudart, libcublas) of the toolkit it was built with." : "It needs a Vulkan loader and driver."),
  );
  summary.packages.push({ name: pkg.name, kind: g.gpu, os: pkg.os, cpu: pkg.cpu, libc: pkg.libc, files: 1, ...pack(folder) });
}

// 4. The main package: what `npm pack` of the checkout takes, less prebuilds/, with the platform
//    packages as optionalDependencies at this version.
const [listed] = npm(["pack", "--dry-run", "--ignore-scripts", "--json"], root);
const staging = path.join(out, "llama-napi");
for (const { path: file } of listed.files) {
  if (file === "package.json" || file.startsWith("prebuilds/")) continue;
  place(path.join(root, file), path.join(staging, file));
}
const main = { ...manifest };
main.files = manifest.files.filter((f) => !/^!?prebuilds\//.test(f));
const optional = Object.fromEntries([...cpuPackages.keys()].sort().map((base) => [`${SCOPE}/${base}`, version]));
main.optionalDependencies = { ...(manifest.optionalDependencies ?? {}), ...optional };
fs.writeFileSync(path.join(staging, "package.json"), `${JSON.stringify(main, null, 2)}\n`);
summary.packages.unshift({ name: manifest.name, kind: "main", optionalDependencies: Object.keys(optional), ...pack(staging) });

fs.writeFileSync(path.join(out, "packages.json"), `${JSON.stringify(summary, null, 2)}\n`);
const mb = (n) => (n / 1e6).toFixed(1).padStart(6);
say(`in ${path.relative(process.cwd(), out) || "."}:`);
say(`${"package".padEnd(30)} ${"packed MB".padStart(9)} ${"unpacked MB".padStart(11)} files`);
for (const p of summary.packages) say(`${p.name.padEnd(30)} ${mb(p.size).padStart(9)} ${mb(p.unpackedSize).padStart(11)} ${String(p.entryCount).padStart(5)}`);
const mainSize = summary.packages[0].size;
for (const p of summary.packages.filter((q) => q.kind === "cpu")) {
  say(`one ${p.name.slice(SCOPE.length + 1)} user downloads ${mb(mainSize + p.size).trim()} MB for the CPU (llama-napi + ${p.name})`);
}
if (process.argv.includes("--json")) process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
