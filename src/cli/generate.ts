import { parseArgs } from "node:util";

import { AbortError } from "../errors.js";
import { loadModel } from "../model.js";
import { CONTEXT_OPTIONS } from "../options/context.js";
import { GENERATE_OPTIONS } from "../options/generate.js";
import { LOAD_OPTIONS } from "../options/load.js";
import { UsageError } from "./args.js";
import { draftAliases, draftHelp, draftParseOptions, readDraftFlags } from "./draft-flags.js";
import { expandAliases, flagGroup } from "./option-flags.js";

const generateFlags = flagGroup(GENERATE_OPTIONS, { help: { maxTokens: "tokens to generate (default 128)" } });
const contextFlags = flagGroup(CONTEXT_OPTIONS);
const loadFlags = flagGroup(LOAD_OPTIONS);

export const generateUsage = `llama-napi generate -m MODEL -p PROMPT [options]

Streams a completion of PROMPT to stdout.

  -m, --model PATH             GGUF model file
  -p, --prompt TEXT            prompt text
      --no-echo                do not print the prompt before the completion

Generation and sampling:
${generateFlags.help.join("\n")}

Speculative decoding:
${draftHelp.join("\n")}

Context:
${contextFlags.help.join("\n")}

Model:
${loadFlags.help.join("\n")}`;

export async function runGenerate(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: expandAliases(argv, [generateFlags, contextFlags, loadFlags], draftAliases),
    options: {
      model: { type: "string", short: "m" },
      prompt: { type: "string", short: "p" },
      "no-echo": { type: "boolean" },
      ...draftParseOptions,
      ...generateFlags.parseOptions,
      ...contextFlags.parseOptions,
      ...loadFlags.parseOptions,
    },
    strict: true,
  });
  if (!values.model) throw new UsageError("generate needs a model: -m MODEL");
  if (values.prompt === undefined) throw new UsageError("generate needs a prompt: -p PROMPT");
  const generateOptions = generateFlags.read(values);
  const contextOptions = contextFlags.read(values);
  const loadOptions = loadFlags.read(values);
  const draft = readDraftFlags(values);

  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  try {
    using model = await loadModel(values.model, { ...loadOptions, signal: controller.signal });
    // The draft model is loaded as MODEL is (same device and mapping settings).
    using draftModel = draft === undefined ? undefined : await loadModel(draft.path, { ...loadOptions, signal: controller.signal });
    using context = await model.createContext(contextOptions);
    using session = context.createSession();
    await session.prompt(values.prompt, { signal: controller.signal });
    // An encoder-decoder model (T5) writes its output after the input, not as its continuation.
    if (!values["no-echo"]) process.stdout.write(model.info.decoderStartToken === null ? values.prompt : `${values.prompt}\n`);
    const speculative = draft === undefined || draftModel === undefined ? {} : { speculative: { draft: draftModel, maxDraft: draft.maxDraft, minProbability: draft.minProbability } };
    const generation = session.generate({ maxTokens: 128, ...generateOptions, ...speculative, signal: controller.signal });
    for await (const { text } of generation) process.stdout.write(text);
    process.stdout.write("\n");
    return 0;
  } catch (err) {
    if (err instanceof AbortError) {
      process.stdout.write("\n");
      return 130;
    }
    throw err;
  } finally {
    process.off("SIGINT", onSigint);
  }
}
