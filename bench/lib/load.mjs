#!/usr/bin/env node
/**
 * A load generator for OpenAI-compatible servers (llama-napi serve, llama-server): concurrent
 * clients, each in a closed loop, sending streamed /v1/completions or /v1/chat/completions
 * requests with Node's fetch, and timing every Server-Sent Event as it arrives.
 *
 * Per round: aggregate generated tokens/s (completion tokens of every request / wall time from
 * the first request sent to the last reply ended), time to first token and inter-token latency
 * (p50 / p99 over every request of the round), errors, and the prompt tokens the servers
 * reported as reused from their cache (`timings.cache_n`).
 *
 * Two plans:
 *   { kind: "queue", path, bodies }: `clients` clients take the next body from a shared queue
 *     until it is empty (distinct prompts, a shared system prompt, ...);
 *   { kind: "conversations", conversations: [{ system?, turns: [user text] }], body }: one client
 *     per conversation, each sending its turns in order over /v1/chat/completions and appending
 *     the assistant's reply before the next (prefix reuse across turns).
 *
 * From the command line (a quick look at one server):
 *   node bench/lib/load.mjs --url http://127.0.0.1:8080 [--clients 4] [--requests 16] [--max-tokens 64] [--chat] [--ban EOS_ID]
 */
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

import { percentile } from "./stats.mjs";

/**
 * Sends one streamed request and times it. Never throws: a failure is { ok: false, error }.
 * `tokens`: the completion tokens the server counted (usage, else timings.predicted_n), else the
 * events that carried text.
 */
export async function streamRequest(baseUrl, path, body, { timeoutMs = 120_000, apiKey } = {}) {
  const start = performance.now();
  const result = { ok: false, status: 0, error: null, startMs: start, endMs: NaN, ttftMs: NaN, gapsMs: [], tokens: 0, text: "", finishReason: null, reconnects: 0, promptTokens: NaN, cachedTokens: NaN };
  const headers = { "content-type": "application/json" };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const send = () => fetch(`${baseUrl}${path}`, { method: "POST", headers, body: JSON.stringify({ ...body, stream: true }), signal });
    let res;
    try {
      res = await send();
    } catch (err) {
      // A kept-alive connection the server closed without saying so ("Connection: close"):
      // llama-server does this after a streamed reply while announcing "Keep-Alive". Retry once
      // on a fresh connection, as curl and the OpenAI SDKs do; counted in `reconnects`.
      if (!isStaleConnection(err)) throw err;
      result.reconnects = 1;
      res = await send();
    }
    result.status = res.status;
    if (res.status !== 200) {
      result.error = `HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`;
      return result;
    }
    const decoder = new TextDecoder();
    let buffer = "";
    let last = NaN;
    let events = 0;
    let done = false;
    let usage = null;
    let timings = null;
    for await (const chunk of res.body) {
      const now = performance.now();
      buffer += decoder.decode(chunk, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + (buffer[cut] === "\r" ? 4 : 2));
        for (const line of event.split(/\r?\n/)) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") {
            done = true;
            continue;
          }
          const json = JSON.parse(data);
          if (json.error) throw new Error(`error event: ${JSON.stringify(json.error).slice(0, 300)}`);
          if (json.usage) usage = json.usage;
          if (json.timings) timings = json.timings;
          const choice = json.choices?.[0];
          if (choice?.finish_reason) result.finishReason = choice.finish_reason;
          const piece = choice?.text ?? choice?.delta?.content ?? "";
          if (piece === "") continue;
          events++;
          result.text += piece;
          if (Number.isNaN(last)) result.ttftMs = now - start;
          else result.gapsMs.push(now - last);
          last = now;
        }
      }
    }
    result.endMs = performance.now();
    if (!done) throw new Error("the stream ended without data: [DONE]");
    result.tokens = usage?.completion_tokens ?? timings?.predicted_n ?? events;
    if (timings && Number.isFinite(timings.prompt_n)) {
      result.cachedTokens = timings.cache_n ?? 0;
      result.promptTokens = timings.prompt_n + result.cachedTokens;
    } else if (usage) {
      result.promptTokens = usage.prompt_tokens;
    }
    result.ok = true;
  } catch (err) {
    result.endMs = performance.now();
    const cause = err.cause ? ` (${err.cause.code ?? err.cause.message ?? err.cause})` : "";
    result.error = err.name === "TimeoutError" ? `timed out after ${timeoutMs} ms` : `${err.message ?? err}${cause}`;
  }
  return result;
}

/** The request never reached a server that answers: the socket was closed or reset under it. */
function isStaleConnection(err) {
  const code = err?.cause?.code;
  return err?.name !== "TimeoutError" && (code === "UND_ERR_SOCKET" || code === "ECONNRESET" || code === "EPIPE");
}

