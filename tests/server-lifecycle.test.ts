/**
 * The server under load and at its edges: the bounded queue (503 + Retry-After), the per-request
 * time limit (408 / 503 / finish_reason "length"), clients that go away, draining shutdown
 * (close({ drain }) and SIGTERM in `serve`), CORS, the max_tokens cap, the API key and body
 * limits, the warning for a server reachable without a key, that no request field reaches the
 * filesystem, and a 20-second run of the soak driver (npm run test:soak runs it for minutes).
 *
 * Requests that must hold the only session for a while generate with gpt2-wide-f16 under a
 * grammar (several ms a token) and are ended by the test (a client abort, a time limit).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

import { LlamaError, loadModel, startServer, type Model, type RunningServer } from "../src/index.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";
import { formatReport, runSoak, soakProblems, startSoakServer, SOAK_SERVER } from "./helpers/soak.js";

const KEY = "lifecycle-key-0123456789";
const auth = { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" };

interface Health {
  sessions: { total: number; busy: number; queued: number };
}

async function health(url: string): Promise<Health["sessions"]> {
  return ((await (await fetch(`${url}/health`)).json()) as Health).sessions;
}

/** Polls /health until `ok` holds (or fails after `ms`); returns how long it took. */
async function waitFor(url: string, ok: (s: Health["sessions"]) => boolean, ms = 10_000): Promise<number> {
  const started = Date.now();
  for (;;) {
    const s = await health(url);
    if (ok(s)) return Date.now() - started;
    if (Date.now() - started > ms) throw new Error(`the server did not reach the state in ${ms} ms: ${JSON.stringify(s)}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A request of 900 grammar-constrained tokens on the wide model: it holds its session for seconds. */
function longBody(eos: number, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ prompt: "Hello", max_tokens: 900, grammar: "root ::= [a-z ]+", temperature: 1, seed: 1, logit_bias: { [eos]: -100 }, ...extra });
}

function post(url: string, route: string, body: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${url}${route}`, { method: "POST", headers: auth, body, ...init });
}

/** A raw HTTP/1.1 exchange over a socket: what is written, in pieces, and the whole reply. */
class RawClient {
  readonly socket: net.Socket;
  readonly reply: Promise<string>;

  constructor(url: string) {
    const { hostname, port } = new URL(url);
    this.socket = net.connect(Number(port), hostname);
    let text = "";
    this.socket.on("data", (d: Buffer) => (text += d.toString()));
    this.reply = new Promise((resolve) => {
      this.socket.on("close", () => resolve(text));
      this.socket.on("error", () => resolve(text));
    });
  }

  async write(data: string): Promise<void> {
    await new Promise<void>((resolve, reject) => this.socket.write(data, (err) => (err ? reject(err) : resolve())));
  }
}

function rawHead(route: string, body: string, headers: Record<string, string> = {}): string {
  const lines = [`POST ${route} HTTP/1.1`, "Host: localhost", `Content-Length: ${Buffer.byteLength(body)}`, "Content-Type: application/json", `Authorization: Bearer ${KEY}`, "Connection: close"];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  return `${lines.join("\r\n")}\r\n\r\n`;
}

function parseRaw(text: string): { status: number; headers: Record<string, string>; body: string } {
  const at = text.indexOf("\r\n\r\n");
  const [statusLine, ...headerLines] = text.slice(0, at).split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const i = line.indexOf(":");
    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status: Number(statusLine.split(" ")[1]), headers, body: text.slice(at + 4) };
}

