/**
 * The data an explain report embeds: a compact, JSON-ready form of a TraceResult. Attention
 * weights are quantised to 16 bits (8 when the data would be large) and base64-encoded; with a
 * causal mask only the visible part of each row (keys up to the query's position) is stored.
 */
import { LlamaError } from "../errors.js";
import type { AttentionMap, TraceResult } from "../trace.js";
import { visibleToken } from "./text.js";

/** How a model tells attention where tokens are. */
export type PositionEncoding = "learned" | "rope" | "alibi" | "none";

/** What the report says about the model and the prompt, beyond the trace itself. */
export interface ExplainReportInfo {
  /** The model's name or file, shown in the title. */
  model: string;
  /** The traced text, shown as it was given. */
  prompt: string;
  /** GGUF architecture, e.g. "llama" or "gpt2". */
  architecture?: string;
  /** Number of layers of the model: with it the report can tell that the last lens row is the output. */
  layerCount?: number;
  /** How positions are encoded; see positionEncodingOf(model.info). Unknown when absent. */
  positionEncoding?: PositionEncoding;
  /**
   * Budget for the embedded attention weights in bytes before base64 (default 16 MiB). Over it
   * the weights are stored with 8 bits instead of 16, then only the last traced tokens' rows
   * are kept; each step adds a warning.
   */
  maxAttentionBytes?: number;
  /** Called with each warning (the warnings are also shown on the page). */
  onWarning?: (message: string) => void;
}

/** The attention weights an explain report embeds: quantised, optionally cut to the causal part, base64-encoded. */
export interface ExplainAttentionData {
  /** "u16": value / 65535; "u8": value / 255, little-endian, base64. */
  encoding: "u16" | "u8";
  /** When true, row r stores keys 0..(queryStart + firstQuery + r) only; later keys are masked (0). */
  causal: boolean;
  /** Index (among the traced tokens) of the first row stored. */
  firstQuery: number;
  /** Rows (queries) stored per head. */
  rows: number;
  keys: number;
  /** Per captured layer: the heads' rows one after the other, base64. */
  maps: string[];
}

/** Everything an explain report shows, in the JSON form the page reads ({@link buildExplainData}). */
export interface ExplainData {
  version: 1;
  model: string;
  prompt: string;
  architecture: string | null;
  positionEncoding: PositionEncoding | null;
  layerCount: number | null;
  layers: number[];
  heads: number;
  headsKv: number;
  embeddingSize: number;
  /** Every token of the trace (history, then the traced tokens): ids and visible text. */
  tokens: { ids: number[]; text: string[] };
  queryStart: number;
  attention: ExplainAttentionData | null;
  /** [layer][query] = [id0, p0, id1, p1, ...], probabilities rounded to 4 decimals. */
  lens: { k: number; layers: number[][][] } | null;
  /** [layer][query]: L2 norm of the residual stream after the layer (3 significant digits). */
  residualNorms: number[][] | null;
  /** Next-token distribution: [id, probability]. */
  next: [number, number][];
  /** Visible text of each token id the lens and the next-token list mention. */
  vocab: Record<string, string>;
  warnings: string[];
}

const DEFAULT_MAX_ATTENTION_BYTES = 16 * 1024 * 1024;

/** Architectures llama.cpp runs with ALiBi attention biases instead of position embeddings. */
const ALIBI_ARCHITECTURES = new Set(["mpt", "bloom", "jais", "refact", "jina-bert-v2"]);

/** The position encoding of a model from what `model.info` says. */
export function positionEncodingOf(info: { architecture: string; learnedPositions: boolean; recurrent?: boolean }): PositionEncoding {
  if (!info.learnedPositions) return "rope"; // llama.cpp reports learnedPositions when the rope type is NONE
  if (info.recurrent) return "none";
  if (ALIBI_ARCHITECTURES.has(info.architecture)) return "alibi";
  return "learned";
}

function formatBytes(n: number): string {
  return n >= 2 ** 20 ? `${Number((n / 2 ** 20).toFixed(1))} MiB` : n >= 1024 ? `${Number((n / 1024).toFixed(1))} KiB` : `${n} bytes`;
}

