import { DisposedError, LlamaError, checkOptions, invalidArgument } from "./errors.js";
import type { Model } from "./model.js";
import { createNativeContext } from "./context.js";
import type { NativeContext } from "./native.js";
import { CONTEXT_OPTIONS, EMBEDDING_CONTEXT_OPTIONS, type EmbeddingContextOptions, type Pooling } from "./options/context.js";
import { readOptions, type ParsedOptions } from "./options/spec.js";
import { optionKeys, rejectUnknownKeys } from "./options/suggest.js";

export type { EmbeddingContextOptions, Pooling };

/** Options of `embeddingContext.embed()`. */
export interface EmbedOptions {
  /** Scale each vector to unit length (L2). Default false. */
  normalize?: boolean;
}

/**
 * Embeddings of texts: `embed("text")` → Float32Array, `embed(["a", "b"])` → Float32Array[].
 * Many texts are embedded in one batch. With pooling "none" each result holds one vector per
 * token (tokens × dimension, row-major).
 */
export class EmbeddingContext {
  readonly model: Model;
  readonly #native: NativeContext;
  readonly #onDispose: Array<() => void> = [];
  #pooling: Exclude<Pooling, "model"> | undefined;
  #disposed = false;

  /** @internal Use model.createEmbeddingContext(). */
  static async create(model: Model, options: EmbeddingContextOptions): Promise<EmbeddingContext> {
    const { pooling, ...settings } = readOptions(EMBEDDING_CONTEXT_OPTIONS, options, "embedding context options", {
      defaults: true,
      scope: { trainingContext: model.info.trainContextSize },
    });
    // The rest of a context's settings, at their defaults.
    const rest = readOptions(CONTEXT_OPTIONS, settings, "embedding context options", { defaults: true }) as Required<ParsedOptions<typeof CONTEXT_OPTIONS>>;
    return new EmbeddingContext(model, await createNativeContext(model, { ...rest, embeddings: true, pooling: pooling ?? "model" }));
  }

  private constructor(model: Model, native: NativeContext) {
    this.model = model;
    this.#native = native;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** The pooling in use, known after the first embed(). */
  get pooling(): Exclude<Pooling, "model"> | undefined {
    return this.#pooling;
  }

  embed(text: string, options?: EmbedOptions): Promise<Float32Array>;
  embed(texts: readonly string[], options?: EmbedOptions): Promise<Float32Array[]>;
  async embed(input: string | readonly string[], options: EmbedOptions = {}): Promise<Float32Array | Float32Array[]> {
    this.#check();
    checkOptions("embed options", options);
    rejectUnknownKeys("embed options", options, optionKeys<EmbedOptions>({ normalize: true }));
    const single = typeof input === "string";
    const texts = single ? [input] : input;
    if (!Array.isArray(texts) || texts.some((t) => typeof t !== "string")) {
      invalidArgument("texts", "a string or an array of strings", input);
    }
    if (texts.length === 0) return [];
    const tokens = texts.map((t) => this.model.tokenize(t, { addSpecial: true }));
    const vectors = await this.#run(tokens, options.normalize ?? false);
    return single ? vectors[0] : vectors;
  }

  /**
   * Relevance scores of documents for a query, from a reranking model (pooling "rank"), in the
   * order of the documents. The pair is formatted as llama-server does: the model's "rerank"
   * template when it has one, else BOS query EOS SEP document EOS.
   */
  async rerank(query: string, documents: readonly string[]): Promise<number[]> {
    this.#check();
    if (typeof query !== "string") invalidArgument("query", "a string", query);
    if (!Array.isArray(documents) || documents.some((d) => typeof d !== "string")) {
      invalidArgument("documents", "an array of strings", documents);
    }
    const pairs = documents.map((doc) => this.#rerankTokens(query, doc));
    const scores = await this.#run(pairs, false);
    if (this.#pooling !== "rank") {
      throw new LlamaError("ERR_UNSUPPORTED", `rerank() needs pooling "rank" (a reranking model); this context pools with "${this.#pooling}"`);
    }
    return scores.map((v) => v[0]);
  }

  /** Frees the context. Safe to call more than once. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#native.dispose();
    for (const listener of this.#onDispose.splice(0)) listener();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal */
  onDispose(listener: () => void): void {
    this.#onDispose.push(listener);
  }

  async #run(tokens: Int32Array[], normalize: boolean): Promise<Float32Array[]> {
    const result = await this.#native.embed(tokens, normalize);
    this.#pooling = result.pooling as Exclude<Pooling, "model">;
    return result.vectors;
  }

  #rerankTokens(query: string, doc: string): Int32Array {
    const template = this.model.native.metaString("tokenizer.chat_template.rerank");
    if (template !== null) {
      const prompt = template.replaceAll("{query}", query).replaceAll("{document}", doc);
      return this.model.tokenize(prompt, { addSpecial: false, parseSpecial: true });
    }
    const st = this.model.specialTokens;
    const eos = st.eos ?? st.sep;
    const out: number[] = [];
    if (st.addBos && st.bos !== null) out.push(st.bos);
    out.push(...this.model.tokenize(query, { addSpecial: false }));
    if (st.addEos && eos !== null) out.push(eos);
    if (st.addSep && st.sep !== null) out.push(st.sep);
    out.push(...this.model.tokenize(doc, { addSpecial: false }));
    if (st.addEos && eos !== null) out.push(eos);
    return Int32Array.from(out);
  }

  #check(): void {
    if (this.#disposed) throw DisposedError.of("EmbeddingContext");
    if (this.model.disposed) throw new LlamaError("ERR_DISPOSED", "The model of this embedding context has been disposed");
  }
}
