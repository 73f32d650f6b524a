/**
 * The options of `train()` (src/train.ts) and the `llama-napi train` flags. native/Train.cc reads
 * every value that reaches llama.cpp, with no defaults of its own.
 */
import { defaultThreads } from "./context.js";
import { signalOption } from "./generate.js";
import { boolean, custom, integer, invalidValue, number, oneOf, type OptionsOf } from "./spec.js";

/** The optimizers of ggml-opt. */
export const OPTIMIZERS = ["adamw", "sgd"] as const;
/** The learning-rate schedules (after the warm-up). */
export const LR_SCHEDULES = ["constant", "linear", "cosine"] as const;

/** llama.cpp pads every context to a multiple of this many tokens. */
export const TRAIN_CONTEXT_GRANULE = 256;

/** What one optimizer step reports. */
export interface TrainStep {
  /** 0-based epoch. */
  epoch: number;
  /** Optimizer steps done so far (1 after the first), and how many the run will take in all. */
  step: number;
  steps: number;
  /** Mean cross-entropy (nats per token) of the step's batch, before the step. */
  loss: number;
  /** Fraction of the batch's next tokens the model ranked first. */
  accuracy: number;
  /** The learning rate the step used. */
  learningRate: number;
  tokensPerSecond: number;
}

/** What one epoch reports. */
export interface TrainEpoch {
  epoch: number;
  /** Optimizer steps done so far. */
  step: number;
  steps: number;
  /** Mean of the epoch's step losses. */
  loss: number;
  /** Loss and accuracy on the held-out windows (absent when validationSplit is 0). */
  validationLoss?: number;
  validationAccuracy?: number;
}

/** Which tensors train: "all", a list of names, a pattern, or a test on the name. */
export type TensorSelection = "all" | readonly string[] | RegExp | ((name: string) => boolean);

function tensorSelection(v: unknown): TensorSelection {
  if (v === "all" || v instanceof RegExp || typeof v === "function") return v as TensorSelection;
  if (Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === "string" && s !== "")) return [...(v as string[])];
  return invalidValue('"all", a non-empty array of tensor names, a RegExp or a function (name) => boolean');
}

function fn<F>(v: unknown): F {
  return typeof v === "function" ? (v as F) : invalidValue("a function");
}

/** The options of `train()`: type, range, default, doc comment and command-line flag of each. */
export const TRAIN_OPTIONS = {
  /** Passes over the training windows (default 1). */
  epochs: integer({ min: 1, max: 1_000_000, default: 1, flag: { name: "epochs", aliases: ["-e"], arg: "N", help: "passes over the data" } }),
  /** Peak learning rate (default 1e-4). */
  learningRate: number({ above: 0, default: 1e-4, flag: { name: "lr", arg: "X", help: "learning rate" } }),
  /** How the learning rate moves after the warm-up: "constant" (default), "linear" or "cosine" decay to minLearningRate. */
  schedule: oneOf(LR_SCHEDULES, { default: "constant", flag: { name: "schedule", arg: "constant|linear|cosine", help: "learning-rate schedule" } }),
  /** Where linear and cosine decay end (default 0). */
  minLearningRate: number({ min: 0, default: 0, flag: { name: "min-lr", arg: "X", help: "learning rate at the end of the decay" } }),
  /** Steps of linear warm-up from 0 to learningRate (default 0). */
  warmupSteps: integer({ min: 0, max: 2 ** 40, default: 0, flag: { name: "warmup", arg: "N", help: "warm-up steps" } }),
  /** "adamw" (default) or "sgd". */
  optimizer: oneOf(OPTIMIZERS, { default: "adamw", flag: { name: "optimizer", arg: "adamw|sgd", help: "optimizer" } }),
  /** Decoupled weight decay: each step multiplies the weights by 1 − learningRate·weightDecay (default 0). */
  weightDecay: number({ min: 0, max: 1, default: 0, flag: { name: "weight-decay", arg: "X", help: "weight decay" } }),
  /** AdamW's first-moment decay (default 0.9). */
  beta1: number({ min: 0, max: 1, default: 0.9 }),
  /** AdamW's second-moment decay (default 0.999). */
  beta2: number({ min: 0, max: 1, default: 0.999 }),
  /** AdamW's epsilon (default 1e-8). */
  epsilon: number({ min: 0, max: 1, default: 1e-8 }),
  /**
   * Tokens per training window (default 256). llama.cpp pads contexts to multiples of 256, so it
   * must be one; a model with learned positions (GPT-2) must have at least this many.
   */
  contextSize: custom<number>({
    expected: `a multiple of ${TRAIN_CONTEXT_GRANULE} up to 1048576`,
    parse: (v) =>
      typeof v === "number" && Number.isInteger(v) && v > 0 && v <= 1 << 20 && v % TRAIN_CONTEXT_GRANULE === 0
        ? v
        : invalidValue(`a multiple of ${TRAIN_CONTEXT_GRANULE} up to 1048576`),
    default: TRAIN_CONTEXT_GRANULE,
    flag: { name: "ctx-size", aliases: ["-c"], arg: "N", help: "tokens per training window (a multiple of 256)" },
    fromText: Number,
  }),
  /** Tokens per optimizer step, a divisor of contextSize (default: contextSize). */
  batchSize: integer({
    min: 1,
    max: 1 << 20,
    default: (_scope, values) => values.contextSize as number,
    defaultText: "--ctx-size",
    flag: { name: "batch-size", aliases: ["-b"], arg: "N", help: "tokens per optimizer step" },
  }),
  /** Fraction of the windows held out (the last ones) to measure the validation loss after each epoch (default 0). */
  validationSplit: number({ min: 0, max: 0.9, default: 0, flag: { name: "val-split", arg: "X", help: "fraction of windows held out" } }),
  /** Shuffle the order of the training windows every epoch (default true). */
  shuffle: boolean({ default: true, flag: { name: "shuffle", arg: "true|false", help: "shuffle the windows every epoch" } }),
  /** Seed of the shuffle (default 42). */
  seed: integer({ min: 0, max: 2 ** 32 - 1, default: 42, flag: { name: "seed", arg: "N", help: "seed of the shuffle" } }),
  /** CPU threads (default: the available CPUs, at most 16). */
  threads: integer({
    min: 1,
    max: 1024,
    default: defaultThreads,
    defaultText: "the available CPUs, at most 16",
    flag: { name: "threads", aliases: ["-t"], arg: "N", help: "CPU threads" },
  }),
  /**
   * Which tensors train (default "all"). llama.cpp never trains token_embd.weight (nor an output
   * projection tied to it); the summary lists the tensors that did train.
   */
  tensors: custom<TensorSelection>({
    expected: '"all", a non-empty array of tensor names, a RegExp or a function (name) => boolean',
    parse: tensorSelection,
    default: "all",
    flag: { name: "train-tensors", arg: "REGEX", help: "train only the tensors whose names match" },
    fromText: (t) => new RegExp(t),
  }),
  /** Called after every optimizer step. */
  onProgress: custom<(step: TrainStep) => void>({ expected: "a function", parse: fn<(step: TrainStep) => void> }),
  /** Called after every epoch (with the validation loss when validationSplit > 0). */
  onEpoch: custom<(epoch: TrainEpoch) => void>({ expected: "a function", parse: fn<(epoch: TrainEpoch) => void> }),
  /** Stops training before the next window; train() then resolves with `aborted: true`. */
  signal: signalOption,
} as const;

/**
 * Options of `train()`.
 * @interface
 */
export type TrainOptions = OptionsOf<typeof TRAIN_OPTIONS>;
