/**
 * The fuzzers' watched child process (loader-fuzz.ts, media-fuzz.ts): runs a runner script over
 * inputs [from, to), which reports `start` before and `done` after each input and `end` at the
 * end. An input that does not finish in time is a hang (the child is killed); a child that dies
 * during one is a crash, against that input. The caller goes on from `next` with a new child.
 */
import { fork } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../..");

/** What a runner reports. */
export type WatchedMessage<Done> = { type: "start"; index: number; description: string } | ({ type: "done"; index: number } & Done) | { type: "end" };

export interface ChildFailure {
  index: number;
  description: string;
  kind: "crash" | "hang";
  detail: string;
}

export interface WatchOptions<Done> {
  /** The runner, a file of tests/fuzz/. */
  runner: string;
  /** Its request (passed as JSON), which holds the range of inputs. */
  request: { from: number; to: number };
  timeoutMs: number;
  /** Each finished input (its description as the start message gave it). */
  onDone: (m: { index: number } & Done, description: string) => void;
  /** The crash detail from the child's stderr (default: its last three lines). */
  detail?: (stderr: string) => string;
  /** A child that dies outside an input (setup) is a failure too, at `next` (default false). */
  failOnSetupCrash?: boolean;
}

const lastLines = (stderr: string) => stderr.trim().split("\n").slice(-3).join(" | ");

/** Runs one child over the request's inputs; resolves with where to go on and what failed. */
export function runWatchedChild<Done>(options: WatchOptions<Done>): Promise<{ next: number; failure?: ChildFailure }> {
  const { request, timeoutMs } = options;
  return new Promise((resolve) => {
    const child = fork(path.join(here, options.runner), [JSON.stringify(request)], {
      cwd: repoRoot,
      execArgv: ["--import", path.join(here, "..", "helpers", "register-ts-cached.mjs")],
      env: { ...process.env, LLAMA_NAPI_LOG_LEVEL: "none" },
      stdio: ["ignore", "ignore", "pipe", "ipc"],
    });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    let current: { index: number; description: string } | undefined;
    let next = request.from;
    let timer: NodeJS.Timeout | undefined;
    let settled: { next: number; failure?: ChildFailure } | undefined;
    const finish = (r: { next: number; failure?: ChildFailure }) => {
      settled ??= r;
    };
    child.on("message", (m: WatchedMessage<Done>) => {
      if (m.type === "start") {
        current = { index: m.index, description: m.description };
        timer = setTimeout(() => {
          finish({ next: m.index + 1, failure: { index: m.index, description: m.description, kind: "hang", detail: `no result after ${timeoutMs} ms` } });
          child.kill("SIGKILL");
        }, timeoutMs);
      } else if (m.type === "done") {
        clearTimeout(timer);
        next = m.index + 1;
        options.onDone(m, current?.description ?? "");
        current = undefined;
      } else {
        finish({ next: request.to });
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      const how = `child exited with ${signal ?? `code ${code}`}`;
      if (current && !settled) {
        finish({ next: current.index + 1, failure: { ...current, kind: "crash", detail: `${how}: ${(options.detail ?? lastLines)(stderr)}` } });
      } else if (!settled && code !== 0 && options.failOnSetupCrash) {
        finish({ next, failure: { index: next, description: "child setup", kind: "crash", detail: `${how}: ${lastLines(stderr)}` } });
      }
      resolve(settled ?? { next });
    });
  });
}