function round(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

function isCausal(maps: AttentionMap[]): boolean {
  for (const map of maps) {
    const first = map.keys - map.queries;
    for (let h = 0; h < map.heads; h++) {
      for (let q = 0; q < map.queries; q++) {
        const row = map.row(h, q);
        for (let k = first + q + 1; k < map.keys; k++) if (row[k] !== 0) return false;
      }
    }
  }
  return true;
}

function encodeAttention(trace: TraceResult, maps: AttentionMap[], budget: number, warn: (m: string) => void): ExplainAttentionData {
  const queries = maps[0].queries;
  const keys = maps[0].keys;
  const first = keys - queries;
  const causal = isCausal(maps);
  const rowLength = (q: number) => (causal ? first + q + 1 : keys);
  const perMap = maps.length * trace.heads;
  const cells = (fromQuery: number) => {
    let n = 0;
    for (let q = fromQuery; q < queries; q++) n += rowLength(q);
    return n * perMap;
  };
  let encoding: "u16" | "u8" = "u16";
  let firstQuery = 0;
  if (cells(0) * 2 > budget) {
    encoding = "u8";
    warn(`Attention weights are stored with 8-bit precision (±0.002) to keep the report under ${formatBytes(budget)}.`);
    if (cells(0) > budget) {
      firstQuery = queries - 1;
      while (firstQuery > 0 && cells(firstQuery - 1) <= budget) firstQuery--;
      warn(
        `Attention is shown only for the last ${queries - firstQuery} of ${queries} traced tokens ` +
          `(${maps.length} layers × ${trace.heads} heads × ${keys} positions would make the report too large).`,
      );
    }
  }
  const scale = encoding === "u16" ? 65535 : 255;
  const bytesPerValue = encoding === "u16" ? 2 : 1;
  const encoded = maps.map((map) => {
    const out = Buffer.alloc((cells(firstQuery) / perMap) * map.heads * bytesPerValue);
    let o = 0;
    for (let h = 0; h < map.heads; h++) {
      for (let q = firstQuery; q < queries; q++) {
        const row = map.row(h, q);
        const n = rowLength(q);
        for (let k = 0; k < n; k++) {
          const v = Math.round(Math.min(1, Math.max(0, Number.isNaN(row[k]) ? 0 : row[k])) * scale);
          if (bytesPerValue === 2) out.writeUInt16LE(v, o);
          else out[o] = v;
          o += bytesPerValue;
        }
      }
    }
    return out.toString("base64");
  });
  return { encoding, causal, firstQuery, rows: queries - firstQuery, keys, maps: encoded };
}

/** The report's data for `trace`. */
export function buildExplainData(trace: TraceResult, info: ExplainReportInfo): ExplainData {
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    info.onWarning?.(message);
  };
  const budget = info.maxAttentionBytes ?? DEFAULT_MAX_ATTENTION_BYTES;
  if (!Number.isFinite(budget) || budget < 1) {
    throw new LlamaError("ERR_INVALID_ARGUMENT", `maxAttentionBytes must be a positive number, got ${String(info.maxAttentionBytes)}`);
  }
  const vocab: Record<string, string> = {};
  const remember = (id: number, text: string) => {
    vocab[id] ??= visibleToken(text);
    return id;
  };
  const maps = trace.attention ?? [];
  const attention = maps.length > 0 && maps[0].queries > 0 ? encodeAttention(trace, maps, budget, warn) : null;
  if (maps.length === 0) warn("The trace has no attention maps (traced with attention: false).");
  const lens = trace.logitLens
    ? {
        k: trace.logitLens[0]?.[0]?.length ?? 0,
        layers: trace.logitLens.map((layer) => layer.map((ranks) => ranks.flatMap((t) => [remember(t.token, t.text), round(t.probability, 4)]))),
      }
    : null;
  const residualNorms = trace.hiddenStates
    ? trace.hiddenStates.map((hidden) => {
        const queries = hidden.length / trace.embeddingSize;
        return Array.from({ length: queries }, (_, q) => {
          let sum = 0;
          for (let i = q * trace.embeddingSize; i < (q + 1) * trace.embeddingSize; i++) sum += hidden[i] * hidden[i];
          return Number(Math.sqrt(sum).toPrecision(3));
        });
      })
    : null;
  return {
    version: 1,
    model: info.model,
    prompt: info.prompt,
    architecture: info.architecture ?? null,
    positionEncoding: info.positionEncoding ?? null,
    layerCount: info.layerCount ?? null,
    layers: [...trace.layers],
    heads: trace.heads,
    headsKv: trace.headsKv,
    embeddingSize: trace.embeddingSize,
    tokens: { ids: Array.from(trace.tokens), text: trace.pieces.map(visibleToken) },
    queryStart: trace.queryStart,
    attention,
    lens,
    residualNorms,
    next: trace.next.map((t) => [remember(t.token, t.text), round(t.probability, 6)]),
    vocab,
    warnings,
  };
}
