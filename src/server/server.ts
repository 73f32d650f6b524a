/**
 * An OpenAI-compatible HTTP server (Node's http module, no framework):
 *
 * - `GET /health`, `GET /v1/models`
 * - `POST /v1/completions`, `POST /v1/chat/completions` (with `stream: true`: Server-Sent Events
 *   in OpenAI's chunk format, ended by `data: [DONE]`)
 * - `POST /v1/embeddings`
 * - llama-server's operator endpoints (src/server/endpoints.ts): `GET /props`, `POST /tokenize`,
 *   `/detokenize`, `/apply-template`, `/infill`, and with `metrics` / `slots`, `GET /metrics`
 *   (src/server/metrics.ts) and `GET /slots`
 *
 * One context with `parallel` sequences serves every request: each request borrows a session of
 * it (waiting when all are busy), and the context's decode thread decodes the tokens of all the
 * sessions that are generating together (continuous batching).
 *
 * ```ts
 * const server = await startServer({ model: "model.gguf", port: 8080, parallel: 4 });
 * console.log(server.url); // http://127.0.0.1:8080
 * await server.close();
 * ```
 */
import { createHash, timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

import { ChatTemplate } from "../chat.js";
import type { EmbeddingContext } from "../embedding.js";
import { invalidArgument } from "../errors.js";
import { loadModel, type Model } from "../model.js";
import type { Context } from "../context.js";
import { CONTEXT_OPTIONS, type ContextOptions } from "../options/context.js";
import type { SpeculativeOptions } from "../options/generate.js";
import type { LoadModelOptions } from "../options/load.js";
import { optionKeys, rejectUnknownKeys } from "../options/suggest.js";
import { chatCompletions, completions, embeddings, listModels, toHttpError, type ServerState } from "./handlers.js";
import { HttpError, readJsonObject, sendError, sendJson, setRequestDeadline, unavailable } from "./http.js";
import { SessionPool } from "./pool.js";
import { applyTemplate, detokenize, getMetrics, getProps, getSlots, infill, tokenize } from "./endpoints.js";
import { ServerMetrics } from "./metrics.js";

/**
 * The server's settings. Beside its own, it takes the context options (`threads`, `batchSize`,
 * `kvCacheType`, ...); the context has `parallel` sequences, and `contextSize` is the whole
 * context, as llama-server's `-c`.
 */
export interface ServerOptions extends Omit<ContextOptions, "sequences" | "contextSize"> {
  /**
   * Tokens of the whole context, divided among the `parallel` sequences as llama-server's `-c`
   * with `-np`: each request's session holds `floor(contextSize / parallel)` tokens, prompt and
   * reply (default: the model's training context, at most 4096, for each sequence).
   */
  contextSize?: number;
  /** The model to serve: a loaded Model, or the path of a GGUF file (loaded, and freed on close). */
  model: Model | string;
  /** How to load `model` when it is a path (e.g. `{ gpuLayers: "max" }`). */
  load?: Omit<LoadModelOptions, "signal" | "onProgress">;
  /**
   * A multimodal projector (mmproj GGUF) for the model, llama-server's `--mmproj`: chat messages
   * then take images (`image_url` parts) and audio (`input_audio`), as the projector allows, and
   * /props reports them in `modalities`. Loaded with the model (onto a given Model that has none).
   */
  projector?: string;
  /**
   * Let `image_url` parts be http(s) URLs, which the server fetches (at most 20 MiB, within 10 s).
   * Default false: only data URIs, and a URL is a 400. The server then reaches whatever its
   * clients name: turn it on only for clients you trust.
   */
  allowImageUrls?: boolean;
  /** Port (default 8080; 0 picks a free one). */
  port?: number;
  /** Address to listen on (default "127.0.0.1": this machine only). */
  host?: string;
  /** Requests generated at the same time (sessions of the context; default 4). More wait in line. */
  parallel?: number;
  /** Require `Authorization: Bearer <apiKey>` on every endpoint but /health. */
  apiKey?: string;
  /** The model's id in /v1/models and in responses (default: the file name without .gguf). */
  modelName?: string;
  /** A chat template (text or built-in name) instead of the model's own. */
  chatTemplate?: string;
  /**
   * The model for /v1/embeddings (a Model or a path); default: the served model, with mean pooling.
   */
  embeddingModel?: Model | string;
  /** Largest request body accepted, in bytes (default 1 MiB, 32 MiB with a projector; larger: 413). */
  maxBodyBytes?: number;
  /**
   * Called with one line per request (method, path, status, milliseconds), and with the warning
   * about listening beyond this machine without an `apiKey` (default for that: stderr).
   */
  log?: (line: string) => void;
  /**
   * Requests that may wait for a session at once (default 256; 0: none wait). A request that
   * finds the line full gets a 503 (code "queue_full") with `Retry-After`.
   */
  maxQueue?: number;
  /**
   * Time limit of a request, in milliseconds from its arrival (default 600000, llama-server's
   * `--timeout`; 0: none). A body not received by then: 408. No reply begun by then (waiting for
   * a session, or reading the prompt): 503 (code "timeout", `Retry-After`). A reply under way
   * ends there, with finish_reason "length".
   */
  requestTimeout?: number;
  /**
   * Most tokens a reply may have: a request asking more (max_tokens, max_completion_tokens) gets
   * this many, and one that asks none gets this as its limit (default: none, the session's room).
   */
  maxTokensCap?: number;
  /**
   * Origins allowed to call the server from a browser (CORS): "*" for any, or the list of
   * origins (e.g. "http://localhost:3000"). Sets Access-Control-Allow-Origin and answers
   * preflight OPTIONS requests. Default: none (no CORS headers).
   */
  cors?: string | string[];
  /** Serve GET /metrics (Prometheus text, llama-server's metric names; default false: 501). */
  metrics?: boolean;
  /** Serve GET /slots (each sequence's state; default false: 501). */
  slots?: boolean;
  /**
   * Speculative decoding for every completion, llama-server's `--model-draft`: `draft` (a Model
   * or a path, loaded as `model` is) proposes up to `maxDraft` tokens that the served model checks
   * in one batch (see generate's `speculative` option). The draft must share the served model's
   * vocabulary: checked at start. Responses' `timings` then have `draft_n` and `draft_n_accepted`.
   */
  speculative?: { draft: Model | string; maxDraft?: number; minProbability?: number };
}

/** How {@link RunningServer.close} ends the requests that run. */
export interface CloseOptions {
  /**
   * Milliseconds the running requests have to finish before they are cancelled (default 0:
   * cancelled at once). Meanwhile, new requests get a 503 (code "shutting_down").
   */
  drain?: number;
}

/** A server started by {@link startServer}: where it listens, and how to stop it. */
export interface RunningServer {
  /** e.g. "http://127.0.0.1:8080" */
  url: string;
  port: number;
  /**
   * Stops listening (new requests get a 503), lets running requests finish for up to `drain`
   * milliseconds, cancels the rest (a 503, or an error event in a stream), and frees what the
   * server loaded. Later calls return the first call's promise.
   */
  close(options?: CloseOptions): Promise<void>;
}

function modelIdOf(model: Model): string {
  return path.basename(model.path).replace(/\.gguf$/i, "");
}

const SERVER_KEYS = optionKeys<Omit<ServerOptions, keyof ContextOptions>>({
  model: true,
  load: true,
  projector: true,
  allowImageUrls: true,
  port: true,
  host: true,
  parallel: true,
  apiKey: true,
  modelName: true,
  chatTemplate: true,
  embeddingModel: true,
  maxBodyBytes: true,
  log: true,
  maxQueue: true,
  requestTimeout: true,
  maxTokensCap: true,
  cors: true,
  metrics: true,
  slots: true,
  speculative: true,
});

/** Default of `maxQueue`. */
export const DEFAULT_MAX_QUEUE = 256;
/** The server's default of the context option `batchWindow` (ms; the library's is 0). */
export const DEFAULT_BATCH_WINDOW = 50;
/** Default of `requestTimeout` (llama-server's `--timeout`, 600 s). */
export const DEFAULT_REQUEST_TIMEOUT = 600_000;

function checkOptions(options: ServerOptions): void {
  if (options === null || typeof options !== "object") invalidArgument("options", "an object", options);
  rejectUnknownKeys("server options", options, [...SERVER_KEYS, ...Object.keys(CONTEXT_OPTIONS).filter((k) => k !== "sequences")]);
  const { port, parallel, maxBodyBytes, apiKey, host } = options;
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) invalidArgument("port", "an integer from 0 to 65535", port);
  if (parallel !== undefined && (!Number.isInteger(parallel) || parallel < 1 || parallel > 256)) invalidArgument("parallel", "an integer from 1 to 256", parallel);
  if (maxBodyBytes !== undefined && (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 1)) invalidArgument("maxBodyBytes", "a positive integer", maxBodyBytes);
  if (apiKey !== undefined && (typeof apiKey !== "string" || apiKey === "")) invalidArgument("apiKey", "a non-empty string", apiKey);
  if (host !== undefined && (typeof host !== "string" || host === "")) invalidArgument("host", "a non-empty string", host);
  const { maxQueue, requestTimeout, maxTokensCap, cors, log } = options;
  if (maxQueue !== undefined && maxQueue !== Infinity && (!Number.isInteger(maxQueue) || maxQueue < 0)) invalidArgument("maxQueue", "a non-negative integer or Infinity", maxQueue);
  if (requestTimeout !== undefined && (!Number.isInteger(requestTimeout) || requestTimeout < 0 || requestTimeout > 2 ** 31 - 1)) {
    invalidArgument("requestTimeout", "an integer number of milliseconds from 0 (none) to 2147483647", requestTimeout);
  }
  if (maxTokensCap !== undefined && (!Number.isInteger(maxTokensCap) || maxTokensCap < 1)) invalidArgument("maxTokensCap", "a positive integer", maxTokensCap);
  if (cors !== undefined) {
    const origins = typeof cors === "string" ? [cors] : cors;
    if (!Array.isArray(origins) || origins.length === 0 || origins.some((o) => typeof o !== "string" || !/^(\*|https?:\/\/[^\s/]+)$/i.test(o))) {
      invalidArgument("cors", 'an origin ("*" or "http(s)://host[:port]") or a non-empty array of them', cors);
    }
  }
  if (log !== undefined && typeof log !== "function") invalidArgument("log", "a function", log);
  for (const key of ["metrics", "slots", "allowImageUrls"] as const) if (options[key] !== undefined && typeof options[key] !== "boolean") invalidArgument(key, "a boolean", options[key]);
  const spec = options.speculative;
  if (spec !== undefined) {
    if (spec === null || typeof spec !== "object" || Array.isArray(spec)) invalidArgument("speculative", "{ draft, maxDraft?, minProbability? }", spec);
    rejectUnknownKeys("speculative", spec, ["draft", "maxDraft", "minProbability"]);
    if (spec.draft === undefined || spec.draft === null || spec.draft === "") invalidArgument("speculative.draft", "a Model or the path of a GGUF file", spec.draft);
  }
  if (options.projector !== undefined && (typeof options.projector !== "string" || options.projector === "")) invalidArgument("projector", "a non-empty string (the mmproj file)", options.projector);
  if (options.projector !== undefined && options.load?.projector !== undefined && options.load.projector !== options.projector) {
    invalidArgument("load.projector", "unset, or the same file as projector", options.load.projector);
  }
}

