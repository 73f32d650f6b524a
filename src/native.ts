/**
 * The one module that loads the compiled addon. Everything else calls `binding()` from here.
 *
 * Lookup order:
 *  1. build/Release and build/Debug (a build from source, e.g. by `npx llama-napi build`, or
 *     `npm install` in a clone): a local build always wins, as in node-gyp-build;
 *  2. the platform package `@llama-napi/<platform>-<arch>` (`linuxmusl-<arch>` on musl) that npm
 *     installs from this package's optionalDependencies (only the one whose os/cpu/libc fit),
 *     resolved from this package with createRequire, at this package's version;
 *  3. prebuilds/<platform>-<arch>/ in this package (node-gyp-build: a clone after
 *     `npm run prebuilds`, or a tarball packed with the binaries inside).
 * LLAMA_NAPI_BINARY=/path/to/addon.node overrides the lookup (for example for a sanitizer build).
 * For a prebuilt addon (2 or 3), an installed GPU package (`@llama-napi/<platform>-<arch>-cuda`,
 * then `-vulkan`) is handed to ggml through GGML_BACKEND_PATH, which loads it beside the modules
 * in the addon's folder; without that package nothing about the GPU is loaded.
 */
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { LlamaError, createError } from "./errors.js";
import type { NativeBinding } from "./native-types.js";

/** Package root: this file lives in src/ (tests) or dist/ (the package). */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export type * from "./native-types.js";

/** The JavaScript runtime, for messages: Bun and Deno report a Node version of their own. */
function runtimeName(): string {
  const v = process.versions as NodeJS.ProcessVersions & { bun?: string; deno?: string };
  if (v.bun) return `Bun ${v.bun}`;
  if (v.deno) return `Deno ${v.deno}`;
  return `Node ${process.version}`;
}

/** The npm scope of the per-platform packages that carry the prebuilt binaries (scripts/pack-platforms.mjs). */
export const PLATFORM_SCOPE = "@llama-napi";

/**
 * The platform package for this process: `@llama-napi/<platform>-<arch>`, with `linuxmusl` for
 * Linux on musl (node-gyp-build's test: /etc/alpine-release).
 */
export function platformPackageName(platform: string = process.platform, arch: string = process.arch, musl?: boolean): string {
  const isMusl = musl ?? (platform === "linux" && fs.existsSync("/etc/alpine-release"));
  return `${PLATFORM_SCOPE}/${platform === "linux" && isMusl ? "linuxmusl" : platform}-${arch}`;
}

/** GPU backends that ship as their own package (`@llama-napi/<platform>-<arch>-<gpu>`), in order of preference. */
const GPU_PACKAGES = ["cuda", "vulkan"] as const;

type Origin = "override" | "build" | "package" | "prebuilds";

interface Found {
  file: string;
  origin: Origin;
}

