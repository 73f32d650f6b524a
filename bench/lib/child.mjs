/** Runs benchmark children (our worker, node-llama-cpp's worker, llama.cpp tools) and reads their JSON. */
import { spawn } from "node:child_process";
import path from "node:path";

import { BENCH_DIR } from "./env.mjs";

/**
 * Runs a command and resolves to its stdout, or rejects with the tail of its stderr.
 * The parent does nothing while it waits, so it takes no CPU time from the child.
 */
export function runCommand(command, args, { env, timeoutMs = 15 * 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else {
        const name = path.basename(command) === "node" || command === process.execPath ? args[0] : command;
        reject(new Error(`${name} exited with ${code ?? signal}:\n${stderr.slice(-4000)}`));
      }
    });
  });
}

/** The last line of `stdout` that is a JSON object. */
export function lastJsonLine(stdout) {
  const line = stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("{"))
    .pop();
  if (!line) throw new Error(`no JSON line in the output:\n${stdout.slice(-2000)}`);
  return JSON.parse(line);
}

/** Runs one of bench/lib's Node workers in a fresh process: `node worker.mjs '<json task>'`. */
export async function runWorker(worker, task, options) {
  const stdout = await runCommand(process.execPath, [path.join(BENCH_DIR, "lib", worker), JSON.stringify(task)], options);
  return lastJsonLine(stdout);
}