/** Each sequence's share of the whole context (llama-server's -c divided by -np); none given: the context's default. */
function perSequence(contextSize: number | undefined, parallel: number): { contextSize?: number } {
  if (contextSize === undefined) return {};
  if (!Number.isInteger(contextSize) || contextSize < parallel) {
    invalidArgument("contextSize", `an integer of at least parallel (${parallel}): the whole context, divided among the sequences`, contextSize);
  }
  return { contextSize: Math.floor(contextSize / parallel) };
}

/** Starts the server; resolves once it listens. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  checkOptions(options);
  const owned: Model[] = [];
  const cleanups: Array<() => void> = [];
  const release = () => {
    for (const f of cleanups.splice(0).reverse()) f();
    for (const m of owned.splice(0)) m.dispose();
  };
  try {
    const projector = options.projector;
    const model = typeof options.model === "string" ? await loadModel(options.model, { ...options.load, ...(projector === undefined ? {} : { projector }) }) : options.model;
    if (typeof options.model === "string") owned.push(model);
    else if (projector !== undefined) {
      const loaded = model.info.projector;
      if (loaded === null) await model.loadProjector(projector);
      else if (loaded.path !== path.resolve(projector)) invalidArgument("projector", `unset or ${loaded.path}: the model has that projector already`, projector);
    }
    const speculative = options.speculative === undefined ? undefined : await loadDraft(options.speculative, options.load, owned);
    const parallel = options.parallel ?? 4;
    const contextOptions: Record<string, unknown> = {};
    for (const key of Object.keys(CONTEXT_OPTIONS)) if (key !== "sequences" && key !== "contextSize") contextOptions[key] = options[key as keyof ServerOptions];
    contextOptions.batchWindow ??= DEFAULT_BATCH_WINDOW;
    const context = await model.createContext({ ...contextOptions, ...perSequence(options.contextSize, parallel), sequences: parallel });
    cleanups.push(() => context.dispose());
    if (speculative !== undefined) await checkDraft(context, speculative);
    const pool = new SessionPool(context, parallel, { maxQueue: options.maxQueue ?? DEFAULT_MAX_QUEUE });
    cleanups.push(() => pool.close());
    const template = new ChatTemplate(model, options.chatTemplate === undefined ? {} : { template: options.chatTemplate });

    const embeddingSource = options.embeddingModel;
    let embedding: Promise<{ context: EmbeddingContext; modelId: string }> | undefined;
    const embeddingModelIds = [typeof embeddingSource === "string" ? path.basename(embeddingSource).replace(/\.gguf$/i, "") : embeddingSource ? modelIdOf(embeddingSource) : options.modelName ?? modelIdOf(model)];
    const state: ServerState = {
      model,
      modelId: options.modelName ?? modelIdOf(model),
      context,
      pool,
      template,
      maxTokensCap: options.maxTokensCap,
      allowImageUrls: options.allowImageUrls ?? false,
      created: Math.floor(Date.now() / 1000),
      metrics: new ServerMetrics(parallel, context.contextSize),
      endpoints: { metrics: options.metrics ?? false, slots: options.slots ?? false },
      ...(speculative === undefined ? {} : { speculative }),
      embeddingModelIds,
      embeddings: () => {
        embedding ??= (async () => {
          let source = model;
          if (embeddingSource !== undefined) {
            source = typeof embeddingSource === "string" ? await loadModel(embeddingSource) : embeddingSource;
            if (typeof embeddingSource === "string") owned.push(source);
          }
          const ctx = await source.createEmbeddingContext({ threads: options.threads, ...(embeddingSource === undefined ? { pooling: "mean" } : {}) });
          cleanups.push(() => ctx.dispose());
          return { context: ctx, modelId: embeddingModelIds[0] };
        })();
        embedding.catch(() => {
          embedding = undefined;
        });
        return embedding;
      },
    };
    return await listen(state, options, release);
  } catch (err) {
    release();
    throw err;
  }
}

/** The draft model of `speculative`, loaded (and owned) when given as a path. */
async function loadDraft(spec: NonNullable<ServerOptions["speculative"]>, load: ServerOptions["load"], owned: Model[]): Promise<SpeculativeOptions> {
  const { projector: _, ...modelLoad } = load ?? {};
  const draft = typeof spec.draft === "string" ? await loadModel(spec.draft, modelLoad) : spec.draft;
  if (typeof spec.draft === "string") owned.push(draft);
  return { draft, ...(spec.maxDraft === undefined ? {} : { maxDraft: spec.maxDraft }), ...(spec.minProbability === undefined ? {} : { minProbability: spec.minProbability }) };
}

