/**
 * The draft-model flags of `generate` and `serve` (speculative decoding), with llama.cpp's names:
 * `-md/--model-draft`, `--draft-max` (`--draft`, `--draft-n`, `--spec-draft-n-max`) and
 * `--draft-p-min` (`--spec-draft-p-min`).
 */
import { UsageError, intOption, numberOption } from "./args.js";

export const draftHelp = [
  "  -md, --model-draft PATH      a draft model for speculative decoding (it must share MODEL's vocabulary)",
  "      --draft-max N            longest draft (default 8)",
  "      --draft-p-min P          end a draft at a token the draft model gives less than P (default 0)",
];

export const draftParseOptions = {
  "model-draft": { type: "string" },
  "draft-max": { type: "string" },
  "draft-p-min": { type: "string" },
} as const;

/** llama.cpp's other spellings of the flags, for expandAliases. */
export const draftAliases: Record<string, string> = {
  "-md": "--model-draft",
  "--spec-draft-model": "--model-draft",
  "--draft": "--draft-max",
  "--draft-n": "--draft-max",
  "--spec-draft-n-max": "--draft-max",
  "--spec-draft-p-min": "--draft-p-min",
};

/** The draft settings given on the command line; undefined without --model-draft. */
export function readDraftFlags(values: { "model-draft"?: string; "draft-max"?: string; "draft-p-min"?: string }): { path: string; maxDraft?: number; minProbability?: number } | undefined {
  const maxDraft = intOption(values["draft-max"], "--draft-max");
  const minProbability = numberOption(values["draft-p-min"], "--draft-p-min");
  if (values["model-draft"] === undefined) {
    if (maxDraft !== undefined || minProbability !== undefined) throw new UsageError("--draft-max and --draft-p-min need a draft model: --model-draft PATH");
    return undefined;
  }
  return { path: values["model-draft"], ...(maxDraft === undefined ? {} : { maxDraft }), ...(minProbability === undefined ? {} : { minProbability }) };
}
