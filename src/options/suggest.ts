/**
 * Refusing option names that do not exist, with a suggestion: `generate({ temprature: 0 })`
 * throws `Unknown option "temprature" in generate options; did you mean "temperature"?` instead
 * of running as if nothing had been asked.
 */
import { LlamaError } from "../errors.js";

/** Lower case, without `_` and `-`: `max_tokens`, `max-tokens` and `maxTokens` compare equal. */
function normalize(name: string): string {
  return name.toLowerCase().replace(/[_-]/g, "");
}

/** The Levenshtein distance between two strings (insertions, deletions and substitutions). */
function distance(a: string, b: string): number {
  if (a === b) return 0;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * The known name nearest to `name` (by edit distance, ignoring case, `_` and `-`), or undefined
 * when none is close: at most 1 edit for names of up to 4 characters, 2 up to 8, 3 beyond. On a
 * tie, the first in `known` wins.
 */
export function nearestName(name: string, known: readonly string[]): string | undefined {
  const target = normalize(name);
  const limit = target.length <= 4 ? 1 : target.length <= 8 ? 2 : 3;
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const candidate of known) {
    const d = distance(target, normalize(candidate));
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

/**
 * Throws ERR_INVALID_ARGUMENT when `options` has an own enumerable key that is not in `known`
 * (even one set to undefined), naming the first such key and the nearest known name, e.g.
 * `Unknown option "temprature" in generate options; did you mean "temperature"?`. Without a close
 * name the message lists the known ones. `where` says which options these are ("generate options").
 */
export function rejectUnknownKeys(where: string, options: object, known: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const near = nearestName(key, known);
    const hint =
      near !== undefined
        ? `did you mean "${near}"?`
        : known.length === 0
          ? "it takes no options"
          : `the known options are ${known.map((k) => `"${k}"`).join(", ")}`;
    throw new LlamaError("ERR_INVALID_ARGUMENT", `Unknown option "${key}" in ${where}; ${hint}`);
  }
}

/**
 * The names of an options interface that has no table, as a list the compiler keeps complete:
 * `optionKeys<PromptOptions>({ append: true, ... })` fails to compile when a name is missing or
 * extra.
 */
export function optionKeys<T>(keys: { readonly [K in keyof Required<T>]: true }): readonly string[] {
  return Object.keys(keys);
}
