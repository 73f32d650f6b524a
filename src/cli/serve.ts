import { parseArgs } from "node:util";

import { CONTEXT_OPTIONS } from "../options/context.js";
import { LOAD_OPTIONS } from "../options/load.js";
import { DEFAULT_BATCH_WINDOW, startServer } from "../server/server.js";
import { UsageError, intOption, numberOption } from "./args.js";
import { draftAliases, draftHelp, draftParseOptions, readDraftFlags } from "./draft-flags.js";
import { expandAliases, flagGroup } from "./option-flags.js";

const contextFlags = flagGroup(CONTEXT_OPTIONS, {
  help: {
    contextSize: "tokens of the whole context, divided among --parallel sequences as llama-server's -c (default: the training context, at most 4096, per sequence)",
    batchWindow: `ms an idle context may wait for the prompts of clients answered together with the first, to decode them together; it stops once none came for a fifth of it (default ${DEFAULT_BATCH_WINDOW}; 0: none)`,
  },
});
const loadFlags = flagGroup(LOAD_OPTIONS);

export const serveUsage = `llama-napi serve -m MODEL [options]

Serves MODEL over an OpenAI-compatible HTTP API: GET /health, GET /v1/models,
POST /v1/completions, POST /v1/chat/completions (stream: true for Server-Sent Events),
POST /v1/embeddings; and llama-server's GET /props, POST /tokenize, /detokenize,
/apply-template, /infill (GET /metrics and /slots with --metrics and --slots). Runs until Ctrl-C.

  -m, --model PATH            GGUF model file
      --host ADDRESS          address to listen on (default 127.0.0.1: this machine only)
      --port N                port (default 8080; 0 picks a free one)
  -np, --parallel N           requests generated at once, batched together (default 4)
      --api-key KEY           require "Authorization: Bearer KEY" (or set LLAMA_NAPI_API_KEY)
      --alias NAME            the model's id in the API (default: the file name)
      --chat-template T       a Jinja template or a built-in name (chatml, llama2, ...) instead of the model's
      --embedding-model PATH  the model for /v1/embeddings (default: MODEL, mean pooling)
      --allow-image-urls      let image_url parts be http(s) URLs that the server fetches (with --mmproj;
                              default: data URIs only)
      --quiet                 do not log requests
      --metrics               serve GET /metrics (Prometheus text format)
      --slots                 serve GET /slots (each sequence's state)

Load, limits and shutdown:
      --max-queue N           requests that may wait for a session; more get 503 + Retry-After (default 256)
  -to, --timeout S            time limit of a request in seconds: no reply begun by then, 503;
                              a reply under way ends with finish_reason "length" (default 600; 0: none)
      --max-tokens-cap N      most tokens a reply may have, whatever max_tokens asks (default: none)
      --cors ORIGIN           allow browser calls from ORIGIN ("*": any); repeat for more origins
      --shutdown-timeout S    on SIGTERM or Ctrl-C, seconds running requests have to finish before
                              they are cancelled; new requests get 503 meanwhile (default 10);
                              a second signal cancels them at once

Speculative decoding (every request; responses' timings then have draft_n, draft_n_accepted):
${draftHelp.join("\n")}

Context (one context with --parallel sequences serves every request; -c, -np, -t, -tb, -b, -fa
and -kvu mean what they mean to llama-server: -c 4096 -np 4 gives each request 1024 tokens):
${contextFlags.help.join("\n")}

Model:
${loadFlags.help.join("\n")}`;

export async function runServe(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: expandAliases(argv, [contextFlags, loadFlags], { "-np": "--parallel", "-to": "--timeout", ...draftAliases }),
    options: {
      model: { type: "string", short: "m" },
      host: { type: "string" },
      port: { type: "string" },
      parallel: { type: "string" },
      "api-key": { type: "string" },
      alias: { type: "string" },
      "chat-template": { type: "string" },
      "embedding-model": { type: "string" },
      "allow-image-urls": { type: "boolean" },
      quiet: { type: "boolean" },
      metrics: { type: "boolean" },
      slots: { type: "boolean" },
      "max-queue": { type: "string" },
      timeout: { type: "string" },
      "max-tokens-cap": { type: "string" },
      cors: { type: "string", multiple: true },
      "shutdown-timeout": { type: "string" },
      ...draftParseOptions,
      ...contextFlags.parseOptions,
      ...loadFlags.parseOptions,
    },
    strict: true,
  });
  if (!values.model) throw new UsageError("serve needs a model: -m MODEL");
  const timeout = seconds(values.timeout, "--timeout");
  const drainSeconds = seconds(values["shutdown-timeout"], "--shutdown-timeout") ?? 10;
  const draft = readDraftFlags(values);
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
    allowImageUrls: values["allow-image-urls"],
    log: values.quiet ? undefined : (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
    maxQueue: intOption(values["max-queue"], "--max-queue"),
    requestTimeout: timeout === undefined ? undefined : Math.round(timeout * 1000),
    maxTokensCap: intOption(values["max-tokens-cap"], "--max-tokens-cap"),
    cors: values.cors,
    metrics: values.metrics,
    slots: values.slots,
    ...(draft === undefined ? {} : { speculative: { draft: draft.path, maxDraft: draft.maxDraft, minProbability: draft.minProbability } }),
  });
  process.stdout.write(`llama-napi: serving ${values.model} at ${server.url} (Ctrl-C to stop)\n`);
  // The first SIGINT or SIGTERM drains: no new requests (503), running ones have
  // --shutdown-timeout seconds to finish, then are cancelled. A second signal cancels them now.
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const stop = (name: NodeJS.Signals) => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve(name);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  process.stderr.write(`llama-napi: ${signal}: finishing the running requests (up to ${drainSeconds} s; ${signal} again to cancel them now)\n`);
  const now = () => void server.close({ drain: 0 });
  process.on("SIGINT", now);
  process.on("SIGTERM", now);
  try {
    await server.close({ drain: Math.round(drainSeconds * 1000) });
  } finally {
    process.off("SIGINT", now);
    process.off("SIGTERM", now);
  }
  return 0;
}

/** A flag in seconds (fractions allowed), not negative. */
function seconds(value: string | undefined, name: string): number | undefined {
  const s = numberOption(value, name);
  if (s !== undefined && s < 0) throw new UsageError(`${name} must be a number of seconds, 0 or more, got "${value}"`);
  return s;
}
