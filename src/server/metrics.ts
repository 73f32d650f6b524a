/**
 * The server's counters and per-sequence state, for GET /metrics (Prometheus text, with
 * llama-server's metric names) and GET /slots, and the `timings` of each completion.
 *
 * handlers.ts records each request: `begin()` when it gets its session, `prompted()` when the
 * prompt is in the KV cache, `token()` per generated token, `end()` when the session goes back.
 * The counts and the time formulas are llama-server's (server_slot_stats, server_metrics): the
 * prompt's time runs from the session being assigned to the prompt being evaluated; the
 * generation's from there to the last token; generation rates count decode steps (the first
 * token comes from the prompt's logits, free), so they use `predicted_n - 1`.
 */
import { performance } from "node:perf_hooks";

import type { DraftStats } from "../generation.js";
import type { Session } from "../session.js";

/** llama-server's `timings` object of a completion response. */
export interface Timings {
  /** Prompt tokens reused from the KV cache (not evaluated). */
  cache_n: number;
  /** Prompt tokens evaluated. */
  prompt_n: number;
  prompt_ms: number;
  prompt_per_token_ms: number;
  prompt_per_second: number;
  /** Tokens generated. */
  predicted_n: number;
  predicted_ms: number;
  predicted_per_token_ms: number;
  predicted_per_second: number;
  /** With a draft model: draft tokens decoded, and those kept. */
  draft_n?: number;
  draft_n_accepted?: number;
}

/** Tokens and time of one kind of work; the rate counts steps (decodes), not free tokens. */
class Bucket {
  count = 0;
  steps = 0;
  ms = 0;

  add(count: number, steps: number, ms: number): void {
    this.count += count;
    this.steps += steps;
    this.ms += ms;
  }

  perSecond(): number {
    return this.ms > 0 ? (this.steps / this.ms) * 1000 : 0;
  }
}

/** What one sequence (slot) is doing, or did last. */
interface SlotState {
  id: number;
  session: Session;
  task: number;
  processing: boolean;
  promptTokens: number;
  evaluated: number;
  reused: number;
  generated: number;
  newLine: boolean;
}

/** One request on its session: created by {@link ServerMetrics.begin}. */
export class RequestRecord {
  readonly #metrics: ServerMetrics;
  readonly #slot: SlotState;
  readonly #start = performance.now();
  #promptDone = 0;
  #lastToken = 0;
  #ended = false;
  #drafts: () => DraftStats | undefined = () => undefined;

  /** @internal */
  constructor(metrics: ServerMetrics, slot: SlotState) {
    this.#metrics = metrics;
    this.#slot = slot;
  }

  /** The prompt is in the KV cache: `evaluated` tokens decoded, `reused` kept from it. */
  prompted(result: { evaluated: number; reused: number; encoded?: number }): void {
    this.#promptDone = performance.now();
    // An encoder-decoder model's prompt is processed by the encoder too.
    this.#slot.evaluated = result.evaluated + (result.encoded ?? 0);
    this.#slot.reused = result.reused;
    this.#metrics.addPrompt(this.#slot.evaluated, result.reused, this.#promptDone - this.#start);
  }

  /** A token was generated (its text, for has_new_line). */
  token(text = ""): void {
    this.#lastToken = performance.now();
    this.#slot.generated++;
    if (text.includes("\n")) this.#slot.newLine = true;
  }

  /** Where the generation's draft counts are, once it has ended (a draft model's). */
  drafts(stats: () => DraftStats | undefined): void {
    this.#drafts = stats;
  }

  /** The timings so far, in llama-server's shape and formulas. */
  timings(): Timings {
    const drafts = this.#drafts();
    const s = this.#slot;
    const promptMs = this.#promptDone > 0 ? this.#promptDone - this.#start : 0;
    const genMs = this.#genMs();
    const steps = Math.max(0, s.generated - 1);
    return {
      cache_n: s.reused,
      prompt_n: s.evaluated,
      prompt_ms: promptMs,
      prompt_per_token_ms: s.evaluated > 0 ? promptMs / s.evaluated : 0,
      prompt_per_second: promptMs > 0 ? (1000 / promptMs) * s.evaluated : 0,
      predicted_n: s.generated,
      predicted_ms: genMs,
      predicted_per_token_ms: steps > 0 ? genMs / steps : 0,
      predicted_per_second: genMs > 0 ? (1000 / genMs) * steps : 0,
      ...(drafts === undefined || drafts.drafted === 0 ? {} : { draft_n: drafts.drafted, draft_n_accepted: drafts.accepted }),
    };
  }

  /** The session goes back to the pool: the generated tokens are counted, the slot is idle. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    const s = this.#slot;
    s.processing = false;
    this.#metrics.addPrediction(s.generated, Math.max(0, s.generated - 1), this.#genMs(), s.promptTokens + s.generated);
  }

  #genMs(): number {
    if (this.#lastToken === 0 || this.#promptDone === 0) return 0;
    // At least a microsecond, as llama-server clamps it: the first token can come at once.
    return Math.max(0.001, this.#lastToken - this.#promptDone);
  }
}

/** Where the gauges of a scrape come from (the pool, the context). */
export interface MetricsSources {
  /** Requests generating (sessions lent out). */
  busy: number;
  /** Requests waiting for a session. */
  queued: number;
  /** llama_decode calls so far. */
  decodeCalls: number;
  /** Tokens the whole KV cache holds (context size × sequences). */
  kvCacheSize: number;
}

interface Metric {
  name: string;
  help: string;
  type: "counter" | "gauge";
  value: number;
}

/** The server's counters since it started, and its sequences. */
export class ServerMetrics {
  /** When the server started (Unix seconds), for the Process-Start-Time-Unix header. */
  readonly startTime = Math.floor(Date.now() / 1000);
  readonly #prompt = new Bucket();
  readonly #predict = new Bucket();
  #promptWindow = new Bucket();
  #predictWindow = new Bucket();
  #promptCached = 0;
  #tokensMax = 0;
  #tasks = 0;
  readonly #slots = new Map<Session, SlotState>();

