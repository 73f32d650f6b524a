/**
 * The soak driver of the server (`npm run test:soak`, and a short run in
 * tests/server-lifecycle.test.ts): mixed traffic from more clients than the server has sessions,
 * on loopback, for a while — completions and chats (streamed or not), tool-call requests, clients
 * that go away mid-stream, malformed JSON, oversized bodies, clients that trickle their body,
 * wrong API keys — then a check: every request answered with a status its kind allows, the pool
 * back to 0 busy / 0 queued, and the process's RSS (sampled every few seconds, after a warm-up)
 * about the same in the last quarter of the run as in the first.
 */
import http from "node:http";

import { startServer, type RunningServer, type ServerOptions } from "../../src/index.js";
import { mulberry32 } from "./math.js";

export type SoakKind =
  | "completion"
  | "completion-stream"
  | "chat"
  | "chat-stream"
  | "tools"
  | "tools-stream"
  | "abort-mid-stream"
  | "malformed-json"
  | "oversized-body"
  | "slow-client"
  | "wrong-key";

/** The statuses each kind may get ("aborted": the client went away on purpose). 503: the queue was full. */
const ALLOWED: Record<SoakKind, ReadonlyArray<number | "aborted">> = {
  completion: [200, 503],
  "completion-stream": [200, 503],
  chat: [200, 503],
  "chat-stream": [200, 503],
  tools: [200, 503],
  "tools-stream": [200, 503],
  "abort-mid-stream": ["aborted", 200, 503],
  "malformed-json": [400],
  "oversized-body": [413],
  "slow-client": [200, 503],
  "wrong-key": [401],
};

/** Relative frequency of each kind. */
const WEIGHTS: Record<SoakKind, number> = {
  completion: 3,
  "completion-stream": 3,
  chat: 3,
  "chat-stream": 3,
  tools: 2,
  "tools-stream": 1,
  "abort-mid-stream": 2,
  "malformed-json": 1,
  "oversized-body": 1,
  "slow-client": 1,
  "wrong-key": 1,
};

export interface SoakOptions {
  url: string;
  apiKey: string;
  /** The server's maxBodyBytes: oversized bodies are 1.5 times this. */
  maxBodyBytes: number;
  durationMs: number;
  /** Clients sending at once (more than the server's parallel, so that requests queue). */
  concurrency: number;
  /** RSS sampling period (default 2000 ms). */
  sampleEveryMs?: number;
  /** Time before RSS sampling starts (default 10 % of the run, at least 2 s): allocators settle. */
  warmupMs?: number;
  seed?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface SoakReport {
  durationMs: number;
  requests: number;
  /** Requests by kind, then by status ("aborted": the client's own abort). */
  byKind: Record<string, Record<string, number>>;
  byStatus: Record<string, number>;
  /** Requests that got no answer, or a status their kind does not allow (with what happened). */
  failures: string[];
  rss: { samples: number[]; firstQuarterMiB: number; lastQuarterMiB: number; drift: number };
  /** /health after the traffic stopped (and the server settled). */
  final: { busy: number; queued: number };
}

const TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather forecast of a city",
    parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" } }, required: ["city"] },
  },
};

const WORDS = ["once", "upon", "a", "time", "the", "server", "answered", "every", "request", "quickly", "llama", "river", "stone"];

interface Outcome {
  status: number | "aborted";
  /** What went wrong, for a failure. */
  detail?: string;
}

/** One raw HTTP request (node:http, so that a body can be trickled and an abort is exact). */
function request(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string | Buffer; trickle?: { pieces: number; delayMs: number }; abortAfterChunks?: number },
): Promise<Outcome & { text: string }> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (o: Outcome & { text: string }) => {
      if (!settled) {
        settled = true;
        resolve(o);
      }
    };
    const body = options.body === undefined ? undefined : Buffer.isBuffer(options.body) ? options.body : Buffer.from(options.body);
    const req = http.request(url, {
      method: options.method ?? "POST",
      headers: { ...(body ? { "Content-Type": "application/json", "Content-Length": String(body.length) } : {}), ...options.headers },
      agent: false,
    });
    req.setTimeout(120_000, () => req.destroy(new Error("no answer within 120 s")));
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      let count = 0;
      res.on("data", (c: Buffer) => {
        chunks.push(c);
        count++;
        if (options.abortAfterChunks !== undefined && count >= options.abortAfterChunks && res.statusCode === 200) {
          req.destroy();
          done({ status: "aborted", text: "" });
        }
      });
      res.on("end", () => done({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", (err) => done({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8"), detail: `response error: ${err.message}` }));
    });
    req.on("error", (err) => done({ status: 0, text: "", detail: `no answer: ${err.message}` }));
    if (!body) {
      req.end();
    } else if (!options.trickle) {
      req.end(body);
    } else {
      const { pieces, delayMs } = options.trickle;
      const size = Math.ceil(body.length / pieces);
      let at = 0;
      const next = () => {
        if (req.destroyed) return;
        if (at >= body.length) {
          req.end();
          return;
        }
        req.write(body.subarray(at, at + size));
        at += size;
        setTimeout(next, delayMs);
      };
      next();
    }
  });
}

