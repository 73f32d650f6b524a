/**
 * The addon's interface as TypeScript sees it: what `binding()` (src/native.ts) returns and what
 * its objects take and give. Internal: the public API wraps every one of these.
 */
import type { LlamaError } from "./errors.js";
import type { MediaEmbedding, MediaSpan, ProjectorInfo } from "./media.js";
import type { CONTEXT_OPTIONS, Pooling } from "./options/context.js";
import type { SAMPLING_OPTIONS } from "./options/sampling.js";
import type { ParsedOptions } from "./options/spec.js";

export interface NativeModelInfo {
  architecture: string;
  name: string;
  description: string;
  parameters: number;
  sizeBytes: number;
  vocabSize: number;
  vocabType: string;
  trainContextSize: number;
  embeddingSize: number;
  layers: number;
  heads: number;
  headsKv: number;
  fileType: string;
  learnedPositions: boolean;
  /** An encoder (T5, BERT-style encoders). With a decoder too, sessions encode their prompt and the decoder generates. */
  hasEncoder: boolean;
  hasDecoder: boolean;
  /** An encoder-decoder model: the token its decoder starts from (after each new prompt); otherwise null. */
  decoderStartToken: number | null;
  /** The decoder's blocks (for an encoder-decoder model `layers` counts the encoder's); 0 without a decoder. */
  decoderLayers: number;
  recurrent: boolean;
  chatTemplate: string | null;
}

export interface NativeSpecialTokens {
  bos: number | null;
  eos: number | null;
  eot: number | null;
  sep: number | null;
  nl: number | null;
  pad: number | null;
  mask: number | null;
  fimPre: number | null;
  fimSuf: number | null;
  fimMid: number | null;
  fimPad: number | null;
  fimRep: number | null;
  fimSep: number | null;
  addBos: boolean;
  addEos: boolean;
  addSep: boolean;
}

/** llama.cpp's attribute flags of a token (llama_token_attr). */
export interface NativeTokenAttributes {
  unknown: boolean;
  unused: boolean;
  normal: boolean;
  control: boolean;
  userDefined: boolean;
  byte: boolean;
  normalized: boolean;
  lstrip: boolean;
  rstrip: boolean;
  singleWord: boolean;
}

export interface NativeModel {
  load(
    path: string,
    options: { useMmap?: boolean; vocabOnly?: boolean; rpcServers?: string[]; tensorSplit?: number[]; gpuLayers?: number },
    onProgress?: (progress: number) => void,
  ): Promise<void>;
  abortLoad(): void;
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  /** cleanUpSpaces undefined: the vocabulary's default (only WordPiece vocabularies clean up). */
  detokenize(tokens: Int32Array | number[], removeSpecial: boolean, unparseSpecial: boolean, cleanUpSpaces?: boolean): string;
  tokenToPiece(token: number, special: boolean): Uint8Array;
  specialTokens(): NativeSpecialTokens;
  isEog(token: number): boolean;
  isControl(token: number): boolean;
  tokenAttributes(token: number): NativeTokenAttributes;
  tokenText(token: number): string;
  loadProjector(path: string, threads: number): Promise<ProjectorInfo>;
  projectorInfo(): ProjectorInfo | undefined;
  encodeMedia(bytes: Uint8Array): Promise<MediaEmbedding>;
  metaString(key: string): string | null;
  metadata(): Record<string, string | number | bigint | boolean | Array<string | number | boolean>>;
  embeddingRows(tensor: "token_embd.weight" | "position_embd.weight", row: number, count: number): Float32Array;
  tensors(): Array<{ name: string; type: string; shape: number[] }>;
  dispose(): void;
}

/**
 * Context options as the native layer takes them: every entry of CONTEXT_OPTIONS with its default
 * filled in (native/Context.cc sets none of its own), and what kind of context it is.
 */
export type NativeContextOptions = Required<ParsedOptions<typeof CONTEXT_OPTIONS>> & {
  embeddings: boolean;
  /** Only for embedding contexts. */
  pooling?: Pooling;
};

export interface NativeContextInfo {
  contextSize: number;
  sessionCapacity: number;
  batchSize: number;
  sequences: number;
  freeSequences: number;
  threads: number;
  threadsBatch: number;
  canShift: boolean;
}

export interface NativeContextStats {
  decodeCalls: number;
  tokensDecoded: number;
  maxSequencesPerBatch: number;
  contextShifts: number;
}

export interface NativeContext {
  init(model: NativeModel, options: NativeContextOptions): Promise<void>;
  info(): NativeContextInfo;
  stats(): NativeContextStats;
  embed(texts: Int32Array[], normalize: boolean): Promise<{ pooling: string; dim: number; vectors: Float32Array[] }>;
  setLora(adapters: Array<{ path: string; scale: number }>): Promise<void>;
  abandon(message: string): void;
  dispose(): void;
}

/**
 * Sampling options as the native layer takes them: every entry of SAMPLING_OPTIONS, checked, with
 * the defaults filled in (native/Sampler.cc sets none of its own).
 */
export type NativeSampling = ParsedOptions<typeof SAMPLING_OPTIONS>;