  /**
   * @param size sequences the server has (its `parallel`)
   * @param nCtx tokens each sequence holds
   */
  constructor(
    readonly size: number,
    readonly nCtx: number,
  ) {}

  /** A request got `session` for a prompt of `promptTokens` tokens. */
  begin(session: Session, promptTokens: number): RequestRecord {
    let slot = this.#slots.get(session);
    if (!slot) {
      slot = { id: this.#slots.size, session, task: 0, processing: false, promptTokens: 0, evaluated: 0, reused: 0, generated: 0, newLine: false };
      this.#slots.set(session, slot);
    }
    Object.assign(slot, { task: this.#tasks++, processing: true, promptTokens, evaluated: 0, reused: 0, generated: 0, newLine: false });
    return new RequestRecord(this, slot);
  }

  /** @internal */
  addPrompt(evaluated: number, reused: number, ms: number): void {
    this.#prompt.add(evaluated, evaluated, ms);
    this.#promptWindow.add(evaluated, evaluated, ms);
    this.#promptCached += reused;
  }

  /** @internal */
  addPrediction(tokens: number, steps: number, ms: number, sequenceLength: number): void {
    this.#predict.add(tokens, steps, ms);
    this.#predictWindow.add(tokens, steps, ms);
    this.#tokensMax = Math.max(this.#tokensMax, sequenceLength);
  }

  /** Tokens a sequence holds: its history when idle, prompt and generated tokens while it generates. */
  #cached(slot: SlotState): number {
    if (!slot.processing) {
      try {
        return slot.session.length;
      } catch {
        // busy or disposed: the counts below
      }
    }
    return slot.promptTokens + slot.generated;
  }

  /**
   * The metrics in Prometheus's text format (version 0.0.4), as llama-server writes them: the
   * rates are averaged over the time since the previous scrape, which starts a new window.
   */
  prometheus(sources: MetricsSources): string {
    const kvTokens = [...this.#slots.values()].reduce((n, s) => n + this.#cached(s), 0);
    const metrics: Metric[] = [
      { type: "counter", name: "prompt_tokens_total", help: "Number of prompt tokens processed, excluding cached tokens", value: this.#prompt.count },
      { type: "counter", name: "prompt_tokens_cached_total", help: "Number of prompt tokens reused from the cache", value: this.#promptCached },
      { type: "counter", name: "prompt_seconds_total", help: "Total time spent processing prompts", value: this.#prompt.ms / 1000 },
      { type: "counter", name: "tokens_predicted_total", help: "Number of generation tokens processed", value: this.#predict.count },
      { type: "counter", name: "tokens_predicted_seconds_total", help: "Total time spent generating tokens", value: this.#predict.ms / 1000 },
      { type: "counter", name: "n_decode_total", help: "Total number of llama_decode() calls", value: sources.decodeCalls },
      { type: "counter", name: "n_tokens_max", help: "Largest observed sequence length (prompt + generation)", value: this.#tokensMax },
      { type: "gauge", name: "prompt_tokens_seconds", help: "Average prompt throughput in tokens/s", value: this.#promptWindow.perSecond() },
      { type: "gauge", name: "predicted_tokens_seconds", help: "Average generation throughput in tokens/s", value: this.#predictWindow.perSecond() },
      { type: "gauge", name: "requests_processing", help: "Number of requests processing", value: sources.busy },
      { type: "gauge", name: "requests_deferred", help: "Number of requests deferred", value: sources.queued },
      { type: "gauge", name: "kv_cache_tokens", help: "KV-cache tokens in use, all sequences together", value: kvTokens },
      { type: "gauge", name: "kv_cache_usage_ratio", help: "KV-cache usage (1 = full)", value: sources.kvCacheSize > 0 ? kvTokens / sources.kvCacheSize : 0 },
    ];
    this.#promptWindow = new Bucket();
    this.#predictWindow = new Bucket();
    let text = "";
    for (const m of metrics) {
      text += `# HELP llamacpp:${m.name} ${m.help}\n# TYPE llamacpp:${m.name} ${m.type}\nllamacpp:${m.name} ${formatValue(m.value)}\n`;
    }
    return text;
  }

  /** Every sequence, in llama-server's /slots shape (the subset that applies). */
  slots(): Array<Record<string, unknown>> {
    const known = new Map([...this.#slots.values()].map((s) => [s.id, s]));
    return Array.from({ length: this.size }, (_, id) => {
      const base: Record<string, unknown> = { id, n_ctx: this.nCtx, speculative: false, is_processing: false };
      const s = known.get(id);
      if (!s) return base;
      return {
        ...base,
        id_task: s.task,
        is_processing: s.processing,
        n_prompt_tokens: this.#cached(s),
        n_prompt_tokens_processed: s.evaluated,
        n_prompt_tokens_cache: s.reused,
        next_token: [
          {
            has_next_token: s.processing,
            has_new_line: s.newLine,
            n_decoded: s.generated,
          },
        ],
      };
    });
  }
}

/** A sample value as Prometheus reads it. */
function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}
