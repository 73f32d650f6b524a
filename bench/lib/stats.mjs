/** Small statistics and formatting helpers for the benchmark. */

/** Median of the finite numbers in `values` (NaN when there are none). */
export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** The p-th percentile (0..100) of `values`, by linear interpolation. */
export function percentile(values, p) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const rank = (p / 100) * (v.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return v[lo] + (v[hi] - v[lo]) * (rank - lo);
}

/** a / b, or NaN when either is missing or b is 0. */
export function ratio(a, b) {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN;
}

/** Collects samples by key over repetitions: samples.add({ pp: 1, tg: 2 }); samples.medians(). */
export class Samples {
  #byKey = new Map();

  add(record) {
    for (const [key, value] of Object.entries(record)) {
      if (typeof value !== "number") continue;
      if (!this.#byKey.has(key)) this.#byKey.set(key, []);
      this.#byKey.get(key).push(value);
    }
  }

  get(key) {
    return this.#byKey.get(key) ?? [];
  }

  medians() {
    return Object.fromEntries([...this.#byKey].map(([key, values]) => [key, median(values)]));
  }

  toJSON() {
    return Object.fromEntries(this.#byKey);
  }
}

/** A number for a table cell: `digits` significant-ish decimals, "n/a" when missing. */
export function fmt(value, digits = 1) {
  if (typeof value === "string") return value;
  if (!Number.isFinite(value)) return "n/a";
  const abs = Math.abs(value);
  const d = abs >= 1000 ? 0 : abs >= 100 ? Math.min(digits, 1) : abs >= 10 ? digits : digits + 1;
  return value.toFixed(d);
}

/** A ratio cell such as "0.93x". */
export function fmtRatio(value) {
  return Number.isFinite(value) ? `${value.toFixed(2)}x` : "n/a";
}
