import fs from "node:fs";
import path from "node:path";

import { Context, type ContextOptions } from "./context.js";
import { EmbeddingContext, type EmbeddingContextOptions } from "./embedding.js";
import { AbortError, DisposedError, LlamaError, checkOptions, invalidArgument } from "./errors.js";
import {
  binding,
  type NativeModel,
  type NativeModelInfo,
  type NativeSpecialTokens,
  type NativeTokenAttributes,
} from "./native.js";
import { isRemoteModelRef, resolveModelFile } from "./model-files.js";
import { readPromptParts, type MediaEmbedding, type MediaSource, type ProjectorInfo } from "./media.js";
import { defaultThreads } from "./options/context.js";
import { LOAD_OPTIONS, type LoadModelOptions } from "./options/load.js";
import { readOptions } from "./options/spec.js";
import { onRpcFailure } from "./rpc.js";
import { resolveGpuLayers } from "./system.js";
import { toTokenArray } from "./tokens.js";

/** Options of {@link loadModel}. */
export type { LoadModelOptions };

/** A GGUF metadata value as JavaScript sees it (uint64 values beyond 2^53 are bigints). */
export type MetadataValue = string | number | bigint | boolean | MetadataValue[];

/** What a model is, from its GGUF header and llama.cpp. */
export interface ModelInfo extends Omit<NativeModelInfo, "chatTemplate"> {
  /** Size of the model file in bytes. */
  fileSizeBytes: number;
  /** The multimodal projector (model.loadProjector()): whether prompts take images or audio; null without one. */
  projector: Readonly<ProjectorInfo> | null;
}

/**
 * The model's special tokens (BOS, EOS, end of turn, fill-in-the-middle, ...): ids, or null where the model has none.
 * @interface
 */
export type SpecialTokens = NativeSpecialTokens;

/**
 * What llama.cpp knows about a token: its kind (`normal`, `control`, `userDefined`, `unknown`,
 * `unused`, `byte`; from the GGUF token types, adjusted per model) and how special-token text is
 * matched (`lstrip`, `rstrip`, `singleWord`, `normalized`).
 * @interface
 */
export type TokenAttributes = NativeTokenAttributes;

/** Options of `model.tokenize()`. */
export interface TokenizeOptions {
  /** Add the BOS/EOS tokens the model asks for (default true). */
  addSpecial?: boolean;
  /** Turn special-token text such as "<|endoftext|>" into the special token (default false). */
  parseSpecial?: boolean;
}

/** Options of `model.detokenize()`. */
export interface DetokenizeOptions {
  /** Drop the BOS/EOS tokens the model adds (default false). */
  removeSpecial?: boolean;
  /** Render special tokens as their text (default false). */
  unparseSpecial?: boolean;
  /**
   * Apply llama.cpp's clean-up of spaces (Hugging Face's `clean_up_tokenization_spaces`):
   * " ." " ," " !" " ?" lose the space, " ' " becomes "'", and " 's" " 'm" " 're" " 've" lose the
   * space. Default: false, so that detokenize(tokenize(text)) gives back the text, as the
   * tokenizers' reference implementations (tiktoken for GPT-2, SentencePiece) do; true for
   * WordPiece (BERT) vocabularies, whose text does not survive tokenization anyway (lower case,
   * split punctuation) and whose reference decoder cleans up, as llama.cpp does.
   */
  cleanUpSpaces?: boolean;
}

/** GGUF keys left out of `model.metadata` because they hold the whole vocabulary. */
export const LARGE_METADATA_KEYS: ReadonlySet<string> = new Set([
  "tokenizer.ggml.tokens",
  "tokenizer.ggml.scores",
  "tokenizer.ggml.token_type",
  "tokenizer.ggml.merges",
  "tokenizer.ggml.precompiled_charsmap",
]);

