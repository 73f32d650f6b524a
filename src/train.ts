/**
 * Training and fine-tuning through llama.cpp's own optimizer (llama_opt_init / llama_opt_epoch:
 * ggml-opt's AdamW or SGD on F32 weights), off the event loop.
 *
 * ```ts
 * const model = await loadModel("tiny.gguf", { useMmap: false }); // the weights must be writable
 * const summary = await train(model, text, { epochs: 4, learningRate: 1e-3, onProgress: (s) => console.log(s.loss) });
 * await model.save("tiny-trained.gguf");
 * ```
 */
import { LlamaError, invalidArgument } from "./errors.js";
import { Model } from "./model.js";
import { binding, type NativeTrainEvent } from "./native.js";
import { TRAIN_OPTIONS, type TensorSelection, type TrainEpoch, type TrainOptions, type TrainStep } from "./options/train.js";
import { readOptions } from "./options/spec.js";

export type { TensorSelection, TrainEpoch, TrainOptions, TrainStep } from "./options/train.js";
export { TRAIN_OPTIONS } from "./options/train.js";

/**
 * The architectures whose llama.cpp graph has a backward pass for every operation (RMSNorm, RoPE,
 * softmax, SwiGLU), checked by tests/train.test.ts.
 */
export const TRAINABLE_ARCHITECTURES: readonly string[] = ["llama"];

/** What to train on: a text, tokens, or several of either (each text is tokenized with BOS). */
export type TrainData = string | Int32Array | readonly number[] | ReadonlyArray<string | Int32Array | readonly number[]>;

/** What {@link train} did. */
export interface TrainSummary {
  /** True when `signal` stopped it (the weights are those after the last completed step). */
  aborted: boolean;
  /** Epochs and optimizer steps completed. */
  epochs: number;
  steps: number;
  /** Tokens of the data, and tokens the optimizer stepped on (steps × batchSize). */
  dataTokens: number;
  trainedTokens: number;
  /** Windows of contextSize tokens trained on and held out. */
  trainWindows: number;
  validationWindows: number;
  /** The tensors that trained (llama.cpp never trains token_embd.weight). */
  trainedTensors: string[];
  seconds: number;
  /** trainedTokens / seconds (validation included in the time). */
  tokensPerSecond: number;
  /** Mean step loss of the last epoch (of the steps done, when aborted); undefined before any step. */
  loss: number | undefined;
  /** Validation loss after the last epoch (with validationSplit > 0). */
  validationLoss: number | undefined;
  /** Validation loss and accuracy of the model as it was before training (with validationSplit > 0). */
  initialValidationLoss: number | undefined;
  initialValidationAccuracy: number | undefined;
  /** Every step and epoch event, in order. */
  history: { steps: TrainStep[]; epochs: TrainEpoch[] };
}

