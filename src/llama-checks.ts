/**
 * Checks of a GGUF header for the values that make llama.cpp abort the process (GGML_ASSERT)
 * instead of reporting an error. loadModel() and quantize() run them before handing a file to
 * llama.cpp, so a malformed file is a GgufError instead of a crash. Each check names the assert
 * it mirrors (vendor/llama.cpp at the pinned commit); the loader fuzz (tests/gguf-llama.test.ts)
 * found them, and tests/fuzz/corpus keeps the files that crashed.
 */
import { GgufError } from "./errors.js";
import type { GgufFile, GgufMetadata, GgufValue } from "./gguf/index.js";

/** LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS in src/llama-hparams.h. */
const LLAMA_MAX_LAYERS = 512;
const LLAMA_MAX_EXPERTS = 1024;
/** LLAMA_ROPE_SCALING_TYPES in src/llama-model.cpp. */
const ROPE_SCALING_TYPES = new Set(["none", "linear", "yarn", "longrope"]);

/** A numeric scalar value, or undefined when the key is missing or not a number. */
function numberOf(value: GgufValue | undefined): number | undefined {
  if (value === undefined || value.type === "array" || value.type === "string" || value.type === "bool") return undefined;
  return Number(value.value);
}

/** The largest number of a numeric scalar or array value (get_key_or_arr reads either). */
function maxOf(value: GgufValue | undefined): number | undefined {
  if (value?.type === "array") {
    const items = (value.value as unknown[]).filter((v) => typeof v === "number" || typeof v === "bigint").map(Number);
    return items.length > 0 ? Math.max(...items) : undefined;
  }
  return numberOf(value);
}

/** llama-vocab.cpp: GGML_ASSERT(id_to_token.size() == token_to_id.size()), i.e. no two equal tokens. */
function duplicateToken(metadata: GgufMetadata): string | undefined {
  const tokens = metadata["tokenizer.ggml.tokens"];
  if (tokens?.type !== "array" || tokens.itemType !== "string" || tokens.truncatedFrom !== undefined) return undefined;
  const seen = new Map<string, number>();
  const list = tokens.value as string[];
  for (let i = 0; i < list.length; i++) {
    // llama.cpp renames empty tokens before it indexes them.
    const text = list[i] === "" ? `[EMPTY_${i}]` : list[i];
    const first = seen.get(text);
    if (first !== undefined) {
      return `tokens ${first} and ${i} of tokenizer.ggml.tokens are the same string ${JSON.stringify(text)}; every token must be unique`;
    }
    seen.set(text, i);
  }
  return undefined;
}

/** llama-model.cpp load_hparams: the asserts on the layer and expert counts and the RoPE scaling type. */
function badHyperparameters(metadata: GgufMetadata): string | undefined {
  const arch = metadata["general.architecture"];
  if (arch?.type !== "string") return undefined;
  const key = (name: string) => `${arch.value}.${name}`;
  const layers = numberOf(metadata[key("block_count")]);
  if (layers !== undefined && !(layers > 0 && layers <= LLAMA_MAX_LAYERS)) {
    return `${key("block_count")} is ${layers}; llama.cpp needs 1 to ${LLAMA_MAX_LAYERS} layers`;
  }
  const nextn = numberOf(metadata[key("nextn_predict_layers")]);
  if (layers !== undefined && nextn !== undefined && nextn > layers) {
    return `${key("nextn_predict_layers")} (${nextn}) is larger than ${key("block_count")} (${layers})`;
  }
  const experts = numberOf(metadata[key("expert_count")]) ?? 0;
  const used = maxOf(metadata[key("expert_used_count")]) ?? 0;
  const groups = numberOf(metadata[key("expert_group_count")]) ?? 0;
  const groupsUsed = numberOf(metadata[key("expert_group_used_count")]) ?? 0;
  const expertProblem =
    experts > LLAMA_MAX_EXPERTS ? `more than ${LLAMA_MAX_EXPERTS} experts`
    : used > experts ? "more experts used than there are"
    : experts > 0 && used <= 0 ? "experts but none used"
    : experts > 0 && groups >= experts ? "at least as many expert groups as experts"
    : experts > 0 && groups > 1 && (experts % groups !== 0 || groupsUsed <= 0 || groupsUsed >= groups) ? "an inconsistent expert grouping"
    : experts === 0 && groups !== 0 ? "expert groups but no experts"
    : undefined;
  if (expertProblem) {
    return `the expert counts (expert_count ${experts}, expert_used_count ${used}, expert_group_count ${groups}, expert_group_used_count ${groupsUsed}) describe ${expertProblem}`;
  }
  const rope = metadata[key("rope.scaling.type")];
  if (rope?.type === "string" && !ROPE_SCALING_TYPES.has(rope.value)) {
    return `${key("rope.scaling.type")} is ${JSON.stringify(rope.value)}; llama.cpp knows ${[...ROPE_SCALING_TYPES].join(", ")}`;
  }
  return undefined;
}

/**
 * The first value in the header that would make llama.cpp abort while loading the file, or
 * undefined. Read the header with a complete tokenizer.ggml.tokens array (no maxArrayLength).
 */
export function llamaLoadProblem(file: Pick<GgufFile, "metadata">): string | undefined {
  return duplicateToken(file.metadata) ?? badHyperparameters(file.metadata);
}

/** Throws a GgufError when llama.cpp would abort on this file instead of reporting an error. */
export function assertLlamaCanLoad(file: Pick<GgufFile, "metadata">, path: string): void {
  const problem = llamaLoadProblem(file);
  if (problem !== undefined) {
    throw new GgufError(`The GGUF file ${path} cannot be loaded: ${problem}. The file is damaged or was written by a faulty tool.`);
  }
}
