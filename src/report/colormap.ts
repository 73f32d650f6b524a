/**
 * The colour map shared by the HTML heatmaps and the PNG images: viridis (perceptually uniform,
 * readable in grayscale and by colour-blind readers), sampled at nine stops and interpolated.
 */

/** Viridis at 0, 1/8, ..., 1 (matplotlib's values, rounded to 8 bits). */
export const VIRIDIS_STOPS: readonly (readonly [number, number, number])[] = [
  [68, 1, 84],
  [71, 45, 123],
  [59, 82, 139],
  [44, 114, 142],
  [33, 145, 140],
  [40, 174, 128],
  [94, 201, 98],
  [173, 220, 48],
  [253, 231, 37],
];

/** The colour of cells a query cannot see (positions after it, masked by the causal mask). */
export const MASKED_RGB: readonly [number, number, number] = [232, 232, 236];

/** The colour of `value` in [0, 1] (clamped; NaN counts as 0). */
export function colorAt(value: number): [number, number, number] {
  const v = Number.isNaN(value) ? 0 : Math.min(1, Math.max(0, value));
  const x = v * (VIRIDIS_STOPS.length - 1);
  const i = Math.min(VIRIDIS_STOPS.length - 2, Math.floor(x));
  const t = x - i;
  const a = VIRIDIS_STOPS[i];
  const b = VIRIDIS_STOPS[i + 1];
  return [Math.round(a[0] + (b[0] - a[0]) * t), Math.round(a[1] + (b[1] - a[1]) * t), Math.round(a[2] + (b[2] - a[2]) * t)];
}
