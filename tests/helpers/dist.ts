/**
 * Tests that run the CLI or child processes use the compiled package in dist/. It is rebuilt
 * (tsc -p tsconfig.build.json) when it is missing or older than src/.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";

import { repoRoot } from "./fixtures.js";

const run = promisify(execFile);

/** Newest modification time of the .ts files under `dir`. */
function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith(".ts")) {
      newest = Math.max(newest, fs.statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
    }
  }
  return newest;
}

export async function ensureDist(): Promise<void> {
  const main = path.join(repoRoot, "dist", "cli", "main.js");
  const built = fs.existsSync(main) ? fs.statSync(main).mtimeMs : 0;
  if (built >= newestSource(path.join(repoRoot, "src"))) return;
  const tsc = path.join(repoRoot, "node_modules", "typescript", "bin", "tsc");
  await run(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: repoRoot });
}