/** Checks a 200's body: JSON with choices, or SSE events ending in [DONE]. */
function checkBody(kind: SoakKind, text: string): string | undefined {
  const streamed = kind.endsWith("-stream") || kind === "abort-mid-stream";
  if (streamed) {
    if (!text.endsWith("data: [DONE]\n\n")) return `stream not ended by [DONE]: ...${JSON.stringify(text.slice(-120))}`;
    for (const block of text.split("\n\n")) {
      if (block === "" || block === "data: [DONE]") continue;
      if (!block.startsWith("data: ")) return `not an SSE event: ${JSON.stringify(block.slice(0, 80))}`;
      const event = JSON.parse(block.slice(6)) as { error?: unknown };
      if (event.error) return `error event: ${JSON.stringify(event.error)}`;
    }
    return undefined;
  }
  try {
    const json = JSON.parse(text) as { choices?: unknown[] };
    if (!Array.isArray(json.choices) || json.choices.length !== 1) return `no choices: ${text.slice(0, 120)}`;
  } catch {
    return `not JSON: ${text.slice(0, 120)}`;
  }
  return undefined;
}

function pick(rand: () => number): SoakKind {
  const entries = Object.entries(WEIGHTS) as Array<[SoakKind, number]>;
  let x = rand() * entries.reduce((n, [, w]) => n + w, 0);
  for (const [kind, w] of entries) {
    x -= w;
    if (x < 0) return kind;
  }
  return entries[0][0];
}