/**
 * Loads a GGUF model. Loading runs off the event loop. `modelPath` may also be an http(s) URL or
 * `hf:OWNER/REPO/FILE.gguf`: the file is downloaded into the cache folder first, unless it is
 * there already (see {@link resolveModelFile}; `llama-napi pull` shows the download's progress).
 *
 * ```ts
 * const model = await loadModel("model.gguf", { onProgress: (p) => console.log(p) });
 * ```
 */
export async function loadModel(modelPath: string, options: LoadModelOptions = {}): Promise<Model> {
  if (typeof modelPath !== "string" || modelPath === "") invalidArgument("modelPath", "a non-empty string", modelPath);
  const { onProgress, signal, useMmap, vocabOnly, rpcServers, tensorSplit, gpuLayers, projector } = readOptions(LOAD_OPTIONS, options, "load options", { defaults: true });
  if (projector !== undefined && vocabOnly) invalidArgument("projector", "unset with vocabOnly (a projector needs the weights)", projector);
  if (tensorSplit !== undefined && rpcServers === undefined) invalidArgument("tensorSplit", "used together with rpcServers", tensorSplit);
  if (signal?.aborted) throw new AbortError("Loading was aborted before it started", { cause: signal.reason });
  // "hf:OWNER/REPO/FILE.gguf" or a URL: the cached file, downloaded first when it is not there.
  const resolved = isRemoteModelRef(modelPath) ? await resolveModelFile(modelPath, { signal }) : path.resolve(modelPath);
  const native = new (binding().Model)();
  const onAbort = () => native.abortLoad();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    // The native load reads and checks the header first: llama.cpp aborts the process on a few
    // malformed values, which are refused there with ERR_GGUF_INVALID.
    const loadOptions = {
      ...(useMmap === undefined ? {} : { useMmap }),
      vocabOnly: vocabOnly ?? false,
      gpuLayers: resolveGpuLayers(gpuLayers, { remote: rpcServers !== undefined }),
      ...(rpcServers ? { rpcServers, tensorSplit } : {}),
    };
    const loaded = native.load(resolved, loadOptions, onProgress);
    if (rpcServers) {
      // A server that dies while the weights are uploaded leaves the native load waiting forever:
      // the failure notification settles the promise instead.
      let unsubscribe = () => {};
      const failed = new Promise<never>((_, reject) => (unsubscribe = onRpcFailure(reject)));
      try {
        await Promise.race([loaded, failed]);
      } finally {
        unsubscribe();
      }
    } else {
      await loaded;
    }
    if (signal?.aborted) throw new AbortError(`Loading ${resolved} was aborted`, { cause: signal.reason });
    const stat = await fs.promises.stat(resolved);
    const metadata = native.metadata();
    const model = new Model(native, resolved, metadata, stat.size);
    if (rpcServers) model.watchRpc();
    if (projector !== undefined) await model.loadProjector(projector);
    return model;
  } catch (err) {
    native.dispose();
    throw err;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/** A loaded model: its weights, vocabulary and metadata. Create contexts from it to run it. */
export class Model {
  /** Absolute path of the model file. */
  readonly path: string;
  /** Every GGUF metadata key except the large tokenizer arrays (see LARGE_METADATA_KEYS). */
  readonly metadata: Readonly<Record<string, MetadataValue>>;
  readonly specialTokens: SpecialTokens;
  /** The chat template stored in the model, if any. */
  readonly chatTemplate: string | null;

  readonly #native: NativeModel;
  #info: ModelInfo;
  readonly #contexts = new Set<Context | EmbeddingContext>();
  #tensors: ReadonlyArray<{ name: string; type: string; shape: number[] }> | undefined;
  #failure: LlamaError | undefined;
  #unwatch: (() => void) | undefined;
  #disposed = false;

  /** @internal Use loadModel(). */
  constructor(native: NativeModel, modelPath: string, metadata: Record<string, MetadataValue>, fileSize: number) {
    this.#native = native;
    this.path = modelPath;
    const { chatTemplate, ...info } = native.info();
    this.#info = Object.freeze({ ...info, fileSizeBytes: fileSize, projector: null });
    this.chatTemplate = chatTemplate;
    this.metadata = Object.freeze(metadata);
    this.specialTokens = Object.freeze(native.specialTokens());
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** What the model is: architecture, sizes, and `projector` (what it takes beside text). */
  get info(): ModelInfo {
    return this.#info;
  }

  /**
   * The projector's output for one image or audio item (what a session evaluates in its place),
   * computed off the event loop: for looking inside, and for comparing with other tools.
   */
  async encodeMedia(item: { image: MediaSource } | { audio: MediaSource }): Promise<MediaEmbedding> {
    this.#check();
    const projector = this.#info.projector;
    if (projector === null) throw new LlamaError("ERR_STATE", "This model has no projector: load one with model.loadProjector(path)");
    const { media } = await readPromptParts([item], projector);
    return this.#native.encodeMedia(media[0]!);
  }

  /**
   * Loads a multimodal projector (an mmproj GGUF made for this model) with llama.cpp's libmtmd,
   * off the event loop: then prompts take images and audio (`session.prompt([...parts])`, chat
   * messages with image and audio parts). A model holds one projector. ERR_FILE_NOT_FOUND,
   * ERR_GGUF_INVALID (not a projector), ERR_UNSUPPORTED (made for a model of another width, or a
   * kind llama-napi cannot evaluate yet).
   */
  async loadProjector(projectorPath: string, options: { threads?: number } = {}): Promise<ProjectorInfo> {
    this.#check();
    if (typeof projectorPath !== "string" || projectorPath === "") invalidArgument("projectorPath", "a non-empty string", projectorPath);
    checkOptions("options", options);
    const threads = options.threads ?? defaultThreads();
    if (!Number.isInteger(threads) || threads < 1 || threads > 512) invalidArgument("threads", "an integer from 1 to 512", threads);
    const info = await this.#native.loadProjector(path.resolve(projectorPath), threads);
    this.#info = Object.freeze({ ...this.#info, projector: Object.freeze(info) });
    return info;
  }

  /** @internal */
  get native(): NativeModel {
    this.#check();
    return this.#native;
  }

  /** Text to tokens. Accepts any length of text, including "". */
  tokenize(text: string, options: TokenizeOptions = {}): Int32Array {
    this.#check();
    if (typeof text !== "string") invalidArgument("text", "a string", text);
    checkOptions("options", options);
    return this.#native.tokenize(text, options.addSpecial ?? true, options.parseSpecial ?? false);
  }

  /**
   * Tokens to text: the text the tokens spell (for GPT-2, what tiktoken's decode gives), so that
   * detokenize(tokenize(text)) is the text; see DetokenizeOptions.cleanUpSpaces for the exceptions.
   */
  detokenize(tokens: ArrayLike<number>, options: DetokenizeOptions = {}): string {
    this.#check();
    checkOptions("options", options);
    const { removeSpecial, unparseSpecial, cleanUpSpaces } = options;
    return this.#native.detokenize(toTokenArray(tokens), removeSpecial ?? false, unparseSpecial ?? false, cleanUpSpaces);
  }

  /** The raw UTF-8 bytes of one token (a token can hold part of a character). */
  tokenToBytes(token: number, options: { special?: boolean } = {}): Uint8Array {
    this.#check();
    return this.#native.tokenToPiece(token, options.special ?? false);
  }

  /** The text of one token (a partial UTF-8 character shows as U+FFFD; see tokenToBytes). */
  tokenToPiece(token: number, options: { special?: boolean } = {}): string {
    return Buffer.from(this.tokenToBytes(token, options)).toString("utf8");
  }

  /** Whether the token ends generation (EOS, EOT and the model's other end tokens). */
  isEndOfGeneration(token: number): boolean {
    this.#check();
    return this.#native.isEog(token);
  }

  /** Whether the token is a control token (rendered as nothing unless asked). */
  isControl(token: number): boolean {
    this.#check();
    return this.#native.isControl(token);
  }

  /** The token's attribute flags (kind: normal, control, byte, unknown, ...). */
  tokenAttributes(token: number): TokenAttributes {
    this.#check();
    return this.#native.tokenAttributes(token);
  }

  /** The token as the vocabulary stores it, before decoding (GPT-2 stores " world" as "Ġworld"). */
  tokenText(token: number): string {
    this.#check();
    return this.#native.tokenText(token);
  }

  /** The learned embedding vector of a token (a row of token_embd.weight), as float32. */
  tokenEmbedding(token: number): Float32Array {
    this.#check();
    if (!Number.isInteger(token) || token < 0 || token >= this.info.vocabSize) {
      throw new LlamaError("ERR_TOKEN_INVALID", `Token ${String(token)} is out of range: this model's token ids are 0..${this.info.vocabSize - 1}`);
    }
    return this.#native.embeddingRows("token_embd.weight", token, 1);
  }

  /**
   * The learned position embedding of a position (a row of position_embd.weight), for models
   * that have one, like GPT-2. Models that encode positions otherwise (RoPE) throw ERR_UNSUPPORTED.
   */
  positionEmbedding(position: number): Float32Array {
    this.#check();
    if (!Number.isInteger(position) || position < 0) invalidArgument("position", "a non-negative integer", position);
    return this.#native.embeddingRows("position_embd.weight", position, 1);
  }

  /** The model's tensors: name, ggml type and shape (ggml order: the row length first). */
  get tensors(): ReadonlyArray<{ name: string; type: string; shape: number[] }> {
    this.#check();
    this.#tensors ??= Object.freeze(this.#native.tensors());
    return this.#tensors;
  }

  /**
   * Writes the model, with whatever `train()` changed, as a GGUF file (llama.cpp's
   * llama_model_save_to_file), off the event loop. ERR_BUSY while the model trains.
   */
  async save(file: string): Promise<void> {
    this.#check();
    if (typeof file !== "string" || file === "") invalidArgument("path", "a non-empty path", file);
    await binding().saveModel(this.#native, path.resolve(file));
  }

  /** Creates a context (KV cache and decode thread) to evaluate and generate with this model. */
  async createContext(options: ContextOptions = {}): Promise<Context> {
    this.#check();
    const context = await Context.create(this, options);
    if (this.#disposed) {
      context.dispose();
      throw DisposedError.of("Model");
    }
    this.#contexts.add(context);
    context.onDispose(() => this.#contexts.delete(context));
    return context;
  }

  /** Creates a context that computes embeddings (and reranking scores) with this model. */
  async createEmbeddingContext(options: EmbeddingContextOptions = {}): Promise<EmbeddingContext> {
    this.#check();
    const context = await EmbeddingContext.create(this, options);
    if (this.#disposed) {
      context.dispose();
      throw DisposedError.of("Model");
    }
    this.#contexts.add(context);
    context.onDispose(() => this.#contexts.delete(context));
    return context;
  }

  /** @internal The model's layers are on RPC servers: when one fails, its contexts stop with ERR_RPC. */
  watchRpc(): void {
    const unsubscribe = onRpcFailure((error) => {
      this.#failure = error;
      for (const context of [...this.#contexts]) {
        if (context instanceof Context) context.abandon(error);
        else context.dispose();
      }
    });
    this.#unwatch = unsubscribe;
  }

  /** Frees the model and every context made from it. Safe to call more than once. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#unwatch?.();
    for (const context of [...this.#contexts]) context.dispose();
    this.#native.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #check(): void {
    if (this.#failure) throw this.#failure;
    if (this.#disposed) throw DisposedError.of("Model");
  }
}