function tokensOf(model: Model, data: TrainData): Int32Array {
  const one = (d: unknown, where: string): Int32Array => {
    if (typeof d === "string") return model.tokenize(d, { addSpecial: true });
    if (d instanceof Int32Array) return d;
    if (Array.isArray(d) && d.every((t) => typeof t === "number")) return Int32Array.from(d as number[]);
    return invalidArgument(where, "a string, an Int32Array or an array of token ids", d);
  };
  if (typeof data === "string" || data instanceof Int32Array) return one(data, "data");
  if (!Array.isArray(data)) return invalidArgument("data", "a string, tokens, or an array of strings or token arrays", data);
  if (data.length === 0 || data.every((t) => typeof t === "number")) return one(data, "data");
  const parts = data.map((d, i) => one(d, `data[${i}]`));
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function selectTensors(model: Model, selection: TensorSelection): string[] {
  const names = model.tensors.map((t) => t.name);
  if (selection === "all") return names;
  if (selection instanceof RegExp) return names.filter((n) => new RegExp(selection.source, selection.flags.replace("g", "")).test(n));
  if (typeof selection === "function") return names.filter((n) => selection(n) === true);
  const missing = selection.filter((n) => !names.includes(n));
  if (missing.length > 0) invalidArgument("train options.tensors", "names of tensors of the model", missing.join(", "));
  return [...selection];
}

/**
 * Trains `model` in place on `data` with llama.cpp's optimizer: the data is cut into windows of
 * `contextSize` tokens (each token predicts the next), the last `validationSplit` of them held
 * out, and every `batchSize` tokens make one optimizer step. Runs off the event loop.
 *
 * Needs F32 weights (llama.cpp trains nothing else; a quantised or F16 model is refused with
 * ERR_UNSUPPORTED) that are writable: load the model with `{ useMmap: false }`. Contexts of the
 * model must not evaluate while it trains. `signal` stops it before the next window; the promise
 * then resolves with `aborted: true` and the weights of the last completed step.
 */
export async function train(model: Model, data: TrainData, options: TrainOptions = {}): Promise<TrainSummary> {
  if (!(model instanceof Model)) invalidArgument("model", "a Model from loadModel()", model);
  const o = readOptions(TRAIN_OPTIONS, options, "train options", { defaults: true });
  const arch = model.info.architecture;
  if (!TRAINABLE_ARCHITECTURES.includes(arch)) {
    // ggml aborts the process on an op without a backward pass: refuse before llama.cpp builds the graph.
    throw new LlamaError(
      "ERR_UNSUPPORTED",
      `llama-napi trains only ${TRAINABLE_ARCHITECTURES.join(", ")} models, not ${arch}: the backward pass of the pinned ggml lacks operations ` +
        `other architectures use (GPT-2 and BERT: LayerNorm and GELU), and ggml aborts the process on them`,
    );
  }
  const contextSize = o.contextSize!;
  const batchSize = o.batchSize!;
  if (contextSize % batchSize !== 0) invalidArgument("train options.batchSize", `a divisor of contextSize (${contextSize})`, batchSize);
  const names = selectTensors(model, o.tensors!);
  if (names.length === 0) invalidArgument("train options.tensors", "a selection that matches at least one tensor", o.tensors);
  const byName = new Map(model.tensors.map((t) => [t.name, t]));
  // llama.cpp never trains these two (llama_set_param in src/llama-context.cpp), whatever their type.
  const untrainable = new Set(["token_embd.weight", "rope_freqs.weight"]);
  const notF32 = names.map((n) => byName.get(n)!).find((t) => !untrainable.has(t.name) && t.type.toUpperCase() !== "F32");
  if (notF32) {
    throw new LlamaError(
      "ERR_UNSUPPORTED",
      `Training needs F32 weights (llama.cpp's optimizer trains F32 tensors only); ${notF32.name} is ${notF32.type.toUpperCase()}. ` +
        'Convert the model first: quantize(input, output, { type: "F32" }) dequantises it (with allowRequantize: true for a quantised model)',
    );
  }
  const positions = byName.get("position_embd.weight")?.shape[1];
  if (positions !== undefined && contextSize > positions) {
    invalidArgument("train options.contextSize", `at most the model's ${positions} learned positions`, contextSize);
  }
  const tokens = tokensOf(model, data);
  const nVocab = model.info.vocabSize;
  const bad = tokens.findIndex((t) => t < 0 || t >= nVocab);
  if (bad >= 0) throw new LlamaError("ERR_TOKEN_INVALID", `Token ${tokens[bad]} at ${bad} is out of range: this model's token ids are 0..${nVocab - 1}`);
  const windows = Math.floor((tokens.length - 1) / contextSize);
  const validationWindows = o.validationSplit! > 0 ? Math.max(1, Math.round(windows * o.validationSplit!)) : 0;
  if (windows - validationWindows < 1) {
    const need = (validationWindows + 1) * contextSize + 1;
    throw new LlamaError("ERR_INVALID_ARGUMENT", `train needs at least ${need} tokens for contextSize ${contextSize}${validationWindows ? " and a validation window" : ""}; the data has ${tokens.length}`);
  }
  const history: TrainSummary["history"] = { steps: [], epochs: [] };
  let listenerError: unknown;
  let initialValidation: { loss: number; accuracy: number } | undefined;
  const started = performance.now();
  const job = binding().train(
    model.native,
    tokens,
    {
      contextSize,
      batchSize,
      epochs: o.epochs!,
      learningRate: o.learningRate!,
      minLearningRate: o.minLearningRate!,
      schedule: o.schedule!,
      warmupSteps: o.warmupSteps!,
      optimizer: o.optimizer!,
      weightDecay: o.weightDecay!,
      beta1: o.beta1!,
      beta2: o.beta2!,
      epsilon: o.epsilon!,
      validationWindows,
      threads: o.threads!,
      shuffle: o.shuffle!,
      seed: o.seed!,
      tensors: names,
    },
    (e: NativeTrainEvent) => {
      if (listenerError !== undefined) return; // stopping: no more listener calls
      try {
        if (e.type === "step") {
          const step: TrainStep = { epoch: e.epoch, step: e.step, steps: e.steps, loss: e.loss, accuracy: e.accuracy, learningRate: e.learningRate, tokensPerSecond: e.tokensPerSecond };
          history.steps.push(step);
          o.onProgress?.(step);
        } else if (e.epoch < 0) {
          initialValidation = { loss: e.validationLoss!, accuracy: e.validationAccuracy! };
        } else {
          const epoch: TrainEpoch = { epoch: e.epoch, step: e.step, steps: e.steps, loss: e.loss };
          if (e.validationLoss !== undefined) Object.assign(epoch, { validationLoss: e.validationLoss, validationAccuracy: e.validationAccuracy });
          history.epochs.push(epoch);
          o.onEpoch?.(epoch);
        }
      } catch (err) {
        listenerError ??= err;
        job.abort();
      }
    },
  );
  const signal = o.signal;
  const onAbort = () => job.abort();
  if (signal?.aborted) job.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  let r: Awaited<typeof job.promise>;
  try {
    r = await job.promise;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  if (listenerError !== undefined) throw listenerError;
  const seconds = (performance.now() - started) / 1000;
  const lastEpoch = history.epochs[history.epochs.length - 1];
  const tail = history.steps.filter((s) => s.epoch === (history.steps[history.steps.length - 1]?.epoch ?? -1));
  return {
    aborted: r.aborted,
    epochs: r.epochs,
    steps: r.steps,
    dataTokens: tokens.length,
    trainedTokens: r.steps * batchSize,
    trainWindows: r.trainWindows,
    validationWindows: r.validationWindows,
    trainedTensors: r.trainedTensors,
    seconds,
    tokensPerSecond: seconds > 0 ? (r.steps * batchSize) / seconds : 0,
    loss: tail.length > 0 ? tail.reduce((s, x) => s + x.loss, 0) / tail.length : undefined,
    validationLoss: lastEpoch?.validationLoss,
    initialValidationLoss: initialValidation?.loss,
    initialValidationAccuracy: initialValidation?.accuracy,
    history,
  };
}