describe("server options are checked", () => {
  it("refuses unknown and bad options before loading anything, and bad close() options", async () => {
    const model = fixturePath("llama-tiny-f32");
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ maxQueu: 3 }, /Unknown option "maxQueu".*did you mean "maxQueue"/],
      [{ maxQueue: -1 }, /maxQueue must be a non-negative integer/],
      [{ maxQueue: 1.5 }, /maxQueue/],
      [{ requestTimeout: -5 }, /requestTimeout must be an integer number of milliseconds/],
      [{ requestTimeout: 2.5 }, /requestTimeout/],
      [{ maxTokensCap: 0 }, /maxTokensCap must be a positive integer/],
      [{ cors: "ftp://x" }, /cors must be an origin/],
      [{ cors: [] }, /cors/],
      [{ log: "yes" }, /log must be a function/],
    ];
    for (const [extra, message] of bad) {
      const error = await startServer({ model, port: 0, ...extra } as never).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LlamaError);
      expect([extra, (error as LlamaError).code, (error as Error).message]).toEqual([extra, "ERR_INVALID_ARGUMENT", expect.stringMatching(message)]);
    }
    const server = await startServer({ model, port: 0, parallel: 1, contextSize: 128, threads: 1, maxQueue: Infinity, maxQueue0: undefined } as never).catch((e: unknown) => e);
    expect(server).toBeInstanceOf(LlamaError); // maxQueue0 is unknown, even when undefined
    const ok = await startServer({ model, port: 0, parallel: 1, contextSize: 128, threads: 1, maxQueue: 0, requestTimeout: 0, cors: "*" });
    await expect(ok.close({ drain: -1 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT", message: expect.stringMatching(/drain must be/) });
    await expect(ok.close({ drian: 5 } as never)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT", message: expect.stringMatching(/did you mean "drain"/) });
    await ok.close();
  });
});

