/**
 * Types and helpers for session.trace(): a look inside the model during one evaluation.
 */
import type { MediaSpan } from "./media.js";
import type { Model } from "./model.js";
import type { NativeTraceResult } from "./native.js";

/** Options of `session.trace()`: what to capture while the input is evaluated. */
export interface TraceOptions {
  /** Attention probabilities per layer and head (default true). */
  attention?: boolean;
  /** The residual stream after each layer (default true). */
  hiddenStates?: boolean;
  /**
   * The logit lens: the final norm and unembedding applied to each layer's residual, giving the
   * top tokens per layer and position. `true` keeps 5 tokens; a number keeps that many.
   */
  logitLens?: boolean | number;
  /** Only these layers (default: all). */
  layers?: readonly number[];
  /** How many of the most likely next tokens to report (default 10). */
  topK?: number;
  /** When the input is text: add the model's BOS when the session is empty (default true). */
  addSpecial?: boolean;
  signal?: AbortSignal;
}

/** A token with its probability under the model (softmax of the logits). */
export interface TokenProbability {
  token: number;
  text: string;
  probability: number;
}

/** One layer's attention: heads × queries × keys probabilities (rows sum to 1). */
export class AttentionMap {
  constructor(
    readonly layer: number,
    readonly heads: number,
    readonly queries: number,
    readonly keys: number,
    /** head-major: data[(head * queries + query) * keys + key] */
    readonly data: Float32Array,
  ) {}

  /** Weight that `query` (0 = first traced token) gives to key position `key` in `head`. */
  get(head: number, query: number, key: number): number {
    return this.data[(head * this.queries + query) * this.keys + key];
  }

  /** The attention row of one query in one head (a view, no copy). */
  row(head: number, query: number): Float32Array {
    const start = (head * this.queries + query) * this.keys;
    return this.data.subarray(start, start + this.keys);
  }
}

/** What `session.trace()` captured inside the model for the traced tokens. */
export interface TraceResult {
  /** Every token the session holds after the trace (history first, then the traced tokens). */
  tokens: Int32Array;
  /** The text of each token; "[image]" / "[audio]" at the positions of a media item. */
  pieces: string[];
  /** The images and audio among `tokens`, as spans of positions. */
  media: MediaSpan[];
  /** Index in `tokens` of the first traced token; queries are tokens[queryStart..]. */
  queryStart: number;
  /** The layers captured. */
  layers: number[];
  heads: number;
  /** Key/value heads: with grouped-query attention, query head h reads KV head ⌊h·headsKv/heads⌋. */
  headsKv: number;
  embeddingSize: number;
  /** Per captured layer: attention of every traced token over every position so far. */
  attention?: AttentionMap[];
  /** Per captured layer: the residual stream after the layer, queries × embeddingSize. */
  hiddenStates?: Float32Array[];
  /** [layer][query][rank]: what the model would predict if it stopped after that layer. */
  logitLens?: TokenProbability[][][];
  /** The model's real next-token distribution after the last token (top-k). */
  next: TokenProbability[];
  /**
   * An encoder-decoder model (then `tokens`, `attention` and `hiddenStates` are the decoder's):
   * the encoder's input and its self-attention, every input token over every other, per encoder
   * layer captured.
   */
  encoder?: TraceEncoder;
  /**
   * An encoder-decoder model: per decoder layer captured, the cross-attention of every traced
   * decoder token over the encoder's input positions (queries × `encoder.tokens`): the source ×
   * target alignment.
   */
  crossAttention?: AttentionMap[];
}

/** The encoder's side of an encoder-decoder model's trace. */
export interface TraceEncoder {
  tokens: Int32Array;
  pieces: string[];
  /** The encoder layers captured. */
  layers: number[];
  attention?: AttentionMap[];
}

export function buildTraceResult(raw: NativeTraceResult, model: Model, topK: number, lensK: number): TraceResult {
  const piece = (t: number) => model.tokenToPiece(t, { special: true });
  const queries = raw.tokens.length - raw.firstNew;
  const pieces = Array.from(raw.tokens, (t) => (t < 0 ? "" : piece(t)));
  for (const span of raw.media) pieces.fill(`[${span.kind}]`, span.start, span.start + span.length);
  const result: TraceResult = {
    tokens: raw.tokens,
    pieces,
    media: raw.media,
    queryStart: raw.firstNew,
    layers: raw.layers,
    heads: raw.heads,
    headsKv: raw.headsKv,
    embeddingSize: raw.embeddingSize,
    next: topTokens(raw.logits, topK, piece),
  };
  if (raw.attention) {
    result.attention = raw.attention.map((data, i) => new AttentionMap(raw.layers[i], raw.heads, queries, raw.tokens.length, data));
  }
  if (raw.hidden) result.hiddenStates = raw.hidden;
  if (raw.encoder) {
    const { tokens, layers, attention } = raw.encoder;
    const n = tokens.length;
    result.encoder = { tokens, pieces: Array.from(tokens, piece), layers };
    if (attention) result.encoder.attention = attention.map((data, i) => new AttentionMap(layers[i], raw.heads, n, n, data));
    if (raw.crossAttention) result.crossAttention = raw.crossAttention.map((data, i) => new AttentionMap(raw.layers[i], raw.heads, queries, n, data));
  }
  if (raw.lens) {
    result.logitLens = raw.lens.map(([ids, probs]) =>
      Array.from({ length: queries }, (_, q) =>
        Array.from({ length: lensK }, (_, k) => {
          const token = ids[q * lensK + k];
          return { token, text: piece(token), probability: probs[q * lensK + k] };
        }),
      ),
    );
  }
  return result;
}

/** The k most likely tokens of a logit vector, with softmax probabilities. */
export function topTokens(logits: Float32Array, k: number, piece: (token: number) => string): TokenProbability[] {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, k);
  return order.map((token) => ({ token, text: piece(token), probability: Math.exp(logits[token] - max) / sum }));
}
