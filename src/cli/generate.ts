import { parseArgs } from "node:util";

import { AbortError } from "../errors.js";
import { loadModel } from "../model.js";
import { UsageError, intOption, numberOption } from "./args.js";

export const generateUsage = `llama-napi generate -m MODEL -p PROMPT [options]

Streams a completion of PROMPT to stdout.

  -m, --model PATH      GGUF model file
  -p, --prompt TEXT     prompt text
  -n, --max-tokens N    tokens to generate (default 128)
      --temp T          temperature; 0 is greedy (default 0.8)
      --top-k K         (default 40)
      --top-p P         (default 0.95)
      --min-p P         (default 0.05)
      --seed S          random seed, for reproducible output
      --stop TEXT       stop when TEXT appears (repeatable)
  -t, --threads N       CPU threads (default: all available)
  -c, --ctx-size N      context size (default: the model's, at most 4096)
      --no-echo         do not print the prompt before the completion`;

export async function runGenerate(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string", short: "m" },
      prompt: { type: "string", short: "p" },
      "max-tokens": { type: "string", short: "n" },
      temp: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      "min-p": { type: "string" },
      seed: { type: "string" },
      stop: { type: "string", multiple: true },
      threads: { type: "string", short: "t" },
      "ctx-size": { type: "string", short: "c" },
      "no-echo": { type: "boolean" },
    },
    strict: true,
  });
  if (!values.model) throw new UsageError("generate needs a model: -m MODEL");
  if (values.prompt === undefined) throw new UsageError("generate needs a prompt: -p PROMPT");

  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  try {
    using model = await loadModel(values.model, { signal: controller.signal });
    using context = await model.createContext({
      threads: intOption(values.threads, "--threads"),
      contextSize: intOption(values["ctx-size"], "--ctx-size"),
    });
    using session = context.createSession();
    await session.prompt(values.prompt, { signal: controller.signal });
    if (!values["no-echo"]) process.stdout.write(values.prompt);
    const generation = session.generate({
      maxTokens: intOption(values["max-tokens"], "--max-tokens") ?? 128,
      temperature: numberOption(values.temp, "--temp"),
      topK: intOption(values["top-k"], "--top-k"),
      topP: numberOption(values["top-p"], "--top-p"),
      minP: numberOption(values["min-p"], "--min-p"),
      seed: intOption(values.seed, "--seed"),
      stop: values.stop,
      signal: controller.signal,
    });
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