/**
 * Runs one round of `plan` against `baseUrl`; resolves to its figures (see the file's comment).
 * `expectTokens`: a reply with fewer completion tokens counts as an error ("short").
 */
export async function runRound(baseUrl, plan, { clients, expectTokens, timeoutMs, apiKey } = {}) {
  const results = [];
  const t0 = performance.now();
  if (plan.kind === "queue") {
    let next = 0;
    const worker = async () => {
      while (next < plan.bodies.length) {
        const body = plan.bodies[next++];
        results.push(await streamRequest(baseUrl, plan.path, body, { timeoutMs, apiKey }));
      }
    };
    await Promise.all(Array.from({ length: Math.min(clients ?? plan.bodies.length, plan.bodies.length) }, worker));
  } else if (plan.kind === "conversations") {
    await Promise.all(
      plan.conversations.map(async (conversation) => {
        const messages = conversation.system ? [{ role: "system", content: conversation.system }] : [];
        for (const turn of conversation.turns) {
          messages.push({ role: "user", content: turn });
          const r = await streamRequest(baseUrl, "/v1/chat/completions", { ...plan.body, messages: [...messages] }, { timeoutMs, apiKey });
          results.push(r);
          if (!r.ok) break; // the conversation cannot go on without the reply
          messages.push({ role: "assistant", content: r.text });
        }
      }),
    );
  } else {
    throw new Error(`unknown plan kind ${plan.kind}`);
  }
  const wallS = (performance.now() - t0) / 1e3;
  return summarize(results, wallS, expectTokens);
}

function summarize(results, wallS, expectTokens) {
  const ok = results.filter((r) => r.ok);
  const shortReplies = expectTokens ? ok.filter((r) => r.tokens < expectTokens) : [];
  const short = shortReplies.length;
  const errors = [
    ...results.filter((r) => !r.ok).map((r) => r.error),
    ...shortReplies.map((r) => `short reply: ${r.tokens} of ${expectTokens} tokens, finish_reason ${r.finishReason}`),
  ];
  const tokens = ok.reduce((sum, r) => sum + r.tokens, 0);
  const ttft = ok.map((r) => r.ttftMs);
  const gaps = ok.flatMap((r) => r.gapsMs);
  const prompt = ok.reduce((sum, r) => sum + (Number.isFinite(r.promptTokens) ? r.promptTokens : 0), 0);
  const cached = ok.reduce((sum, r) => sum + (Number.isFinite(r.cachedTokens) ? r.cachedTokens : 0), 0);
  const reportsCache = ok.some((r) => Number.isFinite(r.cachedTokens));
  return {
    requests: results.length,
    ok: ok.length,
    errors: errors.length,
    short,
    reconnects: results.reduce((sum, r) => sum + r.reconnects, 0),
    errorSamples: [...new Set(errors)].slice(0, 3),
    tokens,
    wallS,
    tokensPerS: tokens / wallS,
    ttftP50: percentile(ttft, 50),
    ttftP99: percentile(ttft, 99),
    itlP50: percentile(gaps, 50),
    itlP99: percentile(gaps, 99),
    promptTokens: prompt,
    cachedTokens: reportsCache ? cached : NaN,
    cachedFraction: reportsCache && prompt > 0 ? cached / prompt : NaN,
  };
}

/** Polls GET /health until it answers 200 (llama-server answers 503 while it loads). */
export async function waitHealthy(baseUrl, { timeoutMs = 120_000, exited = () => null } = {}) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const why = exited();
    if (why) throw new Error(why);
    try {
      const res = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    if (performance.now() > deadline) throw new Error(`${baseUrl}/health did not answer 200 within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      url: { type: "string", default: "http://127.0.0.1:8080" },
      clients: { type: "string", default: "4" },
      requests: { type: "string", default: "16" },
      "max-tokens": { type: "string", default: "64" },
      "api-key": { type: "string" },
      chat: { type: "boolean", default: false },
      ban: { type: "string", default: "50256" }, // the EOS token to ban (GPT-2's by default)
    },
    strict: true,
  });
  const maxTokens = Number(values["max-tokens"]);
  const base = { max_tokens: maxTokens, temperature: 0, ignore_eos: true, logit_bias: { [values.ban]: -100 }, stream_options: { include_usage: true } };
  const bodies = Array.from({ length: Number(values.requests) }, (_, i) =>
    values.chat ? { ...base, messages: [{ role: "user", content: `Question ${i + 1}: tell me a story.` }] } : { ...base, prompt: `Story ${i + 1}: once upon a time` },
  );
  const plan = { kind: "queue", path: values.chat ? "/v1/chat/completions" : "/v1/completions", bodies };
  const round = await runRound(values.url, plan, { clients: Number(values.clients), expectTokens: maxTokens, apiKey: values["api-key"] });
  console.log(JSON.stringify(round));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  main().catch((err) => {
    console.error(err.stack ?? String(err));
    process.exit(1);
  });
}
