/**
 * The options of `loadModel()`. native/Model.cc reads the ones that reach llama.cpp; the CLI's
 * load flags come from here too.
 */
import { signalOption } from "./generate.js";
import { boolean, custom, invalidValue, string, type OptionsOf } from "./spec.js";

function gpuLayers(v: unknown): number | "max" {
  const expected = 'a non-negative integer or "max"';
  if (v === "max") return v;
  if (typeof v === "string" && /^\d+$/.test(v)) v = Number(v); // from a command-line flag
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 100_000 ? v : invalidValue(expected);
}

function rpcServers(v: unknown): string[] {
  const expected = 'an array of 1 to 16 "host:port" strings';
  if (typeof v === "string") v = v.split(","); // from a command-line flag
  if (!Array.isArray(v) || v.length === 0 || v.length > 16) invalidValue(expected);
  if (v.some((s) => typeof s !== "string" || !/^.+:\d{1,5}$/.test(s))) invalidValue(expected);
  return [...(v as string[])];
}

function tensorSplit(v: unknown): number[] {
  const expected = "an array of non-negative numbers";
  if (typeof v === "string") v = v.split(",").map(Number); // from a command-line flag
  if (!Array.isArray(v) || v.length === 0 || v.some((x) => typeof x !== "number" || !Number.isFinite(x) || x < 0)) invalidValue(expected);
  return [...(v as number[])];
}

export const LOAD_OPTIONS = {
  /** Called with the load progress, from 0 to 1. */
  onProgress: custom<(progress: number) => void>({
    expected: "a function",
    parse: (v) => (typeof v === "function" ? (v as (progress: number) => void) : invalidValue("a function")),
  }),
  /** Aborts the load; the promise then rejects with an AbortError (ERR_ABORTED). */
  signal: signalOption,
  /** Memory-map the weights (default: llama.cpp's choice, which maps when it can). */
  useMmap: boolean(),
  /**
   * A multimodal projector (mmproj GGUF) to load with the model, for images and audio in prompts
   * (see `model.loadProjector()`).
   */
  projector: string({ flag: { name: "mmproj", arg: "PATH", help: "a multimodal projector: images and audio in prompts" } }),
  /** Load only the vocabulary (for tokenizing): fast, but the model cannot create contexts. */
  vocabOnly: boolean({ default: false }),
  /**
   * Put the model's layers on ggml RPC servers ("host:port", see `llama-napi rpc-server`), as
   * llama.cpp's --rpc does. A server that is unreachable, fails or speaks another protocol
   * version gives ERR_RPC.
   */
  rpcServers: custom<readonly string[], string[]>({
    expected: 'an array of 1 to 16 "host:port" strings',
    parse: rpcServers,
    flag: { name: "rpc", arg: "HOST:PORT,...", help: "put the layers on these RPC servers" },
  }),
  /** With rpcServers: the share of the layers each server gets, in order (e.g. [1, 3]). */
  tensorSplit: custom<readonly number[], number[]>({
    expected: "an array of non-negative numbers",
    parse: tensorSplit,
    flag: { name: "tensor-split", aliases: ["-ts"], arg: "A,B,...", help: "with --rpc: each server's share of the layers" },
  }),
  /**
   * Layers to offload to the GPU (a count, or "max" for all; default 0: CPU only). Needs a GPU
   * flavour (`npx llama-napi build --backend cuda|vulkan`, Metal on macOS); without a GPU device
   * the model runs on the CPU and a warning (code LLAMA_NAPI_NO_GPU) is emitted once.
   */
  gpuLayers: custom<number | "max">({
    expected: 'a non-negative integer or "max"',
    parse: gpuLayers,
    default: 0,
    flag: { name: "gpu-layers", aliases: ["-ngl"], arg: "N|max", help: "layers to offload to the GPU" },
    fromText: (t) => t,
  }),
} as const;

/**
 * Options of `loadModel()`.
 * @interface
 */
export type LoadModelOptions = OptionsOf<typeof LOAD_OPTIONS>;
