#!/usr/bin/env node
/**
 * npm install / npm ci in a clone (package.json's "prepare"): vendors llama.cpp (scripts/vendor.mjs),
 * then builds the addon from source into build/ and compiles the TypeScript into dist/.
 *
 * LLAMA_NAPI_SKIP_SOURCE_BUILD=1 leaves the addon out (vendor and TypeScript only): for a checkout
 * that runs on the prebuilt binaries instead (`npm run prebuilds`, which .ci/run builds and tests,
 * as the npm package ships them). The loader takes build/ first, prebuilds/ when there is no build/.
 */
import { spawnSync } from "node:child_process";
import process from "node:process";

function npmRun(script) {
  const npm = process.env.npm_execpath;
  const [command, args] = npm ? [process.execPath, [npm, "run", script]] : ["npm", ["run", script]];
  const r = spawnSync(command, args, { stdio: "inherit", shell: !npm && process.platform === "win32" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

npmRun("vendor");
if (process.env.LLAMA_NAPI_SKIP_SOURCE_BUILD === "1") {
  console.log("prepare: LLAMA_NAPI_SKIP_SOURCE_BUILD=1: no source build of the addon (run `npm run build:native`, or `npm run prebuilds`)");
  npmRun("build:ts");
} else {
  npmRun("build");
}