async function one(kind: SoakKind, options: SoakOptions, rand: () => number): Promise<Outcome> {
  const auth = { Authorization: `Bearer ${options.apiKey}` };
  const words = (n: number) => Array.from({ length: n }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(" ");
  const maxTokens = 4 + Math.floor(rand() * 24);
  const seed = Math.floor(rand() * 1e6);
  const chat = (extra: Record<string, unknown>) => JSON.stringify({ messages: [{ role: "user", content: words(3 + Math.floor(rand() * 10)) }], max_tokens: maxTokens, seed, ...extra });
  const completion = (extra: Record<string, unknown>) => JSON.stringify({ prompt: words(2 + Math.floor(rand() * 12)), max_tokens: maxTokens, seed, ...extra });
  let r: Outcome & { text: string };
  switch (kind) {
    case "completion":
      r = await request(`${options.url}/v1/completions`, { headers: auth, body: completion({}) });
      break;
    case "completion-stream":
      r = await request(`${options.url}/v1/completions`, { headers: auth, body: completion({ stream: true }) });
      break;
    case "chat":
      r = await request(`${options.url}/v1/chat/completions`, { headers: auth, body: chat({}) });
      break;
    case "chat-stream":
      r = await request(`${options.url}/v1/chat/completions`, { headers: auth, body: chat({ stream: true }) });
      break;
    case "tools":
      r = await request(`${options.url}/v1/chat/completions`, { headers: auth, body: chat({ tools: [TOOL] }) });
      break;
    case "tools-stream":
      r = await request(`${options.url}/v1/chat/completions`, { headers: auth, body: chat({ tools: [TOOL], stream: true }) });
      break;
    case "abort-mid-stream":
      r = await request(`${options.url}/v1/chat/completions`, { headers: auth, body: chat({ stream: true, max_tokens: 200 }), abortAfterChunks: 1 + Math.floor(rand() * 3) });
      break;
    case "malformed-json":
      r = await request(`${options.url}/v1/chat/completions`, { headers: auth, body: `{"messages": [{"role": "user", "content": "${words(3)}"` });
      break;
    case "oversized-body":
      r = await request(`${options.url}/v1/completions`, { headers: auth, body: JSON.stringify({ prompt: "x".repeat(Math.ceil(options.maxBodyBytes * 1.5)) }) });
      break;
    case "slow-client":
      r = await request(`${options.url}/v1/completions`, { headers: auth, body: completion({}), trickle: { pieces: 8, delayMs: 50 + Math.floor(rand() * 100) } });
      break;
    case "wrong-key":
      r = await request(`${options.url}/v1/chat/completions`, { headers: { Authorization: `Bearer x${options.apiKey}` }, body: chat({}) });
      break;
  }
  if (r.detail) return { status: r.status, detail: r.detail };
  if (!ALLOWED[kind].includes(r.status)) return { status: r.status, detail: `status ${r.status} is not one of ${ALLOWED[kind].join(", ")}: ${r.text.slice(0, 200)}` };
  if (r.status === 200) {
    const bad = checkBody(kind, r.text);
    if (bad) return { status: r.status, detail: bad };
  } else if (typeof r.status === "number") {
    try {
      const json = JSON.parse(r.text) as { error?: { message?: unknown; type?: unknown } };
      if (typeof json.error?.message !== "string" || typeof json.error.type !== "string") return { status: r.status, detail: `not an OpenAI error body: ${r.text.slice(0, 200)}` };
    } catch {
      return { status: r.status, detail: `not an OpenAI error body: ${r.text.slice(0, 200)}` };
    }
  }
  return { status: r.status };
}

async function health(url: string): Promise<{ busy: number; queued: number }> {
  const r = await request(`${url}/health`, { method: "GET" });
  const json = JSON.parse(r.text) as { sessions: { busy: number; queued: number } };
  return json.sessions;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/** Drives the traffic for `durationMs`, then waits (up to 10 s) for the server to settle. */
export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const started = Date.now();
  const end = started + options.durationMs;
  const byKind: Record<string, Record<string, number>> = {};
  const byStatus: Record<string, number> = {};
  const failures: string[] = [];
  let requests = 0;
  const samples: number[] = [];
  const every = options.sampleEveryMs ?? 2000;
  const warmup = options.warmupMs ?? Math.max(2000, options.durationMs / 10);
  let sampler: NodeJS.Timeout | undefined;
  const warm = setTimeout(() => {
    samples.push(process.memoryUsage().rss);
    sampler = setInterval(() => samples.push(process.memoryUsage().rss), every);
  }, warmup);
  let lastLog = started;
  const worker = async (id: number) => {
    const own = mulberry32((options.seed ?? 1) * 1000 + id);
    while (Date.now() < end) {
      const kind = pick(own);
      const outcome = await one(kind, options, own);
      requests++;
      const key = String(outcome.status);
      (byKind[kind] ??= {})[key] = (byKind[kind][key] ?? 0) + 1;
      byStatus[key] = (byStatus[key] ?? 0) + 1;
      if (outcome.detail && failures.length < 50) failures.push(`${kind}: ${outcome.detail}`);
      if (Date.now() - lastLog > 15_000) {
        lastLog = Date.now();
        options.log?.(`${Math.round((Date.now() - started) / 1000)} s: ${requests} requests, ${JSON.stringify(byStatus)}, RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(1)} MiB`);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, (_, i) => worker(i)));
  clearTimeout(warm);
  if (sampler) clearInterval(sampler);
  samples.push(process.memoryUsage().rss);
  let final = await health(options.url);
  for (let i = 0; i < 100 && (final.busy > 0 || final.queued > 0); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    final = await health(options.url);
  }
  const quarter = Math.max(1, Math.floor(samples.length / 4));
  const first = mean(samples.slice(0, quarter));
  const last = mean(samples.slice(-quarter));
  return {
    durationMs: Date.now() - started,
    requests,
    byKind,
    byStatus,
    failures,
    rss: { samples, firstQuarterMiB: first / 2 ** 20, lastQuarterMiB: last / 2 ** 20, drift: (last - first) / first },
    final,
  };
}

/** The figures of a report, for people. */
export function formatReport(report: SoakReport): string {
  const lines = [
    `${report.requests} requests in ${(report.durationMs / 1000).toFixed(1)} s; by status: ${JSON.stringify(report.byStatus)}`,
    ...Object.entries(report.byKind)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([kind, statuses]) => `  ${kind.padEnd(18)} ${JSON.stringify(statuses)}`),
    `RSS: ${report.rss.samples.length} samples; first quarter ${report.rss.firstQuarterMiB.toFixed(1)} MiB, last quarter ${report.rss.lastQuarterMiB.toFixed(1)} MiB, drift ${(report.rss.drift * 100).toFixed(2)} %`,
    `pool at the end: ${report.final.busy} busy, ${report.final.queued} queued`,
    report.failures.length === 0 ? "failures: none" : `failures (${report.failures.length}):\n${report.failures.map((f) => `  ${f}`).join("\n")}`,
  ];
  return lines.join("\n");
}

/** Whether a report passes: no failures, RSS drift under 10 %, the pool idle. */
export function soakProblems(report: SoakReport, maxDrift = 0.1): string[] {
  const problems: string[] = [];
  if (report.failures.length > 0) problems.push(`${report.failures.length} requests failed`);
  if (report.rss.drift >= maxDrift) problems.push(`RSS drifted ${(report.rss.drift * 100).toFixed(1)} % (limit ${maxDrift * 100} %)`);
  if (report.final.busy !== 0 || report.final.queued !== 0) problems.push(`the pool did not settle: ${report.final.busy} busy, ${report.final.queued} queued`);
  if (report.requests === 0) problems.push("no requests were made");
  return problems;
}

/** The server of a soak: the model on loopback, with a small queue and body limit so both are hit. */
export const SOAK_SERVER = {
  parallel: 2,
  maxQueue: 4,
  maxBodyBytes: 64 * 1024,
  apiKey: "soak-key",
} as const;

export async function startSoakServer(model: string, extra: Partial<ServerOptions> = {}): Promise<RunningServer> {
  return startServer({
    model,
    port: 0,
    threads: 1,
    // The whole context: 256 tokens for each of the 2 sequences.
    contextSize: 512,
    parallel: SOAK_SERVER.parallel,
    maxQueue: SOAK_SERVER.maxQueue,
    maxBodyBytes: SOAK_SERVER.maxBodyBytes,
    apiKey: SOAK_SERVER.apiKey,
    requestTimeout: 60_000,
    ...extra,
  });
}
