/**
 * Token arrays as the native side takes them. Shared by the model (detokenize) and sessions
 * (prompt, trace); it lives here, below both, so that neither imports the other at run time.
 */
import { LlamaError, invalidArgument } from "./errors.js";

/** Tokens as an Int32Array, checking that every entry is an integer. */
export function toTokenArray(tokens: ArrayLike<number>): Int32Array {
  if (tokens instanceof Int32Array) return tokens;
  if (tokens === null || typeof tokens !== "object" || typeof tokens.length !== "number") {
    invalidArgument("tokens", "an Int32Array or an array of token ids", tokens);
  }
  const n = tokens.length;
  if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) invalidArgument("tokens.length", "an integer from 0 to 2^31 - 1", n);
  // Every entry is checked before anything is allocated (a huge sparse array fails at once).
  for (let i = 0; i < n; i++) {
    const t = tokens[i];
    if (!Number.isInteger(t) || t < -0x80000000 || t > 0x7fffffff) {
      throw new LlamaError("ERR_TOKEN_INVALID", `tokens[${i}] must be an integer token id; got ${String(t)}`);
    }
  }
  return Int32Array.from(tokens);
}
