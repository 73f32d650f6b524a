import { invalidArgument } from "./errors.js";
import { binding, type NativeSystemInfo } from "./native.js";

export type SystemInfo = NativeSystemInfo;

/** What the native build offers: CPU features, devices, mmap, GPU offload and RPC support. */
export function systemInfo(): SystemInfo {
  return binding().systemInfo();
}

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
