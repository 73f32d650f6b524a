/** Small helpers shared by the CLI commands. */
import { LlamaError } from "../errors.js";

export class UsageError extends Error {
  override name = "UsageError";
}

export function intOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n)) throw new UsageError(`${name} must be an integer, got "${value}"`);
  return n;
}

export function numberOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new UsageError(`${name} must be a number, got "${value}"`);
  return n;
}

/** Prints an error the way a CLI user wants to see it and returns the exit code. */
export function reportError(err: unknown): number {
  if (err instanceof UsageError) {
    process.stderr.write(`llama-napi: ${err.message}\nRun \`llama-napi help\` for usage.\n`);
    return 2;
  }
  if (err instanceof LlamaError) {
    process.stderr.write(`llama-napi: ${err.message} [${err.code}]\n`);
    return 1;
  }
  process.stderr.write(`llama-napi: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return 1;
}