/**
 * Refuses a draft model that cannot draft for the served one before the first request does: one
 * token generated with it checks the settings and the vocabulary, and makes the draft's context.
 */
async function checkDraft(context: Context, speculative: SpeculativeOptions): Promise<void> {
  using session = context.createSession();
  await session.prompt(context.model.tokenize(" ", { addSpecial: true }));
  await session.generate({ maxTokens: 1, temperature: 0, speculative }).collect();
}

function keyMatches(header: string | undefined, key: string): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(header ?? "");
  if (!match) return false;
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(match[1].trim()), digest(key));
}

/** How long a request cancelled by close() has to send its 503 before its connection is cut. */
const CANCEL_GRACE_MS = 1000;
/** How long a reply may run past its time limit (a client that does not read) before it is cut. */
const DEADLINE_GRACE_MS = 5000;
const CORS_METHODS = "GET, POST, OPTIONS";
const CORS_HEADERS = "Authorization, Content-Type";

function isLoopback(address: string): boolean {
  return address.startsWith("127.") || address === "::1" || address.startsWith("::ffff:127.");
}

/** The Access-Control-Allow-Origin of a request from `origin` (undefined: not allowed). */
function allowedOrigin(origin: string | undefined, allowed: string[]): string | undefined {
  if (allowed.includes("*")) return "*";
  if (origin === undefined) return undefined;
  return allowed.find((a) => a.toLowerCase() === origin.toLowerCase()) === undefined ? undefined : origin;
}

