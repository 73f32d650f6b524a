/**
 * A real terminal for CLI tests: tmux runs the command in a detached session on its own server
 * socket, `send-keys` types, `capture-pane` reads the screen. The command's exit status is written
 * to a file when it ends (the pane then stays open, so its last screen can still be read).
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/** Whether tmux can be run here. */
export function hasTmux(): boolean {
  try {
    execFileSync("tmux", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export class Terminal {
  readonly #socket: string;
  readonly #statusFile: string;
  readonly #dir: string;

  constructor(argv: readonly string[], options: { cwd?: string; env?: Record<string, string>; width?: number; height?: number } = {}) {
    this.#dir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-tmux-"));
    this.#socket = `llama-napi-test-${process.pid}-${path.basename(this.#dir)}`;
    this.#statusFile = path.join(this.#dir, "status");
    const command = `${argv.map(quote).join(" ")}; echo $? > ${quote(this.#statusFile)}; sleep 600`;
    const env = Object.entries(options.env ?? {}).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
    execFileSync("tmux", [
      "-L", this.#socket, "-f", "/dev/null", "new-session", "-d",
      "-x", String(options.width ?? 160), "-y", String(options.height ?? 40),
      ...(options.cwd ? ["-c", options.cwd] : []), ...env, command,
    ]);
  }

  /** Types text (literally) and, unless `enter` is false, presses Enter. */
  type(text: string, enter = true): void {
    execFileSync("tmux", ["-L", this.#socket, "send-keys", "-l", text]);
    if (enter) this.keys("Enter");
  }

  /** Presses keys by tmux name ("C-c", "C-d", "Enter"). */
  keys(...keys: string[]): void {
    execFileSync("tmux", ["-L", this.#socket, "send-keys", ...keys]);
  }

  /** The screen's text, wrapped lines joined, trailing blank lines dropped. */
  screen(): string {
    return execFileSync("tmux", ["-L", this.#socket, "capture-pane", "-p", "-J"], { encoding: "utf8" }).replace(/\s+$/, "");
  }

  /** Waits until `test` holds for the screen; throws with the screen after `timeoutMs`. */
  async waitFor(test: RegExp | ((screen: string) => boolean), timeoutMs = 15_000): Promise<string> {
    const ok = typeof test === "function" ? test : (s: string) => test.test(s);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const screen = this.screen();
      if (ok(screen)) return screen;
      if (Date.now() > deadline) throw new Error(`The terminal did not show ${String(test)} within ${timeoutMs} ms; the screen:\n${screen}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The command's exit status once it has ended (waits up to `timeoutMs`), or undefined while it runs. */
  async exitCode(timeoutMs = 0): Promise<number | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (fs.existsSync(this.#statusFile)) {
        const text = fs.readFileSync(this.#statusFile, "utf8").trim();
        if (text !== "") return Number(text);
      }
      if (Date.now() >= deadline) return undefined;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  close(): void {
    try {
      execFileSync("tmux", ["-L", this.#socket, "kill-server"], { stdio: "ignore" });
    } catch {
      // already gone
    }
    fs.rmSync(this.#dir, { recursive: true, force: true });
  }
}
