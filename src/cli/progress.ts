/** A one-line progress bar for the terminal: drawn only when the stream is a TTY, silent otherwise. */
import type { WriteStream } from "node:tty";

/** A progress bar on one line of `stream` (stderr by default). */
export interface ProgressBar {
  /** Redraws the bar at `fraction` (0 to 1, or undefined when the total is unknown) with `detail` after it. */
  update(fraction: number | undefined, detail?: string): void;
  /** Draws the final state and ends the line. */
  done(detail?: string): void;
}

/** Bytes in the units people read (1.2 MB, 3.4 GB). */
export function formatBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}

/** A bar labelled `label`; a no-op unless `stream` is a TTY. */
export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): ProgressBar {
  const tty = stream.isTTY === true;
  let last = 0;
  let ended = false;
  const draw = (fraction: number | undefined, detail: string) => {
    const columns = (stream as WriteStream).columns || 80;
    const width = Math.max(10, Math.min(40, columns - label.length - detail.length - 10));
    const f = fraction === undefined ? undefined : Math.max(0, Math.min(1, fraction));
    const filled = f === undefined ? 0 : Math.round(f * width);
    const bar = f === undefined ? "?".repeat(width) : `${"█".repeat(filled)}${"░".repeat(width - filled)}`;
    const percent = f === undefined ? "" : `${String(Math.floor(f * 100)).padStart(3)}% `;
    stream.write(`\r\x1b[2K${label} ${bar} ${percent}${detail}`);
  };
  return {
    update(fraction, detail = "") {
      if (!tty || ended) return;
      const now = Date.now();
      if (now - last < 80 && fraction !== 1) return;
      last = now;
      draw(fraction, detail);
    },
    done(detail = "") {
      if (!tty || ended) return;
      ended = true;
      draw(1, detail);
      stream.write("\n");
    },
  };
}
