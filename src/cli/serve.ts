import { parseArgs } from "node:util";

import { CONTEXT_OPTIONS } from "../options/context.js";
import { LOAD_OPTIONS } from "../options/load.js";
import { startServer } from "../server/server.js";
import { UsageError, intOption } from "./args.js";
import { expandAliases, flagGroup } from "./option-flags.js";

const contextFlags = flagGroup(CONTEXT_OPTIONS, { help: { contextSize: "tokens per request, prompt and reply" } });
const loadFlags = flagGroup(LOAD_OPTIONS);

export const serveUsage = `llama-napi serve -m MODEL [options]

Serves MODEL over an OpenAI-compatible HTTP API: GET /health, GET /v1/models,
POST /v1/completions, POST /v1/chat/completions (stream: true for Server-Sent Events),
POST /v1/embeddings. Runs until Ctrl-C.

  -m, --model PATH            GGUF model file
      --host ADDRESS          address to listen on (default 127.0.0.1: this machine only)
      --port N                port (default 8080; 0 picks a free one)
  -np, --parallel N           requests generated at once, batched together (default 4)
      --api-key KEY           require "Authorization: Bearer KEY" (or set LLAMA_NAPI_API_KEY)
      --alias NAME            the model's id in the API (default: the file name)
      --chat-template T       a Jinja template or a built-in name (chatml, llama2, ...) instead of the model's
      --embedding-model PATH  the model for /v1/embeddings (default: MODEL, mean pooling)
      --quiet                 do not log requests

Context (one context with --parallel sequences serves every request):
${contextFlags.help.join("\n")}

Model:
${loadFlags.help.join("\n")}`;

export async function runServe(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: expandAliases(argv, [contextFlags, loadFlags], { "-np": "--parallel" }),
    options: {
      model: { type: "string", short: "m" },
      host: { type: "string" },
      port: { type: "string" },
      parallel: { type: "string" },
      "api-key": { type: "string" },
      alias: { type: "string" },
      "chat-template": { type: "string" },
      "embedding-model": { type: "string" },
      quiet: { type: "boolean" },
      ...contextFlags.parseOptions,
      ...loadFlags.parseOptions,
    },
    strict: true,
  });
  if (!values.model) throw new UsageError("serve needs a model: -m MODEL");
  const server = await startServer({
    model: values.model,
    host: values.host,
    port: intOption(values.port, "--port"),
    parallel: intOption(values.parallel, "--parallel"),
    ...contextFlags.read(values),
    load: loadFlags.read(values),
    apiKey: values["api-key"] ?? (process.env.LLAMA_NAPI_API_KEY || undefined),
    modelName: values.alias,
    chatTemplate: values["chat-template"],
    embeddingModel: values["embedding-model"],
    log: values.quiet ? undefined : (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
  });
  process.stdout.write(`llama-napi: serving ${values.model} at ${server.url} (Ctrl-C to stop)\n`);
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  await server.close();
  return 0;
}
