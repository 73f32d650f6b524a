import { parseArgs } from "node:util";

import { elementCount, readGguf, type GgufFile } from "../gguf/index.js";
import { UsageError } from "./args.js";

export const inspectUsage = `llama-napi inspect MODEL [--json]

Prints what a GGUF file holds, from its header only (fast on any size of model): the metadata
(arrays of more than 16 items summarised, e.g. "[50257 strings]"), the tensor table (name,
shape, type, offset, bytes), the bytes per tensor type and the parameter count.

      --json            the same as JSON (64-bit integers beyond 2^53 as decimal strings)`;

/** Arrays up to this length are shown whole; longer ones as "[N items]". */
const ARRAY_SHOWN = 16;
/** Strings longer than this are cut in the text output (a chat template can be kilobytes). */
const STRING_SHOWN = 120;

/** Everything inspect reports, as plain data. */
export interface InspectReport {
  file: string;
  fileSize: number;
  version: number;
  alignment: number;
  dataOffset: number;
  metadata: Record<string, { type: string; value?: unknown; itemType?: string; length?: number }>;
  tensors: Array<{ name: string; shape: number[]; type: string; offset: number; bytes: number }>;
  types: Record<string, { tensors: number; bytes: number; parameters: number }>;
  parameters: number;
  tensorBytes: number;
}

/** The report for a file read with readGguf(path, { maxArrayLength: ARRAY_SHOWN }). */
export function inspectReport(file: string, gguf: GgufFile): InspectReport {
  const metadata: InspectReport["metadata"] = {};
  for (const [key, v] of Object.entries(gguf.metadata)) {
    if (v.type !== "array") {
      metadata[key] = { type: v.type, value: v.value };
      continue;
    }
    const length = v.truncatedFrom ?? v.value.length;
    metadata[key] = length <= ARRAY_SHOWN ? { type: "array", itemType: v.itemType, length, value: v.value } : { type: "array", itemType: v.itemType, length };
  }
  const types: InspectReport["types"] = {};
  let parameters = 0;
  let tensorBytes = 0;
  for (const t of gguf.tensors) {
    const n = elementCount(t.shape);
    const entry = (types[t.typeName] ??= { tensors: 0, bytes: 0, parameters: 0 });
    entry.tensors++;
    entry.bytes += t.byteSize;
    entry.parameters += n;
    parameters += n;
    tensorBytes += t.byteSize;
  }
  return {
    file,
    fileSize: gguf.fileSize,
    version: gguf.version,
    alignment: gguf.alignment,
    dataOffset: gguf.dataOffset,
    metadata,
    tensors: gguf.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.typeName, offset: t.offset, bytes: t.byteSize })),
    types,
    parameters,
    tensorBytes,
  };
}

/** JSON with bigints (64-bit metadata values beyond 2^53) as decimal strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? v.toString() : v), 2);
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  for (; v >= 1024 && i < units.length - 1; i++) v /= 1024;
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

function formatCount(n: number): string {
  const scaled = n >= 1e9 ? `${(n / 1e9).toFixed(2)} B` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} K` : "";
  return `${n.toLocaleString("en-US")}${scaled ? ` (${scaled})` : ""}`;
}

/** The shortest decimal that reads back as the same float32 (1e-5 rather than 0.000009999999747). */
function shortestFloat32(x: number): string {
  for (let digits = 1; digits < 9; digits++) {
    const text = x.toPrecision(digits);
    if (Math.fround(Number(text)) === x) return String(Number(text));
  }
  return String(x);
}

function formatScalar(value: unknown, type?: string): string {
  if (type === "float32" && typeof value === "number") return shortestFloat32(value);
  if (typeof value === "string") {
    const shown = value.length > STRING_SHOWN ? `${value.slice(0, STRING_SHOWN)}… (${value.length} chars)` : value;
    return JSON.stringify(shown);
  }
  return String(value);
}

function formatMetadataValue(v: InspectReport["metadata"][string]): string {
  if (v.type !== "array") return formatScalar(v.value, v.type);
  if (v.value === undefined) return `[${v.length} ${v.itemType === "string" ? "strings" : `${v.itemType}s`}]`;
  return `[${(v.value as unknown[]).map((item) => formatScalar(item, v.itemType)).join(", ")}]`;
}

/** Lays out rows as columns; numeric columns (by index) are right-aligned. */
function table(rows: string[][], numeric: ReadonlySet<number>): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => "  " + r.map((cell, c) => (numeric.has(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join("  ").trimEnd()).join("\n");
}

export function formatReport(r: InspectReport): string {
  const out: string[] = [];
  out.push(`${r.file}: ${formatBytes(r.fileSize)}, GGUF v${r.version}, alignment ${r.alignment}, tensor data at byte ${r.dataOffset}`);
  out.push("", `Metadata (${Object.keys(r.metadata).length} keys):`);
  const metaRows = Object.entries(r.metadata).map(([key, v]) => [key, v.type === "array" ? `${v.itemType}[]` : v.type, formatMetadataValue(v)]);
  if (metaRows.length > 0) out.push(table(metaRows, new Set()));
  out.push("", `Tensors (${r.tensors.length}):`);
  if (r.tensors.length > 0) {
    const rows = [["name", "shape", "type", "offset", "bytes"]];
    for (const t of r.tensors) rows.push([t.name, `[${t.shape.join(", ")}]`, t.type, String(t.offset), String(t.bytes)]);
    out.push(table(rows, new Set([3, 4])));
  }
  out.push("", "Tensor types:");
  const typeRows = [["type", "tensors", "parameters", "bytes", "share"]];
  for (const [type, e] of Object.entries(r.types).sort((a, b) => b[1].bytes - a[1].bytes)) {
    const share = r.tensorBytes > 0 ? `${((100 * e.bytes) / r.tensorBytes).toFixed(1)}%` : "-";
    typeRows.push([type, String(e.tensors), String(e.parameters), formatBytes(e.bytes), share]);
  }
  out.push(table(typeRows, new Set([1, 2, 3, 4])));
  const bpw = r.parameters > 0 ? ` (${((8 * r.tensorBytes) / r.parameters).toFixed(2)} bits per weight)` : "";
  out.push("", `Parameters: ${formatCount(r.parameters)}`, `Tensor data: ${formatBytes(r.tensorBytes)}${bpw}`);
  return out.join("\n");
}

export async function runInspect(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { json: { type: "boolean" } }, allowPositionals: true, strict: true });
  const file = positionals[0];
  if (!file || positionals.length > 1) throw new UsageError("inspect takes one model path");
  const report = inspectReport(file, await readGguf(file, { maxArrayLength: ARRAY_SHOWN }));
  process.stdout.write(`${values.json ? toJson(report) : formatReport(report)}\n`);
  return 0;
}

