/** Types for the parts of cross.mjs that tests import. */
export type CrossTarget = "linux-arm64" | "win32-x64";

export interface CrossTargetInfo {
  platform: string;
  arch: string;
  tools: string[];
  strip: string;
  tagLibc: boolean;
  /** The addon's file name in prebuilds/<target>/. */
  addon: string;
  apt: string[];
  node: { package: string; version: string; bin: string; env: string };
}

export const CROSS_TARGETS: Record<CrossTarget, CrossTargetInfo>;
export const ARM64_SYSROOT: string;
export const WINDOWS_SYSTEM_DLL: RegExp;
export function crossCacheDir(): string;
export function which(program: string): string | undefined;
export function missingTools(target: CrossTarget): string[];
export function findQemuAarch64(): string | undefined;
export function findWine(): string | undefined;
export function findCrossNode(target: CrossTarget): string | undefined;
export function winePrefix(): string;
/** How to run Node with `nodeArgs` for `target` under emulation, or why it cannot be. */
export function emulatedNode(
  target: CrossTarget,
  nodeArgs: string[],
  options?: { cpu?: string },
): { command: string; args: string[]; env: Record<string, string> } | string;
export function peInfo(file: string): { format: string; imports: string[]; exports: string[]; delayLoadsNodeExe: boolean } | undefined;
export function elfInfo(file: string): { machine: string; needed: string[]; runpath: string } | undefined;
