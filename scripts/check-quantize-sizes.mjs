#!/usr/bin/env node
/**
 * Compares llama-napi's quantize() with llama.cpp's own llama-quantize tool on the same input:
 * file sizes, their ratio, the tensor types, and whether the tensor data is byte-identical.
 * Builds nothing: it needs the built package (dist/, `npm run build`) and a llama-quantize binary.
 *
 *   node scripts/check-quantize-sizes.mjs --llama-quantize /path/to/llama-quantize MODEL-F16.gguf [TYPE ...]
 *   LLAMA_QUANTIZE=/path/to/llama-quantize node scripts/check-quantize-sizes.mjs MODEL-F16.gguf
 *
 * TYPEs default to Q8_0 and Q4_0. Make an input with:
 *   node dist/cli/main.js make-gpt2 /tmp/x.gguf --preset small --f16
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { quantize } from "../dist/index.js";
import { readGguf } from "../dist/gguf/index.js";

const { values, positionals } = parseArgs({
  options: { "llama-quantize": { type: "string" }, threads: { type: "string" }, keep: { type: "boolean" } },
  allowPositionals: true,
});
const tool = values["llama-quantize"] ?? process.env.LLAMA_QUANTIZE;
const [input, ...requested] = positionals;
if (!tool || !input) {
  console.error("usage: check-quantize-sizes.mjs --llama-quantize PATH (or LLAMA_QUANTIZE=PATH) MODEL.gguf [TYPE ...]");
  process.exit(2);
}
const types = requested.length > 0 ? requested : ["Q8_0", "Q4_0"];
const threads = Number(values.threads ?? Math.min(os.availableParallelism(), 4));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "check-quantize-"));

/** sha256 of a file's bytes from `start` to the end. */
function hashFrom(file, start) {
  const hash = createHash("sha256");
  const fd = fs.openSync(file, "r");
  const buffer = Buffer.allocUnsafe(1 << 20);
  for (let pos = start, n; (n = fs.readSync(fd, buffer, 0, buffer.length, pos)) > 0; pos += n) hash.update(buffer.subarray(0, n));
  fs.closeSync(fd);
  return hash.digest("hex");
}

function typeCounts(gguf) {
  const counts = {};
  for (const t of gguf.tensors) counts[t.typeName] = (counts[t.typeName] ?? 0) + 1;
  return counts;
}

const rows = [];
try {
  for (const type of types) {
    const ours = path.join(dir, `ours-${type}.gguf`);
    const theirs = path.join(dir, `llama-quantize-${type}.gguf`);
    const r = await quantize(input, ours, { type, threads });
    const started = performance.now();
    execFileSync(tool, [input, theirs, type, String(threads)], { stdio: ["ignore", "ignore", "pipe"] });
    const toolSeconds = (performance.now() - started) / 1000;
    const [a, b] = await Promise.all([readGguf(ours, { maxArrayLength: 0 }), readGguf(theirs, { maxArrayLength: 0 })]);
    const sameTypes = a.tensors.length === b.tensors.length && a.tensors.every((t, i) => t.name === b.tensors[i].name && t.type === b.tensors[i].type);
    rows.push({
      type,
      "llama-napi bytes": a.fileSize,
      "llama-quantize bytes": b.fileSize,
      ratio: (a.fileSize / b.fileSize).toFixed(6),
      "same tensor types": sameTypes,
      "identical tensor data": hashFrom(ours, a.dataOffset) === hashFrom(theirs, b.dataOffset),
      "identical file": hashFrom(ours, 0) === hashFrom(theirs, 0),
      "llama-napi s": r.seconds.toFixed(2),
      "llama-quantize s": toolSeconds.toFixed(2),
    });
    console.log(`${type}: llama-napi ${JSON.stringify(typeCounts(a))}, llama-quantize ${JSON.stringify(typeCounts(b))}`);
  }
} finally {
  if (!values.keep) fs.rmSync(dir, { recursive: true, force: true });
}
console.log(`input ${input} (${fs.statSync(input).size} bytes), ${threads} threads, tool ${tool}`);
console.table(rows);
process.exitCode = rows.every((r) => r.ratio === (1).toFixed(6) && r["same tensor types"]) ? 0 : 1;