export interface NativeGenerateOptions {
  maxTokens?: number;
  stop?: string[];
  sampling?: NativeSampling;
  logprobs?: number;
  contextShift?: { keep?: number };
  logitsProcessor?: (logits: Float32Array, tokens: Int32Array) => void;
  /** Special tokens whose text is written out (native/TextStream.cc). */
  preservedTokens?: string[];
  /** N-gram lookup decoding (native/EngineLookup.cc). */
  lookup?: { ngramSize: number; ngramMin: number; maxDraft: number };
  /** Speculative decoding with a draft model (native/EngineDraft.cc). */
  speculative?: { draft: NativeModel; maxDraft: number; minProbability: number };
  /** Evaluated first, as prompt(tokens) would, in the batches of the first token (decoder-only models). */
  prompt?: Int32Array;
}

/** A generation's prompt is in the KV cache: tokens decoded and tokens kept from the cache. */
export interface NativePromptDone {
  evaluated: number;
  reused: number;
}

export interface NativeGenerationDone {
  reason: "eog" | "length" | "stop" | "aborted" | "contextFull" | "error";
  error?: LlamaError;
  /** With lookup or a draft model: draft tokens decoded, and those kept. */
  drafted?: number;
  accepted?: number;
}

/** Log-probabilities of a chunk: the chosen tokens', and per token the top alternatives. */
export type NativeLogprobs = [chosen: Float32Array, top: Array<[tokens: Int32Array, logprobs: Float32Array]>];

export type NativeChunkCallback = (
  tokens: Int32Array,
  texts: string[],
  done: NativeGenerationDone | undefined,
  logprobs: NativeLogprobs | undefined,
  prompted: NativePromptDone | undefined,
) => void;

export interface NativeSessionInfo {
  sequence: number;
  busy: boolean;
  capacity: number;
  length?: number;
  cached?: number;
  decoded?: number;
  hasLogits?: boolean;
}

export interface NativeTraceResult {
  tokens: Int32Array;
  firstNew: number;
  heads: number;
  headsKv: number;
  embeddingSize: number;
  layers: number[];
  attention?: Float32Array[];
  hidden?: Float32Array[];
  lens?: Array<[tokens: Int32Array, probabilities: Float32Array]>;
  logits: Float32Array;
  media: MediaSpan[];
  /** Encoder-decoder models: the encoder's input and self-attention. */
  encoder?: { tokens: Int32Array; layers: number[]; attention?: Float32Array[] };
  crossAttention?: Float32Array[];
}

export interface NativeSession {
  prompt(tokens: Int32Array | number[], append: boolean): Promise<{ evaluated: number; reused: number; encoded?: number }>;
  logits(): Float32Array;
  generate(options: NativeGenerateOptions, onChunk: NativeChunkCallback): void;
  setPaused(paused: boolean): void;
  abort(): void;
  history(): Int32Array;
  encoderTokens(): Int32Array;
  promptMedia(text: string, media: Uint8Array[], append: boolean, addSpecial: boolean, parseSpecial: boolean): Promise<{ evaluated: number; reused: number; media: number[] }>;
  truncate(length: number): void;
  fork(target: NativeSession): Promise<void>;
  saveState(): Promise<Buffer>;
  loadState(data: Uint8Array): Promise<void>;
  trace(
    tokens: Int32Array,
    options: { attention?: boolean; hiddenStates?: boolean; logitLens?: number; layers?: number[] },
  ): Promise<NativeTraceResult>;
  info(): NativeSessionInfo;
  dispose(): void;
}

/** A ggml device as native/Backends.cc reports it. */
export interface NativeDevice {
  name: string;
  description: string;
  /** The backend's registry name ("CPU", "CUDA", "Vulkan", "Metal", "RPC", ...). */
  backend: string;
  type: "cpu" | "gpu" | "igpu" | "accel" | "other";
  /** The file the backend comes from: a module (libggml-cpu-haswell.so) or the addon itself. */
  library: string;
  /** The backend's features ("AVX2", "AVX512", "CUDA_ARCHS=900", ...). */
  features: string[];
  memoryTotal: number;
  memoryFree: number;
}

export interface NativeSystemInfo {
  llamaSystemInfo: string;
  supportsMmap: boolean;
  supportsGpuOffload: boolean;
  supportsRpc: boolean;
  maxSequences: number;
  /** The folder backend modules were loaded from (the addon's, or LLAMA_NAPI_BACKEND_DIR). */
  backendDir: string;
  devices: NativeDevice[];
  /** Backend modules that were not loaded (a GPU module whose driver is missing), could not be loaded, or gave no device. */
  unavailableModules: UnavailableModule[];
}

/** A backend module that gives no device, and why (see {@link SystemInfo.unavailableGpuModules}). */
export interface UnavailableModule {
  /** Its file name ("libggml-cuda.so"). */
  module: string;
  /**
   * Why: "not loaded: the NVIDIA driver (libcuda.so.1) is not installed: ...", "cannot be
   * loaded: libcublas.so.13: cannot open shared object file: ...", or "loaded, but found no
   * device ...".
   */
  reason: string;
}

