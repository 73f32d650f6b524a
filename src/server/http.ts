/** HTTP plumbing of the server: JSON bodies with a size limit, OpenAI-style errors, SSE. */
import type { IncomingMessage, ServerResponse } from "node:http";

/** An error that becomes an OpenAI-style JSON error response. */
export class HttpError extends Error {
  override name = "HttpError";

  constructor(
    readonly status: number,
    message: string,
    readonly type: string = status === 401 ? "authentication_error" : status >= 500 ? "server_error" : "invalid_request_error",
    readonly code: string | null = null,
    readonly param: string | null = null,
    /** Headers sent with the error response (e.g. Retry-After with a 503). */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

/** A 503 the client may retry after `retryAfter` seconds (a full queue, a time limit, a shutdown). */
export function unavailable(message: string, code: string, retryAfter: number): HttpError {
  return new HttpError(503, message, "server_error", code, null, { "Retry-After": String(retryAfter) });
}

const deadlines = new WeakMap<ServerResponse, AbortSignal>();

/** Sets a request's time limit: `signal` aborts (its reason an HttpError) when it has passed. */
export function setRequestDeadline(res: ServerResponse, signal: AbortSignal): void {
  deadlines.set(res, signal);
}

/** The signal of a request's time limit (see {@link setRequestDeadline}); undefined: none. */
export function requestDeadline(res: ServerResponse): AbortSignal | undefined {
  return deadlines.get(res);
}

/** A signal that aborts when any of `signals` does, with its reason. */
export function anySignal(...signals: Array<AbortSignal | undefined>): AbortSignal {
  const given = signals.filter((s): s is AbortSignal => s !== undefined);
  if (given.length === 1) return given[0];
  if (typeof AbortSignal.any === "function") return AbortSignal.any(given);
  const controller = new AbortController();
  const aborted = given.find((s) => s.aborted);
  if (aborted) controller.abort(aborted.reason);
  else for (const s of given) s.addEventListener("abort", () => controller.abort(s.reason), { once: true, signal: controller.signal });
  return controller.signal;
}

/** A 400 for a bad request field. */
export function badField(param: string, message: string): HttpError {
  return new HttpError(400, message, "invalid_request_error", "invalid_value", param);
}

/** The body OpenAI's API sends with an error. */
export function errorBody(error: HttpError): { error: { message: string; type: string; param: string | null; code: string | null } } {
  return { error: { message: error.message, type: error.type, param: error.param, code: error.code } };
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": String(Buffer.byteLength(data)),
    ...headers,
  });
  res.end(data);
}

export function sendError(res: ServerResponse, error: HttpError, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, error.status, errorBody(error), { ...error.headers, ...headers });
}

/**
 * Reads a JSON object body of at most `limit` bytes: 413 past the limit (from Content-Length
 * before reading, or while reading), 400 for malformed JSON or a body that is not an object.
 */
export async function readJsonObject(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > limit) {
    throw new HttpError(413, `The request body is ${declared} bytes; the limit is ${limit}`, "invalid_request_error", "request_too_large");
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      throw new HttpError(413, `The request body is larger than the limit of ${limit} bytes`, "invalid_request_error", "request_too_large");
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") throw new HttpError(400, "The request body is empty; send a JSON object", "invalid_request_error", "invalid_json");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, `The request body is not valid JSON: ${(err as Error).message}`, "invalid_request_error", "invalid_json");
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new HttpError(400, "The request body must be a JSON object", "invalid_request_error", "invalid_json");
  }
  return value as Record<string, unknown>;
}

/** A Server-Sent Events stream: `data: {json}\n\n` events, ended by `data: [DONE]`. */
export class EventStream {
  #open = true;

  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache",
      Connection: "keep-alive",
      "X-Accel-Buffering": "no",
    });
    res.on("close", () => {
      this.#open = false;
    });
  }

  get open(): boolean {
    return this.#open && !this.res.destroyed;
  }

  /** Writes one event; waits while the client's socket is full. */
  async send(data: unknown): Promise<void> {
    if (!this.open) return;
    if (!this.res.write(`data: ${JSON.stringify(data)}\n\n`)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.res.off("drain", done);
          this.res.off("close", done);
          resolve();
        };
        this.res.on("drain", done);
        this.res.on("close", done);
      });
    }
  }

  end(): void {
    if (this.open) this.res.end("data: [DONE]\n\n");
  }

  /** Reports an error after the stream started (as llama-server does), then ends it. */
  fail(error: HttpError): void {
    if (!this.open) return;
    this.res.end(`data: ${JSON.stringify(errorBody(error))}\n\n`);
  }
}