function checkCloseOptions(options: CloseOptions): number {
  if (options === null || typeof options !== "object") invalidArgument("close options", "an object", options);
  rejectUnknownKeys("close options", options, ["drain"]);
  const drain = options.drain ?? 0;
  if (!Number.isInteger(drain) || drain < 0 || drain > 2 ** 31 - 1) invalidArgument("drain", "an integer number of milliseconds from 0 to 2147483647", drain);
  return drain;
}

async function listen(state: ServerState, options: ServerOptions, release: () => void): Promise<RunningServer> {
  // Images and audio come base64 in the body: a larger default with a projector.
  const limit = options.maxBodyBytes ?? (state.model.info.projector === null ? 1 << 20 : 32 << 20);
  const timeLimit = options.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT;
  const cors = options.cors === undefined ? undefined : typeof options.cors === "string" ? [options.cors] : [...options.cors];
  // Each running request's controller: aborted when its client goes away (no reason), or with an
  // HttpError as reason when close() cancels it.
  const requests = new Set<AbortController>();
  const idle: Array<() => void> = [];
  let draining = false;
  const server = http.createServer((req, res) => {
    const started = Date.now();
    const controller = new AbortController();
    requests.add(controller);
    const timers: NodeJS.Timeout[] = [];
    res.on("close", () => {
      for (const t of timers) clearTimeout(t);
      if (!res.writableFinished) controller.abort();
      requests.delete(controller);
      if (requests.size === 0) for (const f of idle.splice(0)) f();
      options.log?.(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - started}ms`);
    });
    if (cors) {
      const origin = allowedOrigin(req.headers.origin, cors);
      if (origin !== undefined) {
        res.setHeader("Access-Control-Allow-Origin", origin);
        res.setHeader("Access-Control-Expose-Headers", "Retry-After");
      }
      if (!cors.includes("*")) res.setHeader("Vary", "Origin");
    }
    if (draining) {
      sendError(res, unavailable("The server is shutting down and takes no new requests", "shutting_down", 5), { Connection: "close" });
      return;
    }
    if (cors && req.method === "OPTIONS") {
      // A browser's preflight: it carries no API key, and is answered before the key is checked.
      res.writeHead(204, {
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": req.headers["access-control-request-headers"] ?? CORS_HEADERS,
        "Access-Control-Max-Age": "86400",
      });
      res.end();
      return;
    }
    if (timeLimit > 0) {
      const deadline = new AbortController();
      setRequestDeadline(res, deadline.signal);
      timers.push(
        setTimeout(() => {
          if (!req.complete) {
            // The client has not sent its whole body in time: a 408, and the connection closes.
            sendError(res, new HttpError(408, `The request body did not arrive within the time limit of ${timeLimit} ms`, "invalid_request_error", "request_timeout"), { Connection: "close" });
          }
          deadline.abort(unavailable(`The request's reply did not begin within the server's time limit of ${timeLimit} ms (waiting for a session, or reading the prompt)`, "timeout", 1));
          // A reply that still runs (its client reads too slowly to let it end) is cut.
          timers.push(setTimeout(() => res.destroy(), DEADLINE_GRACE_MS));
        }, timeLimit),
      );
    }
    handle(state, req, res, controller.signal, limit, options.apiKey).catch((err: unknown) => {
      const cancelled = controller.signal.reason;
      // A client that went away gets nothing; a request that close() cancelled gets its 503.
      if (controller.signal.aborted && !(cancelled instanceof HttpError)) return;
      const error = cancelled instanceof HttpError ? cancelled : toHttpError(err);
      // After a 413 or 408, the rest of the body is not read: the connection is closed.
      sendError(res, error, error.status === 413 || error.status === 408 ? { Connection: "close" } : {});
    });
  });
  server.on("clientError", (_err, socket) => {
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 8080, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  if (options.apiKey === undefined && !isLoopback(address.address)) {
    const warn = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
    warn(`llama-napi: warning: listening on ${host}:${address.port}, reachable beyond this machine, without an API key: anyone who reaches it can use it (set apiKey, --api-key or LLAMA_NAPI_API_KEY)`);
  }
  /** Resolves when no request runs, or after `ms`. */
  const settled = (ms: number) =>
    requests.size === 0
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, ms);
          idle.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
  let closing: Promise<void> | undefined;
  // The end of the drain; a later close() with a shorter drain brings it forward.
  let drainUntil = Infinity;
  let wakeDrain = () => {};
  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    close: (closeOptions: CloseOptions = {}) => {
      let drain: number;
      try {
        drain = checkCloseOptions(closeOptions);
      } catch (err) {
        return Promise.reject(err);
      }
      if (Date.now() + drain < drainUntil) {
        drainUntil = Date.now() + drain;
        wakeDrain();
      }
      closing ??= (async () => {
        draining = true;
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        while (requests.size > 0 && Date.now() < drainUntil) {
          await new Promise<void>((resolve) => {
            wakeDrain = resolve;
            void settled(drainUntil - Date.now()).then(resolve);
          });
        }
        const cancelled = unavailable("The server is shutting down: the request was cancelled", "shutting_down", 5);
        for (const c of requests) c.abort(cancelled);
        await settled(CANCEL_GRACE_MS);
        server.closeAllConnections();
        await stopped;
      })().finally(release);
      return closing;
    },
  };
}

async function handle(
  state: ServerState,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  signal: AbortSignal,
  limit: number,
  apiKey: string | undefined,
): Promise<void> {
  const url = new URL(req.url ?? "/", "http://localhost");
  const route = url.pathname.replace(/\/+$/, "") || "/";
  if (route === "/health") {
    sendJson(res, 200, {
      status: "ok",
      sessions: { total: state.pool.size, busy: state.pool.busy, queued: state.pool.queued },
      decode: state.context.stats(),
    });
    return;
  }
  if (apiKey !== undefined && !keyMatches(req.headers.authorization, apiKey)) {
    throw new HttpError(401, "Invalid or missing API key: send it as `Authorization: Bearer <key>`", "authentication_error", "invalid_api_key");
  }
  const routes: Record<string, { method: "GET" | "POST"; run: () => Promise<void> }> = {
    "/v1/models": { method: "GET", run: async () => listModels(state, res) },
    "/v1/completions": { method: "POST", run: async () => completions(state, await readJsonObject(req, limit), res, signal) },
    "/v1/chat/completions": { method: "POST", run: async () => chatCompletions(state, await readJsonObject(req, limit), res, signal) },
    "/v1/embeddings": { method: "POST", run: async () => embeddings(state, await readJsonObject(req, limit), res) },
    "/metrics": { method: "GET", run: async () => getMetrics(state, res) },
    "/slots": { method: "GET", run: async () => getSlots(state, url, res) },
    "/props": { method: "GET", run: async () => getProps(state, res) },
    "/tokenize": { method: "POST", run: async () => tokenize(state, await readJsonObject(req, limit), res) },
    "/detokenize": { method: "POST", run: async () => detokenize(state, await readJsonObject(req, limit), res) },
    "/apply-template": { method: "POST", run: async () => applyTemplate(state, await readJsonObject(req, limit), res) },
    "/infill": { method: "POST", run: async () => infill(state, await readJsonObject(req, limit), res, signal) },
  };
  const target = routes[route];
  if (!target) throw new HttpError(404, `Unknown endpoint ${route}`, "invalid_request_error", "not_found");
  if (req.method !== target.method) {
    res.setHeader("Allow", target.method);
    throw new HttpError(405, `${route} takes ${target.method} requests`, "invalid_request_error", "method_not_allowed");
  }
  await target.run();
}