function readJson(file: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

const packageJson = (): Record<string, unknown> => readJson(path.join(packageRoot, "package.json")) ?? {};

/** The first .node file in `dir` (node-gyp-build's test for build/Release and build/Debug). */
function addonIn(dir: string): string | undefined {
  try {
    const file = fs.readdirSync(dir).find((f) => f.endsWith(".node"));
    return file === undefined ? undefined : path.join(dir, file);
  } catch {
    return undefined;
  }
}

/**
 * An installed package of the platform-package scope: the file its package.json's `main` names,
 * resolved from this package (so npm's, pnpm's and yarn's layouts all work). Undefined when it is
 * not installed; throws when it is installed but at another version than this package (its
 * binaries would not match the JavaScript).
 */
function resolvePlatformPackage(name: string): string | undefined {
  const require = createRequire(path.join(packageRoot, "package.json"));
  let manifestFile: string;
  try {
    manifestFile = require.resolve(`${name}/package.json`);
  } catch {
    return undefined;
  }
  const manifest = readJson(manifestFile) ?? {};
  const ours = packageJson().version;
  if (typeof ours === "string" && manifest.version !== ours) {
    throw new Error(`${name}@${String(manifest.version)} is installed, but llama-napi is ${ours}: install ${name}@${ours}`);
  }
  if (typeof manifest.main !== "string") throw new Error(`${manifestFile} names no "main" file`);
  return path.join(path.dirname(manifestFile), manifest.main);
}

/** Whether `file` (an addon) has ggml as shared libraries beside it: a build that loads backend modules. */
function hasDynamicBackends(file: string): boolean {
  try {
    return fs.readdirSync(path.dirname(file)).some((f) => /^(lib)?ggml-base\.(so|dylib|dll)$/.test(f));
  } catch {
    return false;
  }
}

/**
 * A GPU backend module from its own package (`@llama-napi/linux-x64-cuda`, ...), for an addon that
 * loads backend modules: ggml loads the file GGML_BACKEND_PATH names after those in the addon's
 * folder. Only when the package is installed and GGML_BACKEND_PATH is not already set.
 */
function addGpuPackage(addon: Found): void {
  if (addon.origin === "override" || addon.origin === "build" || process.env.GGML_BACKEND_PATH || !hasDynamicBackends(addon.file)) return;
  for (const gpu of GPU_PACKAGES) {
    const name = `${platformPackageName()}-${gpu}`;
    try {
      const module = resolvePlatformPackage(name);
      if (module !== undefined && fs.existsSync(module)) {
        process.env.GGML_BACKEND_PATH = module;
        gpuPackageModule = module;
        return;
      }
    } catch (err) {
      process.emitWarning(`${name} is not used: ${(err as Error).message}`, { type: "LlamaNapiWarning", code: "LLAMA_NAPI_GPU_PACKAGE" });
    }
  }
}

function loadBinding(): NativeBinding {
  const require = createRequire(import.meta.url);
  const override = process.env.LLAMA_NAPI_BINARY;
  const platformPackage = platformPackageName();
  const tried: string[] = [];
  const reasons: string[] = [];
  let lastCause: unknown;
  const load = (found: Found): NativeBinding | undefined => {
    tried.push(found.file);
    try {
      if (found.origin !== "override") addGpuPackage(found);
      const loaded = require(found.file) as NativeBinding;
      loadedFrom = found.file;
      loadedOrigin = found.origin;
      return loaded;
    } catch (err) {
      reasons.push(`${found.file}: ${err instanceof Error ? (err.message.split("\n")[0] ?? "") : String(err)}`);
      lastCause = err;
      return undefined;
    }
  };
  if (override) {
    // A relative path is relative to the working directory (require would take it for a package).
    const loaded = load({ file: path.resolve(override), origin: "override" });
    if (loaded) return loaded;
  } else {
    // 1. A build from source (build/Release, build/Debug: `npx llama-napi build`, or `npm install`
    //    in a clone) wins, as in node-gyp-build (PREBUILDS_ONLY skips it).
    const local = process.env.PREBUILDS_ONLY ? [] : ["Release", "Debug"].map((d) => path.join(packageRoot, "build", d));
    const built = local.map(addonIn).find((f) => f !== undefined);
    if (built !== undefined) {
      const loaded = load({ file: built, origin: "build" });
      if (loaded) return loaded;
    } else tried.push(...local);
    // 2. The platform package npm installed from the optionalDependencies.
    let inPackage: string | undefined;
    try {
      inPackage = resolvePlatformPackage(platformPackage);
      if (inPackage === undefined) tried.push(`${platformPackage} (not installed)`);
    } catch (err) {
      tried.push(platformPackage);
      reasons.push(`${platformPackage}: ${(err as Error).message}`);
      lastCause = err;
    }
    if (inPackage !== undefined) {
      const loaded = load({ file: inPackage, origin: "package" });
      if (loaded) return loaded;
    }
    // 3. prebuilds/<platform>-<arch>/ inside this package (`npm run prebuilds` in a clone, or a
    //    package packed with every platform in it), found by node-gyp-build.
    const prebuildDir = path.join(packageRoot, "prebuilds", `${process.platform}-${process.arch}`);
    let prebuilt: string | undefined;
    let skipped = false;
    try {
      const nodeGypBuild = require("node-gyp-build") as { resolve(dir: string): string };
      const file = nodeGypBuild.resolve(packageRoot);
      // node-gyp-build returns the build/ addon that failed above when there is one.
      if (local.some((dir) => path.dirname(file) === dir)) skipped = true;
      else prebuilt = file;
    } catch {
      // none fits
    }
    if (prebuilt !== undefined) {
      const loaded = load({ file: prebuilt, origin: "prebuilds" });
      if (loaded) return loaded;
    } else tried.push(`${prebuildDir} (${skipped ? "not searched: node-gyp-build takes build/ first" : "none"})`);
  }
  const optional = packageJson().optionalDependencies;
  const published = optional && typeof optional === "object" ? Object.keys(optional).filter((n) => n.startsWith(`${PLATFORM_SCOPE}/`)) : [];
  const version = String(packageJson().version ?? "");
  const fixes: string[] = [];
  if (override) {
    fixes.push("LLAMA_NAPI_BINARY names a .node file that does not load: unset it, or point it at a working build.");
  } else if (published.includes(platformPackage)) {
    fixes.push(
      `install the prebuilt binaries for this platform: \`npm install ${platformPackage}@${version}\` ` +
        "(npm leaves this optional dependency out with --omit=optional or --no-optional, when the lock file or node_modules " +
        "came from another platform, or with --os/--cpu/--libc set for another one);",
    );
  } else if (published.length > 0) {
    fixes.push(
      `there is no prebuilt binary for ${process.platform}-${process.arch} (${platformPackage}); prebuilt: ` +
        `${published.map((n) => n.slice(PLATFORM_SCOPE.length + 1)).join(", ")};`,
    );
  } else {
    fixes.push(`install the platform package \`${platformPackage}@${version}\` where it is published, or run \`npm run prebuilds\` in a clone;`);
  }
  if (!override) {
    fixes.push(
      "or build from source with `npx llama-napi build` (needs cmake and a C++17 compiler), or in a clone of the repository run `npm install`. " +
        "Set LLAMA_NAPI_BINARY to load a specific .node file.",
    );
  }
  const detail = reasons.length > 0 ? reasons.join("\n  ") : "no native addon was found";
  throw new LlamaError(
    "ERR_NATIVE_LOAD",
    `Could not load the llama-napi native addon for ${process.platform}-${process.arch} (${runtimeName()}).\n` +
      `Looked in:\n${tried.map((t) => `  - ${t}`).join("\n")}\n` +
      `Reason: ${detail}\n` +
      `To fix it: ${fixes.join(" ")}`,
    { cause: lastCause },
  );
}

let cached: NativeBinding | undefined;
let loadedFrom: string | undefined;
let loadedOrigin: Origin | undefined;
let gpuPackageModule: string | undefined;

/**
 * Where the addon in use came from: LLAMA_NAPI_BINARY ("override"), a build from source in build/
 * ("build"), the installed platform package ("package") or this package's prebuilds/ folder
 * ("prebuilds"); and the GPU module of a GPU package that was handed to ggml, if any.
 */
export function bindingOrigin(): { origin: Origin; file: string; gpuPackageModule: string | undefined } {
  binding();
  return { origin: loadedOrigin ?? "override", file: loadedFrom ?? "", gpuPackageModule };
}

/** The .node file the addon was loaded from (loads it if needed). */
export function bindingPath(): string {
  binding();
  return loadedFrom ?? "";
}

/** The native addon, loaded on first use (pure-TypeScript features work without it). */
export function binding(): NativeBinding {
  if (!cached) {
    const loaded = loadBinding();
    loaded.setErrorFactory((code, message) => createError(code, message));
    // process.exit() runs llama.cpp's static destructors right after the 'exit' event: no decode
    // thread may still be running then (it would use freed memory).
    process.on("exit", () => loaded.stopThreads());
    cached = loaded;
  }
  return cached;
}
