/**
 * Helpers shared by the explain-report tests (tests/report.test.ts, tests/report-t5.test.ts): the
 * report's embedded JSON read back as a browser would, and its attention maps decoded here from
 * the documented layout (not by src/).
 */
import { expect } from "vitest";

import type { ExplainAttentionData, ExplainData } from "../../src/report/index.js";

/** The embedded JSON of a report, read back as a browser would (after un-escaping \\u003c etc). */
export function embeddedData(html: string): ExplainData {
  const m = /<script type="application\/json" id="explain-data">([^<]*)<\/script>/.exec(html);
  expect(m).not.toBeNull();
  return JSON.parse(m![1]) as ExplainData;
}

/** One layer's weights of embedded attention data; `queryStart` is the position of traced row 0 (for the causal cut). */
export function decodeAttention(a: ExplainAttentionData, heads: number, queryStart: number, layerIndex: number): (head: number, row: number, key: number) => number | null {
  const bytes = Buffer.from(a.maps[layerIndex], "base64");
  const first = queryStart + a.firstQuery;
  const lengths = Array.from({ length: a.rows }, (_, r) => (a.causal ? first + r + 1 : a.keys));
  const starts = lengths.map((_, r) => lengths.slice(0, r).reduce((x, y) => x + y, 0));
  const perHead = lengths.reduce((x, y) => x + y, 0);
  expect(bytes.length).toBe(perHead * heads * (a.encoding === "u16" ? 2 : 1));
  return (head, row, key) => {
    if (key >= lengths[row]) return null;
    const i = head * perHead + starts[row] + key;
    return a.encoding === "u16" ? bytes.readUInt16LE(i * 2) / 65535 : bytes[i] / 255;
  };
}