describe("server under load (one session, slow generations)", () => {
  let wide: Model;
  let eos: number;

  beforeAll(async () => {
    wide = await loadModel(fixturePath("gpt2-wide-f16"));
    eos = wide.specialTokens.eos ?? 50256;
  });
  afterAll(() => wide?.dispose());

  it("refuses a request that finds the queue full with 503, Retry-After and an OpenAI error body", async () => {
    const server = await startServer({ model: wide, port: 0, parallel: 1, maxQueue: 1, contextSize: 1024, threads: 1, apiKey: KEY });
    try {
      const holder = new AbortController();
      const held = post(server.url, "/v1/completions", longBody(eos, { stream: true }), { signal: holder.signal });
      await waitFor(server.url, (s) => s.busy === 1);
      const waiting = post(server.url, "/v1/completions", JSON.stringify({ prompt: "Hi", max_tokens: 2 }));
      await waitFor(server.url, (s) => s.queued === 1);
      const refused = await post(server.url, "/v1/chat/completions", JSON.stringify({ messages: [{ role: "user", content: "x" }], max_tokens: 2 }));
      expect(refused.status).toBe(503);
      expect(refused.headers.get("retry-after")).toBe("1");
      expect(await refused.json()).toEqual({ error: { message: expect.stringMatching(/busy.*1 requests wait/), type: "server_error", param: null, code: "queue_full" } });
      // The client of the running request goes away: the waiting one gets the session.
      const response = await held;
      expect(response.status).toBe(200);
      holder.abort();
      const after = await waiting;
      expect(after.status).toBe(200);
      expect(((await after.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBeGreaterThan(0);
      await waitFor(server.url, (s) => s.busy === 0 && s.queued === 0);
    } finally {
      await server.close();
    }
  });

  it("frees the session of a client that goes away, within a decode step, streamed or not, and reuses it", async () => {
    const server = await startServer({ model: wide, port: 0, parallel: 1, contextSize: 1024, threads: 1, apiKey: KEY });
    try {
      for (const stream of [true, false]) {
        const controller = new AbortController();
        const request = post(server.url, "/v1/completions", longBody(eos, { stream }), { signal: controller.signal });
        if (stream) {
          const reader = (await request).body!.getReader();
          await reader.read();
        } else {
          request.catch(() => {});
          await waitFor(server.url, (s) => s.busy === 1);
          await new Promise((resolve) => setTimeout(resolve, 100)); // generating
        }
        controller.abort();
        const took = await waitFor(server.url, (s) => s.busy === 0, 5000);
        // One decode step of this model is a few ms; the margin is for a loaded machine.
        expect(took).toBeLessThan(1000);
        // The same (only) session serves the next request.
        const next = await post(server.url, "/v1/completions", JSON.stringify({ prompt: "Hello", max_tokens: 3, temperature: 0 }));
        expect(next.status).toBe(200);
        expect(((await next.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(3);
      }
      expect(await health(server.url)).toEqual({ total: 1, busy: 0, queued: 0 });
    } finally {
      await server.close();
    }
  });

  it("applies the time limit: 408 for a body too slow, 503 when no reply began, finish_reason length when one did", async () => {
    const limit = 1000;
    const server = await startServer({ model: wide, port: 0, parallel: 1, contextSize: 1024, threads: 1, apiKey: KEY, requestTimeout: limit });
    try {
      // B arrives first but sends its body late; A takes the session; B waits in line past its limit.
      const bBody = JSON.stringify({ prompt: "Hi", max_tokens: 2 });
      const b = new RawClient(server.url);
      await b.write(rawHead("/v1/completions", bBody) + bBody.slice(0, 5));
      const started = Date.now();
      const a = post(server.url, "/v1/completions", longBody(eos));
      await waitFor(server.url, (s) => s.busy === 1);
      await b.write(bBody.slice(5));
      const bReply = parseRaw(await b.reply);
      expect(bReply.status).toBe(503);
      expect(bReply.headers["retry-after"]).toBe("1");
      expect(JSON.parse(bReply.body)).toMatchObject({ error: { type: "server_error", code: "timeout", message: expect.stringContaining(`${limit} ms`) } });
      // A's reply was under way: it ends at its limit with what it has.
      const aReply = await a;
      const elapsed = Date.now() - started;
      expect(aReply.status).toBe(200);
      const json = (await aReply.json()) as { choices: Array<{ finish_reason: string; text: string }>; usage: { completion_tokens: number } };
      expect(json.choices[0].finish_reason).toBe("length");
      expect(json.usage.completion_tokens).toBeGreaterThan(0);
      expect(json.usage.completion_tokens).toBeLessThan(900);
      expect(elapsed).toBeGreaterThanOrEqual(limit - 50);
      expect(elapsed).toBeLessThan(limit + 3000);
      // Streamed, the same: the last chunk says "length", then [DONE].
      const streamed = await (await post(server.url, "/v1/completions", longBody(eos, { stream: true }))).text();
      expect(streamed.endsWith("data: [DONE]\n\n")).toBe(true);
      expect(streamed).toContain('"finish_reason":"length"');
      // A body that does not arrive in time: 408, and the connection is closed.
      const slow = new RawClient(server.url);
      await slow.write(rawHead("/v1/completions", bBody) + bBody.slice(0, 3));
      const slowReply = parseRaw(await slow.reply);
      expect(slowReply.status).toBe(408);
      expect(slowReply.headers.connection).toBe("close");
      expect(JSON.parse(slowReply.body)).toMatchObject({ error: { code: "request_timeout", type: "invalid_request_error" } });
      await waitFor(server.url, (s) => s.busy === 0 && s.queued === 0);
    } finally {
      await server.close();
    }
  }, 60_000);

  it("close({ drain }) refuses new requests, lets running ones finish, then resolves", async () => {
    const server = await startServer({ model: wide, port: 0, parallel: 1, contextSize: 1024, threads: 1, apiKey: KEY });
    const running = post(server.url, "/v1/completions", longBody(eos, { stream: true, max_tokens: 120 }));
    const reader = (await running).body!.getReader();
    const first = await reader.read();
    // A connection that began a request before the shutdown, and ends it during the drain.
    const late = new RawClient(server.url);
    const lateBody = JSON.stringify({ prompt: "Hi", max_tokens: 2 });
    await late.write(`POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n`);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const started = Date.now();
    let closed = false;
    const closing = server.close({ drain: 30_000 }).then(() => (closed = true));
    await late.write(rawHead("/v1/completions", lateBody).split("\r\n").slice(2).join("\r\n") + lateBody);
    const lateReply = parseRaw(await late.reply);
    expect(lateReply.status).toBe(503);
    expect(lateReply.headers["retry-after"]).toBeDefined();
    expect(JSON.parse(lateReply.body)).toMatchObject({ error: { code: "shutting_down", type: "server_error" } });
    // New connections are refused.
    await expect(fetch(`${server.url}/health`)).rejects.toThrow();
    expect(closed).toBe(false);
    // The running request ends normally.
    let text = new TextDecoder().decode(first.value);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(text).toContain('"finish_reason":"length"');
    await closing;
    expect(Date.now() - started).toBeLessThan(20_000);
  }, 60_000);

  it("close({ drain }) cancels what still runs at the deadline with a 503", async () => {
    const server = await startServer({ model: wide, port: 0, parallel: 1, contextSize: 1024, threads: 1, apiKey: KEY });
    const running = post(server.url, "/v1/completions", longBody(eos));
    await waitFor(server.url, (s) => s.busy === 1);
    const started = Date.now();
    await server.close({ drain: 300 });
    const took = Date.now() - started;
    const response = await running;
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({ error: { code: "shutting_down", message: expect.stringContaining("cancelled") } });
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(3000);
  });
});

describe("server limits, CORS and security", () => {
  let tiny: Model;
  let server: RunningServer;
  let eos: number;

  beforeAll(async () => {
    tiny = await loadModel(fixturePath("llama-tiny-f32"));
    eos = tiny.specialTokens.eos ?? 2;
    server = await startServer({
      model: tiny, port: 0, parallel: 2, contextSize: 512, threads: 1, apiKey: KEY,
      maxTokensCap: 5, maxBodyBytes: 4000, cors: ["http://app.example", "http://other.example:3000"],
      embeddingModel: fixturePath("bert-tiny-f32"),
    });
  });
  afterAll(async () => {
    await server?.close();
    tiny?.dispose();
  });

  it("caps max_tokens: more asked gets the cap, none asked gets the cap", async () => {
    const bias = { [eos]: -100 };
    const cases: Array<[string, Record<string, unknown>]> = [
      ["/v1/completions", { prompt: "Once", max_tokens: 50, logit_bias: bias }],
      ["/v1/completions", { prompt: "Once", logit_bias: bias }],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], max_completion_tokens: 500, logit_bias: bias }],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], logit_bias: bias }],
    ];
    for (const [route, body] of cases) {
      const r = (await (await post(server.url, route, JSON.stringify(body))).json()) as { choices: Array<{ finish_reason: string }>; usage: { completion_tokens: number } };
      expect([route, body, r.usage.completion_tokens, r.choices[0].finish_reason]).toEqual([route, body, 5, "length"]);
    }
    // Fewer than the cap: as asked.
    const few = (await (await post(server.url, "/v1/completions", JSON.stringify({ prompt: "Once", max_tokens: 2, logit_bias: bias }))).json()) as { usage: { completion_tokens: number } };
    expect(few.usage.completion_tokens).toBe(2);
  });

  it("answers CORS preflights and marks responses for the allowed origins only", async () => {
    const preflight = await fetch(`${server.url}/v1/chat/completions`, {
      method: "OPTIONS",
      headers: { Origin: "http://app.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("http://app.example");
    expect(preflight.headers.get("access-control-allow-methods")).toBe("GET, POST, OPTIONS");
    expect(preflight.headers.get("access-control-allow-headers")).toBe("authorization, content-type");
    expect(preflight.headers.get("vary")).toBe("Origin");
    const models = await fetch(`${server.url}/v1/models`, { headers: { ...auth, Origin: "http://other.example:3000" } });
    expect(models.status).toBe(200);
    expect(models.headers.get("access-control-allow-origin")).toBe("http://other.example:3000");
    // Errors carry the header too (the browser must read them).
    const unauthorized = await fetch(`${server.url}/v1/models`, { headers: { Origin: "http://app.example" } });
    expect([unauthorized.status, unauthorized.headers.get("access-control-allow-origin")]).toEqual([401, "http://app.example"]);
    const stranger = await fetch(`${server.url}/v1/models`, { headers: { ...auth, Origin: "http://evil.example" } });
    expect(stranger.headers.get("access-control-allow-origin")).toBeNull();
    const strangerPreflight = await fetch(`${server.url}/v1/models`, { method: "OPTIONS", headers: { Origin: "http://evil.example", "Access-Control-Request-Method": "GET" } });
    expect(strangerPreflight.headers.get("access-control-allow-origin")).toBeNull();
    // "*": any origin; no option: no header.
    const any = await startServer({ model: tiny, port: 0, parallel: 1, contextSize: 128, threads: 1, cors: "*" });
    const plain = await startServer({ model: tiny, port: 0, parallel: 1, contextSize: 128, threads: 1 });
    try {
      expect((await fetch(`${any.url}/v1/models`, { headers: { Origin: "http://x.example" } })).headers.get("access-control-allow-origin")).toBe("*");
      const none = await fetch(`${plain.url}/v1/models`, { headers: { Origin: "http://x.example" } });
      expect(none.headers.get("access-control-allow-origin")).toBeNull();
      expect((await fetch(`${plain.url}/v1/models`, { method: "OPTIONS", headers: { Origin: "http://x.example" } })).status).toBe(405);
    } finally {
      await any.close();
      await plain.close();
    }
  });

  it("refuses a wrong key of the same length and of another length with 401, and takes the right one", async () => {
    const same = KEY.slice(0, -1) + (KEY.endsWith("9") ? "8" : "9");
    expect(same.length).toBe(KEY.length);
    const variants: Array<[string | undefined, number]> = [
      [`Bearer ${KEY}`, 200],
      [`bearer   ${KEY}`, 200],
      [`Bearer ${same}`, 401],
      [`Bearer ${KEY}x`, 401],
      [`Bearer ${KEY.slice(0, 4)}`, 401],
      [`Bearer `, 401],
      [KEY, 401],
      [`Basic ${KEY}`, 401],
      [undefined, 401],
    ];
    for (const [header, status] of variants) {
      const r = await fetch(`${server.url}/v1/models`, { headers: header === undefined ? {} : { Authorization: header } });
      expect([header, r.status]).toEqual([header, status]);
      if (status === 401) expect(await r.json()).toMatchObject({ error: { type: "authentication_error", code: "invalid_api_key" } });
    }
  });

  it("refuses a body past maxBodyBytes with 413, declared or chunked, and takes one at the limit", async () => {
    const padded = (n: number) => {
      const base = JSON.stringify({ prompt: "Hi", max_tokens: 1 });
      return base + " ".repeat(n - base.length);
    };
    const atLimit = await post(server.url, "/v1/completions", padded(4000));
    expect(atLimit.status).toBe(200);
    const over = await post(server.url, "/v1/completions", padded(4001));
    expect(over.status).toBe(413);
    expect(await over.json()).toEqual({ error: { message: expect.stringContaining("limit is 4000"), type: "invalid_request_error", param: null, code: "request_too_large" } });
    // No Content-Length: counted while reading.
    const chunked = new RawClient(server.url);
    const head = rawHead("/v1/completions", "").replace("Content-Length: 0\r\n", "Transfer-Encoding: chunked\r\n");
    const piece = "x".repeat(1000);
    await chunked.write(head);
    for (let i = 0; i < 6 && !chunked.socket.destroyed; i++) await chunked.write(`${piece.length.toString(16)}\r\n${piece}\r\n`).catch(() => {});
    const reply = parseRaw(await chunked.reply);
    expect(reply.status).toBe(413);
    expect(JSON.parse(reply.body)).toMatchObject({ error: { code: "request_too_large" } });
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });

  it("lets no request field reach the filesystem: path-like values are plain text", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-fields-"));
    const secret = path.join(dir, "secret.txt");
    const grammarFile = path.join(dir, "g.gbnf");
    const templateFile = path.join(dir, "t.jinja");
    const schemaFile = path.join(dir, "s.json");
    fs.writeFileSync(secret, "TOP-SECRET");
    fs.writeFileSync(grammarFile, 'root ::= "SECRET"');
    fs.writeFileSync(templateFile, "{{ 'SECRET' }}");
    fs.writeFileSync(schemaFile, JSON.stringify({ type: "string", const: "SECRET" }));
    const modelFile = fixturePath("gpt2-tiny-f32"); // a model the server was not given
    const paths = [secret, grammarFile, templateFile, schemaFile, modelFile, `file://${secret}`, "../../../../etc/passwd", "/etc/passwd", "~/.ssh/id_rsa", dir];
    const touched: string[] = [];
    const spied: Array<{ mockRestore(): void }> = [];
    const watch = (target: Record<string, unknown>, names: string[]) => {
      for (const name of names) {
        if (typeof target[name] !== "function") continue;
        const original = target[name] as (...args: unknown[]) => unknown;
        spied.push(
          vi.spyOn(target as Record<string, (...args: unknown[]) => unknown>, name).mockImplementation((...args: unknown[]) => {
            const first = args[0];
            const where = typeof first === "string" ? first : first instanceof URL ? first.href : Buffer.isBuffer(first) ? first.toString() : "";
            if (paths.some((p) => where.includes(p) || where.includes(path.basename(p)))) touched.push(`${name}(${where})`);
            return original.apply(target, args);
          }),
        );
      }
    };
    const names = ["open", "openSync", "readFile", "readFileSync", "createReadStream", "stat", "statSync", "lstat", "lstatSync", "access", "accessSync", "existsSync", "readdir", "readdirSync", "realpath", "realpathSync", "opendir", "opendirSync"];
    watch(fs as unknown as Record<string, unknown>, names);
    watch(fs.promises as unknown as Record<string, unknown>, names);
    syncBuiltinESMExports();
    try {
      const statuses: Array<[string, number]> = [];
      for (const p of paths) {
        const chat = {
          model: p,
          messages: [{ role: "system", content: p }, { role: "user", content: [{ type: "text", text: p }] }],
          max_tokens: 3,
          stop: [p],
          user: p,
          chat_template: p,
          chat_template_kwargs: { template: p, include: p, file: p },
          dry_sequence_breakers: [p],
          grammar: p,
        };
        statuses.push([`chat grammar ${p}`, (await post(server.url, "/v1/chat/completions", JSON.stringify(chat))).status]);
        const { grammar: _g, ...noGrammar } = chat;
        const withSchema = { ...noGrammar, response_format: { type: "json_schema", json_schema: { name: "x", schema: { $ref: p } } } };
        statuses.push([`chat schema ${p}`, (await post(server.url, "/v1/chat/completions", JSON.stringify(withSchema))).status]);
        const tools = { ...noGrammar, tools: [{ type: "function", function: { name: "f", description: p, parameters: { type: "object", properties: { a: { $ref: p } } } } }] };
        statuses.push([`chat tools ${p}`, (await post(server.url, "/v1/chat/completions", JSON.stringify(tools))).status]);
        const completion = { model: p, prompt: p, max_tokens: 3, stop: p, suffix: undefined, lora: p, slot_save_path: p, filename: p };
        const done = await post(server.url, "/v1/completions", JSON.stringify(completion));
        statuses.push([`completion ${p}`, done.status]);
        if (done.status === 200) expect(((await done.json()) as { model: string }).model).toBe(path.basename(tiny.path).replace(/\.gguf$/, ""));
        statuses.push([`embeddings ${p}`, (await post(server.url, "/v1/embeddings", JSON.stringify({ model: p, input: [p] }))).status]);
        statuses.push([`slots ${p}`, (await post(server.url, `/slots/0?action=restore`, JSON.stringify({ filename: p }))).status]);
        const infill = { input_prefix: p, input_suffix: p, input_extra: [{ filename: p, text: p }], max_tokens: 2 };
        statuses.push([`infill ${p}`, (await post(server.url, "/infill", JSON.stringify(infill))).status]);
        statuses.push([`apply-template ${p}`, (await post(server.url, "/apply-template", JSON.stringify({ messages: chat.messages, chat_template_kwargs: chat.chat_template_kwargs }))).status]);
        statuses.push([`tokenize ${p}`, (await post(server.url, "/tokenize", JSON.stringify({ content: p, with_pieces: true }))).status]);
      }
      // Each is a plain answer: 200, or a 400 (a grammar or schema of that text is not valid; a
      // prompt too long for the session; no FIM tokens), or 404/501 for a route the server does not have.
      for (const [what, status] of statuses) expect([what, [200, 400, 404, 501].includes(status)]).toEqual([what, true]);
      // A grammar given as a file's path is read as grammar text (and is not valid GBNF).
      const g = await post(server.url, "/v1/completions", JSON.stringify({ prompt: "x", max_tokens: 2, grammar: grammarFile }));
      expect(g.status).toBe(400);
      expect(touched).toEqual([]);
      // The spies see what is opened (through the default export and named imports alike).
      fs.readFileSync(secret);
      expect(touched).toContain(`readFileSync(${secret})`);
    } finally {
      for (const s of spied) s.mockRestore();
      syncBuiltinESMExports();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it("warns when it listens beyond this machine without an API key", async () => {
    const lines: string[] = [];
    const open = await startServer({ model: tiny, port: 0, host: "0.0.0.0", parallel: 1, contextSize: 128, threads: 1, log: (l) => lines.push(l) });
    await open.close();
    expect(lines.some((l) => /warning: listening on 0\.0\.0\.0:\d+, reachable beyond this machine, without an API key/.test(l))).toBe(true);
    for (const options of [{ host: "0.0.0.0", apiKey: "k" }, { host: "127.0.0.1" }, { host: "localhost" }]) {
      const quiet: string[] = [];
      const s = await startServer({ model: tiny, port: 0, parallel: 1, contextSize: 128, threads: 1, log: (l) => quiet.push(l), ...options });
      await s.close();
      expect([options, quiet.filter((l) => l.includes("warning"))]).toEqual([options, []]);
    }
  });
});

describe("llama-napi serve: SIGTERM", () => {
  it("drains on the first SIGTERM (new connections refused), cancels on the second, and exits 0", async () => {
    const main = path.join(repoRoot, "src", "cli", "main.ts");
    const loader = path.join(repoRoot, "tests", "helpers", "register-ts-cached.mjs");
    const child = spawn(process.execPath, ["--import", loader, main, "serve", "-m", fixturePath("gpt2-wide-f16"), "--port", "0", "-np", "1", "-c", "1024", "-t", "1", "--shutdown-timeout", "60", "--max-queue", "2", "--timeout", "120", "--max-tokens-cap", "900", "--cors", "*"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /at (http:\/\/[^\s]+)/.exec(out);
        if (m) resolve(m[1]);
      });
      void exited.then((code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
    });
    try {
      const eos = 50256;
      const response = await fetch(`${url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json", Origin: "http://x" }, body: longBody(eos, { stream: true }) });
      expect(response.headers.get("access-control-allow-origin")).toBe("*");
      const reader = response.body!.getReader();
      let text = new TextDecoder().decode((await reader.read()).value);
      child.kill("SIGTERM");
      const drainingSince = Date.now();
      for (let i = 0; i < 200 && !stderr.includes("finishing the running requests"); i++) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(stderr).toMatch(/SIGTERM: finishing the running requests \(up to 60 s; SIGTERM again to cancel them now\)/);
      await expect(fetch(`${url}/health`)).rejects.toThrow();
      child.kill("SIGTERM");
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      // Cancelled mid-stream: the error comes as the last event (as llama-server sends errors).
      expect(text).toMatch(/data: \{"error":\{"message":"The server is shutting down: the request was cancelled","type":"server_error","param":null,"code":"shutting_down"\}\}\n\n$/);
      expect(await exited).toBe(0);
      expect(Date.now() - drainingSince).toBeLessThan(30_000);
    } finally {
      child.kill("SIGKILL");
    }
  }, 120_000);
});

describe("soak (short): mixed traffic above the server's parallel", () => {
  it("answers every request, keeps its memory, and ends with the pool idle", async () => {
    const server = await startSoakServer(fixturePath("llama-tiny-f32"));
    try {
      const report = await runSoak({ url: server.url, apiKey: SOAK_SERVER.apiKey, maxBodyBytes: SOAK_SERVER.maxBodyBytes, durationMs: 20_000, concurrency: 16, sampleEveryMs: 1000, warmupMs: 4000, seed: 7 });
      console.log(formatReport(report));
      // 20 s is too short for the 10 % bound of `npm run test:soak` (the worker's heap is still
      // growing into its steady state, and other test files run beside it: 6-18 % seen here):
      // the short run catches a gross leak only.
      expect(soakProblems(report, 0.5)).toEqual([]);
      // Each kind of traffic happened, and the queue filled (503 queue_full) at times: 16 clients
      // against 2 sessions and a queue of 4 (with 8, a run where replies come fast enough can end
      // without the queue ever full).
      expect(Object.keys(report.byKind).sort()).toEqual(
        ["abort-mid-stream", "chat", "chat-stream", "completion", "completion-stream", "malformed-json", "oversized-body", "slow-client", "tools", "tools-stream", "wrong-key"].sort(),
      );
      expect(report.byStatus["503"]).toBeGreaterThan(0);
      expect(report.byStatus.aborted).toBeGreaterThan(0);
      expect(await health(server.url)).toEqual({ total: SOAK_SERVER.parallel, busy: 0, queued: 0 });
    } finally {
      await server.close();
    }
  }, 90_000);
});
