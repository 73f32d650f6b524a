/**
 * The data an explain report embeds: a compact, JSON-ready form of a TraceResult. Attention
 * weights are quantised to 16 bits (8 when the data would be large) and base64-encoded; with a
 * causal mask only the visible part of each row (keys up to the query's position) is stored.
 * An encoder-decoder model's trace adds the encoder's tokens and self-attention and the
 * cross-attention (decoder tokens over encoder tokens), under the same byte budget.
 */
import { LlamaError } from "../errors.js";
import type { AttentionMap, TraceResult } from "../trace.js";
import { visibleToken } from "./text.js";

/** How a model tells attention where tokens are. */
export type PositionEncoding = "learned" | "rope" | "alibi" | "relative" | "none";

/** What the report says about the model and the prompt, beyond the trace itself. */
export interface ExplainReportInfo {
  /** The model's name or file, shown in the title. */
  model: string;
  /** The traced text, shown as it was given (an encoder-decoder model: the encoder's input, the source). */
  prompt: string;
  /** An encoder-decoder model: the decoder text that was traced (the target), as given or generated. */
  target?: string;
  /** GGUF architecture, e.g. "llama" or "gpt2". */
  architecture?: string;
  /**
   * Number of layers of the model (an encoder-decoder model: of its decoder): with it the report
   * can tell that the last lens row is the output.
   */
  layerCount?: number;
  /** An encoder-decoder model: the number of encoder layers. */
  encoderLayerCount?: number;
  /** How positions are encoded; see positionEncodingOf(model.info). Unknown when absent. */
  positionEncoding?: PositionEncoding;
  /**
   * Budget for the embedded attention weights in bytes before base64 (default 16 MiB), all maps
   * together (decoder, encoder and cross-attention). Over it the weights are stored with 8 bits
   * instead of 16, then only the last rows are kept (each kind of map cut in proportion to its
   * size); each step adds a warning.
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

/**
 * The cross-attention an explain report embeds: rows are the traced decoder tokens (the target,
 * from `firstQuery` on), keys the encoder's tokens (the source); never causal.
 */
export interface ExplainCrossAttentionData extends ExplainAttentionData {
  /** The decoder layer of each map. */
  layers: number[];
}

/** An encoder-decoder model's encoder in an explain report. */
export interface ExplainEncoderData {
  /** The encoder's input tokens (the source): ids and visible text. */
  tokens: { ids: number[]; text: string[] };
  /** The encoder layers captured. */
  layers: number[];
  /** Number of encoder layers of the model, when known. */
  layerCount: number | null;
  /** Encoder self-attention (rows and keys are the encoder's tokens; not causal); null when not captured. */
  attention: ExplainAttentionData | null;
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
  /** An encoder-decoder model: the decoder text traced (see ExplainReportInfo.target); otherwise null. */
  target: string | null;
  /** Every token of the trace (history, then the traced tokens; an encoder-decoder model: the decoder's): ids and visible text. */
  tokens: { ids: number[]; text: string[] };
  queryStart: number;
  /** Self-attention of the traced tokens (an encoder-decoder model: the decoder's), per layer of `layers`. */
  attention: ExplainAttentionData | null;
  /** An encoder-decoder model: its encoder's tokens and self-attention; otherwise null. */
  encoder: ExplainEncoderData | null;
  /** An encoder-decoder model: decoder tokens (rows) over encoder tokens (keys), per decoder layer; otherwise null. */
  crossAttention: ExplainCrossAttentionData | null;
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
/** Architectures with T5's relative position buckets (a learned bias per head and distance bucket). */
const RELATIVE_ARCHITECTURES = new Set(["t5", "t5encoder"]);

/** The position encoding of a model from what `model.info` says. */
export function positionEncodingOf(info: { architecture: string; learnedPositions: boolean; recurrent?: boolean }): PositionEncoding {
  if (RELATIVE_ARCHITECTURES.has(info.architecture)) return "relative";
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
    if (first < 0) return false;
    for (let h = 0; h < map.heads; h++) {
      for (let q = 0; q < map.queries; q++) {
        const row = map.row(h, q);
        for (let k = first + q + 1; k < map.keys; k++) if (row[k] !== 0) return false;
      }
    }
  }
  return true;
}

/** One kind of attention map to embed: the decoder's, the encoder's or the cross-attention. */
class AttentionSet {
  readonly queries: number;
  readonly keys: number;
  readonly heads: number;
  readonly causal: boolean;

  constructor(
    readonly maps: AttentionMap[],
    causal: boolean,
    /** How the budget warning names the rows: "traced tokens", "source tokens", ... */
    readonly rowsName: string,
    /** The warning's subject: "Attention", "Encoder self-attention", ... */
    readonly subject: string,
  ) {
    this.queries = maps[0].queries;
    this.keys = maps[0].keys;
    this.heads = maps[0].heads;
    this.causal = causal;
  }

