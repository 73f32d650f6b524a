/**
 * An OpenAI-compatible HTTP server (Node's http module, no framework):
 *
 * - `GET /health`, `GET /v1/models`
 * - `POST /v1/completions`, `POST /v1/chat/completions` (with `stream: true`: Server-Sent Events
 *   in OpenAI's chunk format, ended by `data: [DONE]`)
 * - `POST /v1/embeddings`
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
import { CONTEXT_OPTIONS, type ContextOptions } from "../options/context.js";
import type { LoadModelOptions } from "../options/load.js";
import { optionKeys, rejectUnknownKeys } from "../options/suggest.js";
import { chatCompletions, completions, embeddings, listModels, toHttpError, type ServerState } from "./handlers.js";
import { HttpError, readJsonObject, sendError, sendJson } from "./http.js";
import { SessionPool } from "./pool.js";

/**
 * The server's settings. Beside its own, it takes the context options (`contextSize`: tokens each
 * request's session holds, prompt and reply; `threads`, `batchSize`, `kvCacheType`, ...); the
 * context has `parallel` sequences.
 */
export interface ServerOptions extends Omit<ContextOptions, "sequences"> {
  /** The model to serve: a loaded Model, or the path of a GGUF file (loaded, and freed on close). */
  model: Model | string;
  /** How to load `model` when it is a path (e.g. `{ gpuLayers: "max" }`). */
  load?: Omit<LoadModelOptions, "signal" | "onProgress">;
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
  /** Largest request body accepted, in bytes (default 1 MiB; larger: 413). */
  maxBodyBytes?: number;
  /** Called with one line per request (method, path, status, milliseconds). */
  log?: (line: string) => void;
}

/** A server started by {@link startServer}: where it listens, and how to stop it. */
export interface RunningServer {
  /** e.g. "http://127.0.0.1:8080" */
  url: string;
  port: number;
  /** Stops listening, ends running requests, and frees what the server loaded. */
  close(): Promise<void>;
}

function modelIdOf(model: Model): string {
  return path.basename(model.path).replace(/\.gguf$/i, "");
}

const SERVER_KEYS = optionKeys<Omit<ServerOptions, keyof ContextOptions>>({
  model: true,
  load: true,
  port: true,
  host: true,
  parallel: true,
  apiKey: true,
  modelName: true,
  chatTemplate: true,
  embeddingModel: true,
  maxBodyBytes: true,
  log: true,
});

function checkOptions(options: ServerOptions): void {
  if (options === null || typeof options !== "object") invalidArgument("options", "an object", options);
  rejectUnknownKeys("server options", options, [...SERVER_KEYS, ...Object.keys(CONTEXT_OPTIONS).filter((k) => k !== "sequences")]);
  const { port, parallel, maxBodyBytes, apiKey, host } = options;
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) invalidArgument("port", "an integer from 0 to 65535", port);
  if (parallel !== undefined && (!Number.isInteger(parallel) || parallel < 1 || parallel > 256)) invalidArgument("parallel", "an integer from 1 to 256", parallel);
  if (maxBodyBytes !== undefined && (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 1)) invalidArgument("maxBodyBytes", "a positive integer", maxBodyBytes);
  if (apiKey !== undefined && (typeof apiKey !== "string" || apiKey === "")) invalidArgument("apiKey", "a non-empty string", apiKey);
  if (host !== undefined && (typeof host !== "string" || host === "")) invalidArgument("host", "a non-empty string", host);
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
    const model = typeof options.model === "string" ? await loadModel(options.model, options.load) : options.model;
    if (typeof options.model === "string") owned.push(model);
    const parallel = options.parallel ?? 4;
    const contextOptions: Record<string, unknown> = {};
    for (const key of Object.keys(CONTEXT_OPTIONS)) if (key !== "sequences") contextOptions[key] = options[key as keyof ServerOptions];
    const context = await model.createContext({ ...contextOptions, sequences: parallel });
    cleanups.push(() => context.dispose());
    const pool = new SessionPool(context, parallel);
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
      created: Math.floor(Date.now() / 1000),
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

function keyMatches(header: string | undefined, key: string): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(header ?? "");
  if (!match) return false;
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(match[1].trim()), digest(key));
}

async function listen(state: ServerState, options: ServerOptions, release: () => void): Promise<RunningServer> {
  const limit = options.maxBodyBytes ?? 1 << 20;
  const requests = new Set<AbortController>();
  const server = http.createServer((req, res) => {
    const started = Date.now();
    const controller = new AbortController();
    requests.add(controller);
    res.on("close", () => {
      if (!res.writableFinished) controller.abort();
      requests.delete(controller);
      options.log?.(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - started}ms`);
    });
    handle(state, req, res, controller.signal, limit, options.apiKey).catch((err: unknown) => {
      if (controller.signal.aborted) return;
      const error = toHttpError(err);
      // After a 413, the rest of the body is not read: the connection is closed.
      sendError(res, error, error.status === 413 ? { Connection: "close" } : {});
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
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const c of requests) c.abort();
        server.closeAllConnections();
      }).finally(release);
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
  };
  const target = routes[route];
  if (!target) throw new HttpError(404, `Unknown endpoint ${route}`, "invalid_request_error", "not_found");
  if (req.method !== target.method) {
    res.setHeader("Allow", target.method);
    throw new HttpError(405, `${route} takes ${target.method} requests`, "invalid_request_error", "method_not_allowed");
  }
  await target.run();
}
