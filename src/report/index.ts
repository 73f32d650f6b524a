/**
 * `llama-napi/report`: the explain report, a self-contained HTML page that shows what a model did
 * with a prompt (tokens, attention heatmaps, logit lens, next-token distribution; for an
 * encoder-decoder model also the encoder's attention and the cross-attention as a source × target
 * alignment grid), and the pieces it is made of. `llama-napi explain` is the same report from the command line.
 *
 * ```ts
 * import { loadModel } from "llama-napi";
 * import { positionEncodingOf, renderExplainReport } from "llama-napi/report";
 *
 * const model = await loadModel("model.gguf");
 * const session = (await model.createContext()).createSession();
 * const trace = await session.trace("The cat sat on the", { attention: true, logitLens: true });
 * const html = renderExplainReport(trace, { model: model.info.name, prompt: "The cat sat on the", positionEncoding: positionEncodingOf(model.info) });
 * ```
 *
 * @module llama-napi/report
 */
export { renderExplainReport } from "./html.js";
export { buildExplainData, positionEncodingOf } from "./data.js";
export type { ExplainReportInfo, ExplainData, ExplainAttentionData, ExplainCrossAttentionData, ExplainEncoderData, PositionEncoding } from "./data.js";
export { attentionPng, defaultAttentionScale, encodePng, decodePng } from "./png.js";
export type { AttentionPngOptions, DecodedPng } from "./png.js";
export { visibleToken } from "./text.js";