  rowLength(q: number): number {
    return this.causal ? this.keys - this.queries + q + 1 : this.keys;
  }

  /** Values stored for the rows from `fromQuery` on, all maps and heads. */
  cells(fromQuery: number): number {
    let n = 0;
    for (let q = fromQuery; q < this.queries; q++) n += this.rowLength(q);
    return n * this.maps.length * this.heads;
  }

  /** The first row to keep so that at most `budget` values are stored (at least the last row is kept). */
  firstQueryWithin(budget: number): number {
    let first = this.queries - 1;
    while (first > 0 && this.cells(first - 1) <= budget) first--;
    return first;
  }

  encode(encoding: "u16" | "u8", firstQuery: number): ExplainAttentionData {
    const scale = encoding === "u16" ? 65535 : 255;
    const bytesPerValue = encoding === "u16" ? 2 : 1;
    const perMap = this.cells(firstQuery) / this.maps.length;
    const maps = this.maps.map((map) => {
      const out = Buffer.alloc(perMap * bytesPerValue);
      let o = 0;
      for (let h = 0; h < map.heads; h++) {
        for (let q = firstQuery; q < this.queries; q++) {
          const row = map.row(h, q);
          const n = this.rowLength(q);
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
    return { encoding, causal: this.causal, firstQuery, rows: this.queries - firstQuery, keys: this.keys, maps };
  }
}

/**
 * Encodes every set under one budget: 16 bits when all fit, else 8 bits; when even that is over
 * the budget, each set keeps its last rows within a share of the budget in proportion to its size.
 */
function encodeAttentionSets(sets: AttentionSet[], budget: number, warn: (m: string) => void): ExplainAttentionData[] {
  const total = sets.reduce((n, set) => n + set.cells(0), 0);
  let encoding: "u16" | "u8" = "u16";
  const firstQueries = sets.map(() => 0);
  if (total * 2 > budget) {
    encoding = "u8";
    warn(`Attention weights are stored with 8-bit precision (±0.002) to keep the report under ${formatBytes(budget)}.`);
    if (total > budget) {
      sets.forEach((set, i) => {
        const share = sets.length === 1 ? budget : Math.floor((budget * set.cells(0)) / total);
        if (set.cells(0) <= share) return;
        const first = set.firstQueryWithin(share);
        firstQueries[i] = first;
        warn(
          `${set.subject} is shown only for the last ${set.queries - first} of ${set.queries} ${set.rowsName} ` +
            `(${set.maps.length} layers × ${set.heads} heads × ${set.keys} positions would make the report too large).`,
        );
      });
    }
  }
  return sets.map((set, i) => set.encode(encoding, firstQueries[i]));
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
  if (maps.length === 0) warn("The trace has no attention maps (traced with attention: false).");
  const encoderMaps = trace.encoder?.attention ?? [];
  const crossMaps = trace.crossAttention ?? [];
  const twoStacks = trace.encoder !== undefined;
  // Sets with no maps or no rows embed nothing (null).
  const candidates: Array<AttentionSet | null> = [
    maps.length > 0 && maps[0].queries > 0
      ? new AttentionSet(maps, isCausal(maps), "traced tokens", twoStacks ? "Decoder self-attention" : "Attention")
      : null,
    encoderMaps.length > 0 && encoderMaps[0].queries > 0 ? new AttentionSet(encoderMaps, false, "source tokens", "Encoder self-attention") : null,
    crossMaps.length > 0 && crossMaps[0].queries > 0 && crossMaps[0].keys > 0 ? new AttentionSet(crossMaps, false, "target tokens", "Cross-attention") : null,
  ];
  const present = candidates.filter((set): set is AttentionSet => set !== null);
  const encoded = encodeAttentionSets(present, budget, warn);
  const [attention, encoderAttention, crossAttention] = candidates.map((set) => (set === null ? null : encoded[present.indexOf(set)]));
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
    target: info.target ?? null,
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
    encoder: trace.encoder
      ? {
          tokens: { ids: Array.from(trace.encoder.tokens), text: trace.encoder.pieces.map(visibleToken) },
          layers: [...trace.encoder.layers],
          layerCount: info.encoderLayerCount ?? null,
          attention: encoderAttention,
        }
      : null,
    crossAttention: crossAttention ? { ...crossAttention, layers: crossMaps.map((m) => m.layer) } : null,
    lens,
    residualNorms,
    next: trace.next.map((t) => [remember(t.token, t.text), round(t.probability, 6)]),
    vocab,
    warnings,
  };
}