export interface NativeQuantizeOptions {
  /** A quantisation type name, e.g. "Q4_K_M" (see src/quantize.ts). */
  type: string;
  /** Threads; 0 or missing: every core. */
  threads?: number;
  allowRequantize?: boolean;
}

/** A running quantisation: abort() stops it before the next tensor. */
export interface NativeQuantizeJob {
  promise: Promise<{ tensors: number }>;
  abort(): void;
}

/** A message as the native render reads it: role and content, plus the tool-calling fields. */
export interface NativeChatMessage {
  role: string;
  content: string;
  reasoning?: string;
  toolCalls?: ReadonlyArray<{ id: string; name: string; arguments: string }>;
  toolCallId?: string;
  toolName?: string;
}

/** The tool and thinking options of a native render (native/ChatTools.cc). */
export interface NativeToolRenderOptions {
  tools?: ReadonlyArray<{ name: string; description: string; parameters: string }>;
  toolChoice?: "auto" | "none" | "required";
  parallelToolCalls?: boolean;
  enableThinking?: boolean;
  reasoningFormat?: "auto" | "none";
}

/** What a render with tool or thinking options gives beyond the prompt (native/ChatTools.cc). */
export interface NativeToolRenderOutputs {
  format: string;
  formatId: number;
  grammar: string;
  grammarLazy: boolean;
  grammarTriggers: Array<{ type: "token" | "word" | "pattern" | "patternFull"; value: string }>;
  preservedTokens: string[];
  parser: string;
  supportsThinking: boolean;
  thinkingStartTag: string;
  thinkingEndTags: string[];
}

/** A chat output parser (native/ChatTools.cc): llama.cpp's PEG parser of one chat format. */
export interface NativeChatParser {
  /** Throws ERR_TOOL_CALL when a complete (not partial) text does not match the format. */
  parse(text: string, partial: boolean): { content: string; reasoning: string; toolCalls: Array<{ id: string; name: string; arguments: string }> };
}

/** A chat template (native/ChatTemplate.cc): parsed on its first Jinja render, then reused. */
export interface NativeChatTemplate {
  apply(
    messages: ReadonlyArray<NativeChatMessage>,
    options: { addGenerationPrompt?: boolean; engine?: "jinja" | "builtin"; kwargs?: Record<string, string> } & NativeToolRenderOptions,
  ): Promise<{ prompt: string; additionalStops: string[]; generationPrompt: string } & Partial<NativeToolRenderOutputs>>;
  /** The template text in use ("" when the model has none and none was given). */
  source(): string;
}

/** A training run as native/Train.cc takes it: every option filled in by src/options/train.ts. */
export interface NativeTrainOptions {
  contextSize: number;
  batchSize: number;
  epochs: number;
  learningRate: number;
  minLearningRate: number;
  schedule: "constant" | "linear" | "cosine";
  warmupSteps: number;
  optimizer: "adamw" | "sgd";
  weightDecay: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  validationWindows: number;
  threads: number;
  shuffle: boolean;
  seed: number;
  /** Names of the tensors that train. */
  tensors: string[];
}

/** A step or epoch event of a native training run. */
export interface NativeTrainEvent {
  type: "step" | "epoch";
  epoch: number;
  step: number;
  steps: number;
  loss: number;
  accuracy: number;
  learningRate: number;
  tokensPerSecond: number;
  validationLoss?: number;
  validationAccuracy?: number;
}

/** A running training: abort() stops it before the next window. */
export interface NativeTrainJob {
  promise: Promise<{ steps: number; epochs: number; aborted: boolean; trainWindows: number; validationWindows: number; trainedTensors: string[] }>;
  abort(): void;
}

export interface NativeBinding {
  Model: new () => NativeModel;
  Context: new () => NativeContext;
  Session: new (context: NativeContext) => NativeSession;
  setErrorFactory(factory: (code: string, message: string) => Error): void;
  setLogLevel(level: number): void;
  systemInfo(): NativeSystemInfo;
  /** @internal V8's external-memory count, which models and contexts report their memory to. */
  externalMemory(): number;
  /** @internal Stops the decode threads of this thread's contexts (at process or worker exit). */
  stopThreads(): void;
  rpcServe(endpoint: string, threads: number, memoryMiB: number): void;
  rpcProbe(endpoint: string, timeoutMs: number): Promise<void>;
  setRpcFailureHandler(handler: (message: string) => void): void;
  quantize(input: string, output: string, options: NativeQuantizeOptions, onProgress?: (progress: number) => void): NativeQuantizeJob;
  train(model: NativeModel, tokens: Int32Array, options: NativeTrainOptions, onEvent: (event: NativeTrainEvent) => void): NativeTrainJob;
  saveModel(model: NativeModel, path: string): Promise<void>;
  ChatTemplate: new (model: NativeModel | null, options: { template?: string; bosToken?: string; eosToken?: string }) => NativeChatTemplate;
  builtinChatTemplates(): string[];
  ChatParser: new (options: { format: number; parser: string; generationPrompt: string; reasoningFormat: "auto" | "none"; parseToolCalls: boolean }) => NativeChatParser;
}
