/** Types for the parts of check-report.mjs that tests import. */
/** The Chromium binary: $CHROMIUM, or `chromium` / `chromium-browser` on PATH; null if none. */
export function findChromium(): string | null;
