import path from "node:path";
import { parseArgs } from "node:util";

import { systemInfo, type SystemInfo } from "../system.js";

export const infoUsage = `llama-napi info [--json]

Prints what this installation of llama-napi runs on: the addon in use (a prebuilt binary or a
build from source) and how its backends are built, the CPU variant chosen for this machine
(e.g. "haswell", "zen4" from libggml-cpu-<variant>.so in the prebuilt binaries; "native" for a
source build tuned to the machine that built it), every device with its backend, module file,
memory and features, and mmap / GPU offload / RPC support.

      --json            the same as JSON`;

/** How the addon in use was built, in words. */
export function buildMode(info: SystemInfo): string {
  const origin = info.origin === "package" ? "prebuilt binary (platform package)" : info.prebuilt ? "prebuilt binary" : "build from source";
  if (!info.dynamicBackends) return `${origin}, backends linked into the addon`;
  return `${origin}, backends loaded at run time from ${info.backendDir}`;
}

function mib(bytes: number): string {
  return `${Math.round(bytes / 1048576)} MiB`;
}

/** The text report. */
export function formatInfo(info: SystemInfo): string {
  const lines: string[] = [];
  lines.push(`addon:        ${info.binary}`);
  lines.push(`build:        ${buildMode(info)}`);
  lines.push(`CPU variant:  ${info.cpuVariant ?? "(no CPU device)"}`);
  lines.push(`mmap:         ${info.supportsMmap ? "yes" : "no"}`);
  lines.push(
    `GPU offload:  ${info.supportsGpuOffload ? "yes" : "no"}` +
      (info.gpuDevices.length > 0 ? ` (${info.gpuDevices.length} GPU device${info.gpuDevices.length === 1 ? "" : "s"})` : " (no GPU device: gpuLayers falls back to the CPU)"),
  );
  for (const { module, reason } of info.unavailableGpuModules) lines.push(`GPU module without a device: ${module}: ${reason}`);
  lines.push(`RPC:          ${info.supportsRpc ? "yes" : "no"}`);
  lines.push(`max sequences per context: ${info.maxSequences}`);
  lines.push("");
  lines.push(`devices (${info.devices.length}):`);
  for (const d of info.devices) {
    const memory = d.memoryTotal > 0 ? `, ${mib(d.memoryFree)} free of ${mib(d.memoryTotal)}` : "";
    lines.push(`  ${d.name} [${d.backend}, ${d.type}] ${d.description}${memory}`);
    lines.push(`    module:   ${d.library || "(unknown)"}${d.library !== "" && d.library === path.basename(info.binary) ? " (linked into the addon)" : ""}`);
    if (d.features.length > 0) lines.push(`    features: ${d.features.join(" ")}`);
  }
  lines.push("");
  lines.push(`llama.cpp: ${info.llamaSystemInfo.trim()}`);
  return lines.join("\n");
}

export async function runInfo(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: "boolean" } }, allowPositionals: false });
  const info = systemInfo();
  process.stdout.write(values.json ? `${JSON.stringify({ ...info, buildMode: buildMode(info) }, null, 2)}\n` : `${formatInfo(info)}\n`);
  return 0;
}
