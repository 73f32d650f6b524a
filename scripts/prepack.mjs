#!/usr/bin/env node
/**
 * npm's prepack step (npm pack / npm publish): makes sure what package.json's "files" puts in the
 * tarball is there and current.
 *
 *  - dist/: the compiled TypeScript (tsc -p tsconfig.build.json);
 *  - vendor/llama.cpp: the pinned llama.cpp sources, for `npx llama-napi build` on machines no
 *    prebuilt binary fits. The tarball takes a pruned subset of the developer's checkout, chosen
 *    by "files" (what CMake reads: CMakeLists.txt, cmake/, include/, src/, common/, vendor/,
 *    licenses/, ggml/ less the backends llama-napi never builds, the stamp file
 *    .llama-napi-vendor.json that tells scripts/vendor.mjs the tree is complete, and the GPT-2
 *    vocabulary that `llama-napi make-gpt2` copies) so the checkout itself is never modified;
 *  - prebuilds/: the prebuilt binaries made by `npm run prebuilds` (one folder per platform).
 *
 * LLAMA_NAPI_REQUIRE_PREBUILDS=1 makes a missing prebuild for this platform an error (release
 * builds); otherwise it is a warning and the package then needs `npx llama-napi build` here.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "package.json"));

function say(message) {
  process.stdout.write(`prepack: ${message}\n`);
}

function fail(message) {
  process.stderr.write(`prepack: ${message}\n`);
  process.exit(1);
}

function node(args) {
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit" });
  return r.status === 0;
}

const vendor = path.join(root, "vendor", "llama.cpp");
if (!fs.existsSync(path.join(vendor, "CMakeLists.txt"))) {
  say("vendor/llama.cpp is missing: running scripts/vendor.mjs");
  if (!node([path.join(root, "scripts", "vendor.mjs")])) fail("vendoring llama.cpp failed");
}
for (const needed of [".llama-napi-vendor.json", "CMakeLists.txt", "LICENSE", path.join("models", "ggml-vocab-gpt-2.gguf")]) {
  if (!fs.existsSync(path.join(vendor, needed))) fail(`vendor/llama.cpp/${needed} is missing (run \`npm run vendor\`)`);
}

say("compiling the TypeScript into dist/");
if (!node([require.resolve("typescript/bin/tsc"), "-p", "tsconfig.build.json"])) fail("tsc failed");

const prebuilds = path.join(root, "prebuilds");
const platforms = fs.existsSync(prebuilds) ? fs.readdirSync(prebuilds).filter((d) => fs.statSync(path.join(prebuilds, d)).isDirectory()) : [];
for (const p of platforms) {
  const files = fs.readdirSync(path.join(prebuilds, p));
  const addon = files.filter((f) => f.endsWith(".node"));
  if (addon.length !== 1) fail(`prebuilds/${p} must hold exactly one .node file, not ${addon.length}`);
  const bytes = files.reduce((n, f) => n + fs.statSync(path.join(prebuilds, p, f)).size, 0);
  say(`prebuilds/${p}: ${addon[0]} + ${files.length - 1} libraries, ${(bytes / 1048576).toFixed(1)} MiB`);
}
const here = `${process.platform}-${process.arch}`;
if (!platforms.includes(here)) {
  const message = `no prebuilt binary for ${here} (run \`npm run prebuilds\`): users here would need \`npx llama-napi build\``;
  if (process.env.LLAMA_NAPI_REQUIRE_PREBUILDS === "1") fail(message);
  say(`warning: ${message}`);
}
