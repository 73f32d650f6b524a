import fs from "node:fs";
import path from "node:path";

import { invalidArgument } from "./errors.js";
import { PLATFORM_SCOPE, binding, bindingOrigin, packageRoot, type NativeDevice, type NativeSystemInfo, type UnavailableModule } from "./native.js";

/**
 * A compute device a ggml backend offers (a CPU, a GPU, ...), with its memory and features.
 * @interface
 */
export type Device = NativeDevice;

export type { UnavailableModule };

/** What {@link systemInfo} reports about the native build and the machine. */
export interface SystemInfo extends NativeSystemInfo {
  /**
   * The CPU backend in use: the variant module chosen for this CPU ("haswell", "skylakex", "zen4",
   * ... from libggml-cpu-<variant>.so) in a build with every variant (the prebuilt binaries);
   * "default" for a single CPU module (a GPU flavour built without the variants); "native" when the
   * CPU backend is compiled into the addon for the machine that built it (a source build);
   * null when there is no CPU device.
   */
  cpuVariant: string | null;
  /** The backends are modules loaded at run time from backendDir (else linked into the addon). */
  dynamicBackends: boolean;
  /** The addon file in use. */
  binary: string;
  /**
   * Whether that file is a shipped prebuilt binary (the platform package `@llama-napi/<platform>-<arch>`,
   * or prebuilds/) rather than a build from source.
   */
  prebuilt: boolean;
  /**
   * Where the addon came from: "package" (the installed platform package), "prebuilds" (this
   * package's prebuilds/ folder), "build" (a build from source in build/) or "override"
   * (LLAMA_NAPI_BINARY).
   */
  origin: "package" | "prebuilds" | "build" | "override";
  /** GPU devices (discrete or integrated) that layers can be offloaded to. */
  gpuDevices: Device[];
  /**
   * Backend modules (in backendDir, or a GPU package's) that give no device, each with why: a
   * GPU module is not loaded where its driver is missing (CUDA: libcuda.so.1 or nvcuda.dll), one
   * whose runtime libraries are missing (libcudart, libcublas) cannot be loaded, and one that
   * loads may find no GPU. Their layers run on the CPU.
   */
  unavailableGpuModules: UnavailableModule[];
}

/** Whether `file` lies in a platform package (its folder's package.json is one of `@llama-napi/...`). */
function inPlatformPackage(file: string): boolean {
  try {
    const manifest = JSON.parse(fs.readFileSync(path.join(path.dirname(file), "package.json"), "utf8")) as { name?: unknown };
    return typeof manifest.name === "string" && manifest.name.startsWith(`${PLATFORM_SCOPE}/`);
  } catch {
    return false;
  }
}

/** The CPU variant named by a backend's library file (see SystemInfo.cpuVariant). */
export function cpuVariantOf(library: string): string | null {
  if (library === "") return null;
  const variant = /ggml-cpu-([\w.]+?)\.(so|dylib|dll)$/.exec(library);
  if (variant) return variant[1] ?? null;
  if (/ggml-cpu\.(so|dylib|dll)$/.test(library)) return "default";
  return library.endsWith(".node") ? "native" : null;
}

function isInside(dir: string, file: string): boolean {
  const rel = path.relative(dir, file);
  return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel);
}

/** What the native build offers: CPU features and variant, devices, mmap, GPU offload and RPC support. */
export function systemInfo(): SystemInfo {
  const info = binding().systemInfo();
  const { file: binary, origin } = bindingOrigin();
  const addon = path.basename(binary);
  const cpu = info.devices.find((d) => d.type === "cpu");
  return {
    ...info,
    cpuVariant: cpu ? cpuVariantOf(cpu.library) : null,
    dynamicBackends: info.devices.some((d) => d.library !== "" && d.library !== addon),
    binary,
    prebuilt: origin === "package" || origin === "prebuilds" || isInside(path.join(packageRoot, "prebuilds"), binary) || inPlatformPackage(binary),
    origin,
    gpuDevices: info.devices.filter((d) => d.type === "gpu" || d.type === "igpu"),
    unavailableGpuModules: info.unavailableModules,
  };
}

let warnedNoGpu = false;

/**
 * The n_gpu_layers to load a model with, for loadModel's `gpuLayers` option (a layer count, or
 * "max" for every layer). With no GPU device (a CPU-only build, or a GPU backend whose driver or
 * device is missing) the model stays on the CPU: 0, and a warning (code LLAMA_NAPI_NO_GPU) is
 * emitted once per process.
 */
export function resolveGpuLayers(gpuLayers: number | "max" | undefined, options: { remote?: boolean } = {}): number {
  if (gpuLayers === undefined || gpuLayers === 0) return 0;
  if (gpuLayers !== "max" && !(Number.isInteger(gpuLayers) && gpuLayers > 0 && gpuLayers <= 100_000)) {
    invalidArgument("gpuLayers", 'a non-negative integer or "max"', gpuLayers);
  }
  const layers = gpuLayers === "max" ? -1 : gpuLayers;
  // Layers on RPC servers: their devices join at load time.
  if (options.remote) return layers;
  const info = binding().systemInfo();
  if (info.devices.some((d) => d.type === "gpu" || d.type === "igpu")) return layers;
  if (!warnedNoGpu) {
    warnedNoGpu = true;
    const idle = info.unavailableModules;
    const why = idle.length > 0 ? idle.map((m) => `${m.module} ${m.reason}`).join("; ") : "this build has no GPU backend";
    process.emitWarning(
      `gpuLayers=${String(gpuLayers)} was asked for, but no GPU device is available (${why}; devices: ${info.devices.map((d) => d.name).join(", ") || "none"}); ` +
        "the model runs on the CPU. `llama-napi info` shows the backends; `npx llama-napi build --backend cuda|vulkan` builds a GPU flavour.",
      { type: "LlamaNapiWarning", code: "LLAMA_NAPI_NO_GPU" },
    );
  }
  return 0;
}

/** How much of llama.cpp's logging {@link setLogLevel} lets through, from everything ("debug") to nothing ("none"). */
export type LogLevel = "debug" | "info" | "warn" | "error" | "none";

const LEVELS: Record<LogLevel, number> = { debug: 1, info: 2, warn: 3, error: 4, none: 5 };

/**
 * How much of llama.cpp's own logging reaches stderr (default "error"; the environment
 * variable LLAMA_NAPI_LOG_LEVEL sets the initial level).
 */
export function setLogLevel(level: LogLevel): void {
  if (!(level in LEVELS)) invalidArgument("level", "one of debug, info, warn, error, none", level);
  binding().setLogLevel(LEVELS[level]);
}
