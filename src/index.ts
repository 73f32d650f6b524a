/**
 * llama-napi: run local LLMs (GGUF) in Node.js through a vendored llama.cpp.
 *
 * ```ts
 * import { loadModel } from "llama-napi";
 * const model = await loadModel("model.gguf");
 * const context = await model.createContext({ contextSize: 1024 });
 * const session = context.createSession();
 * await session.prompt("Once upon a time");
 * for await (const { text } of session.generate({ maxTokens: 40, temperature: 0 })) process.stdout.write(text);
 * model.dispose();
 * ```
 *
 * Two more entry points: `llama-napi/report` renders the explain report from `session.trace()`,
 * and `llama-napi/testing` writes GPT-2-shaped models with random weights for tests.
 *
 * @module llama-napi
 */
export { loadModel, Model, LARGE_METADATA_KEYS } from "./model.js";
export type {
  LoadModelOptions,
  ModelInfo,
  MetadataValue,
  SpecialTokens,
  TokenizeOptions,
  DetokenizeOptions,
  TokenAttributes,
} from "./model.js";
export { resolveModelFile, modelsDirectory } from "./model-files.js";
export type { ResolveModelFileOptions, DownloadProgress } from "./model-files.js";
export { Context, defaultThreads } from "./context.js";
export type { ContextOptions, ContextStats, KvCacheType } from "./context.js";
export { Session } from "./session.js";
export type { PromptOptions, PromptResult, GenerateOptions, LookupOptions, SpeculativeOptions } from "./session.js";
export type { PromptPart, MediaSource, ProjectorInfo, MediaEmbedding, MediaSpan } from "./media.js";
export { Generation } from "./generation.js";
export { EmbeddingContext } from "./embedding.js";
export type { EmbeddingContextOptions, EmbedOptions, Pooling } from "./embedding.js";
export { ChatTemplate, renderChat, builtinChatTemplates } from "./chat.js";
export type { ChatMessage, ChatContentPart, ChatRole, ChatTemplateEngine, ChatTemplateOptions, RenderChatOptions, RenderedChat, RenderedMedia, JsonValue } from "./chat.js";
export { ChatSession, ChatReply } from "./chat-session.js";
export type { ChatReplyBase } from "./chat-reply.js";
export type { ChatSessionOptions, ChatSendOptions, ChatTrimEvent, ChatTurnResult } from "./chat-session.js";
export type { ChatToolSendOptions } from "./chat-session.js";
export type { ChatMessageToolCall, ChatToolDefinition, ChatToolChoiceMode, ChatOutputFormat, JsonSchema, ReadonlyJsonValue } from "./chat.js";
export { ChatToolReply } from "./chat-tool-reply.js";
export { ChatOutputParser } from "./chat-tools.js";
export type {
  ChatTool,
  ChatTools,
  ChatToolChoice,
  ChatToolCall,
  ChatToolCallDelta,
  ChatPiece,
  ChatToolTurnResult,
  ChatReasoningOptions,
  ChatToolFields,
  ParsedChatOutput,
  ToolArguments,
  ToolCallContext,
} from "./chat-tools.js";
export type { GrammarTrigger } from "./options/sampling.js";
export { startServer } from "./server/server.js";
export type { ServerOptions, RunningServer } from "./server/server.js";
export { AttentionMap } from "./trace.js";
export type { TraceEncoder, TraceOptions, TraceResult, TokenProbability } from "./trace.js";
export type { GeneratedToken, FinishReason, GenerationResult, DraftStats } from "./generation.js";
export type { SamplingOptions, SamplerName, LogitBias } from "./options/sampling.js";
export { LlamaError, GgufError, AbortError, DisposedError, ContextFullError } from "./errors.js";
export type { LlamaErrorCode } from "./errors.js";
export { systemInfo, setLogLevel } from "./system.js";
export type { SystemInfo, LogLevel, Device, UnavailableModule } from "./system.js";
export { quantize, QUANT_TYPES, IMATRIX_QUANT_TYPES } from "./quantize.js";
export type { QuantType, QuantizeOptions, QuantizeResult } from "./quantize.js";
export { train, TRAIN_OPTIONS } from "./train.js";
export type { TrainData, TrainOptions, TrainSummary, TrainStep, TrainEpoch, TensorSelection } from "./train.js";
export { createModel, CREATE_MODEL_OPTIONS } from "./create-model.js";
export type { CreateModelOptions } from "./create-model.js";
export { readGguf, readTensorBytes, readTensorFloats, metadataValues, writeGguf, ggufValue, GgmlType, ggmlTypeInfo, tensorByteSize } from "./gguf/index.js";
export type { GgufFile, GgufMetadata, GgufValue, GgufTensorInfo, GgufTensorInput, WriteGgufInput, ReadGgufOptions } from "./gguf/index.js";
export type { GgmlTypeInfo, GgufScalarType, GgufScalarValue, GgufArrayValue, GgufScalarJsTypes, TensorData, TensorChunk, TensorChunks } from "./gguf/index.js";
export { startRpcServer, checkRpcServer } from "./rpc.js";
export type { RpcServer, RpcServerOptions } from "./rpc.js";
