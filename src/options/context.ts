/**
 * The options of `model.createContext()` and `model.createEmbeddingContext()`. native/Context.cc
 * reads every entry with no defaults of its own; the CLI's context flags come from here too.
 */
import os from "node:os";

import { boolean, integer, oneOf, type OptionsOf } from "./spec.js";

/** Types of the KV cache. */
export const KV_CACHE_TYPES = ["f16", "f32", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"] as const;

/** A type of the KV cache. */
export type KvCacheType = (typeof KV_CACHE_TYPES)[number];

/** How vectors of tokens become one vector per text ("model": what the model's metadata says). */
export const POOLINGS = ["model", "none", "mean", "cls", "last", "rank"] as const;

/** How vectors of tokens become one vector per text. */
export type Pooling = (typeof POOLINGS)[number];

/** The default thread count: the CPUs this process may use, capped at 16. */
export function defaultThreads(): number {
  return Math.max(1, Math.min(os.availableParallelism(), 16));
}

const threads = integer({
  min: 1,
  max: 512,
  default: defaultThreads,
  defaultText: "the available CPUs, at most 16",
  flag: { name: "threads", aliases: ["-t"], arg: "N", help: "CPU threads" },
});

const flashAttention = oneOf(["auto", "on", "off"], {
  default: "auto",
  flag: { name: "flash-attn", aliases: ["-fa"], arg: "on|off|auto", help: "flash attention" },
});

export const CONTEXT_OPTIONS = {
  /**
   * Tokens each session can hold (default: the model's training context, at most 4096).
   * The KV cache holds `contextSize × sequences` tokens in all.
   */
  contextSize: integer({
    min: 1,
    max: 1 << 24,
    default: (scope) => Math.min(scope.trainingContext || 4096, 4096),
    defaultText: "the model's training context, at most 4096",
    flag: { name: "ctx-size", aliases: ["-c"], arg: "N", help: "tokens each session (each request) can hold" },
  }),
  /** Tokens per llama_decode call (default 512). */
  batchSize: integer({ min: 1, max: 1 << 16, default: 512, flag: { name: "batch-size", aliases: ["-b"], arg: "N", help: "tokens per decode call" } }),
  /** CPU threads for generation (default: the number of available CPUs, at most 16). */
  threads,
  /** CPU threads for prompt processing (default: `threads`). */
  threadsBatch: integer({
    min: 1,
    max: 512,
    default: (_scope, values) => values.threads as number,
    defaultText: "--threads",
    flag: { name: "threads-batch", aliases: ["-tb"], arg: "N", help: "CPU threads for prompts" },
  }),
  /** How many sessions the context can hold at once (default 1). */
  sequences: integer({ min: 1, max: 1 << 16, default: 1 }),
  /** Type of the KV cache (default "f16"; quantised V caches need flash attention). */
  kvCacheType: oneOf(KV_CACHE_TYPES, { default: "f16", flag: { name: "kv-cache-type", aliases: ["-ctk"], arg: "TYPE", help: "KV cache type (f16, q8_0, ...)" } }),
  /** Flash attention: "auto" (default), "on" or "off". */
  flashAttention,
  /**
   * Milliseconds an idle context may wait, when a prompt arrives, for other sessions' prompts to
   * join it in one decode (default 0: none; 50 in `startServer()` and `llama-napi serve`). It
   * waits only after it last decoded several sessions together, for as many prompts as it decoded
   * sessions then, and starts as soon as they are there, or once none has arrived for a fifth of
   * the window: clients answered in the same step send again within milliseconds, and the first
   * prompt decoded alone would make the others wait for that decode and keep its session a step
   * ahead of theirs. A lone session pays that fifth once; the context then expects one.
   */
  batchWindow: integer({
    min: 0,
    max: 1000,
    default: 0,
    flag: { name: "batch-window", arg: "MS", help: "ms an idle context waits for other sessions' prompts, to decode them together" },
  }),
  /** One KV buffer shared by every session instead of one per session (default false). */
  unifiedKvCache: boolean({ default: false, flag: { name: "kv-unified", aliases: ["-kvu"], help: "one KV buffer shared by every session" } }),
} as const;

/**
 * Options of `model.createContext()`; each is an entry of the table of context options.
 * @interface
 */
export type ContextOptions = OptionsOf<typeof CONTEXT_OPTIONS>;

export const EMBEDDING_CONTEXT_OPTIONS = {
  /** The most tokens one text may have (default: the model's training context, at most 2048). */
  contextSize: integer({ min: 1, max: 1 << 24, default: (scope) => Math.min(scope.trainingContext || 2048, 2048) }),
  /** Texts embedded together in one llama_decode call (default 16). */
  sequences: integer({ min: 1, max: 1 << 16, default: 16 }),
  /** Tokens per llama_decode call (default: contextSize × sequences, at most 8192). */
  batchSize: integer({
    min: 1,
    max: 1 << 16,
    default: (_scope, v) => Math.min((v.contextSize as number) * (v.sequences as number), 8192),
  }),
  /** CPU threads (default: the number of available CPUs, at most 16). */
  threads,
  /** Pooling (default "model"). "rank" gives reranking scores (models with a classifier head). */
  pooling: oneOf(POOLINGS, { default: "model" }),
  /** Flash attention: "auto" (default), "on" or "off" ("off" computes attention in float32 on CPUs). */
  flashAttention,
} as const;

/**
 * Options of `model.createEmbeddingContext()`.
 * @interface
 */
export type EmbeddingContextOptions = OptionsOf<typeof EMBEDDING_CONTEXT_OPTIONS>;
