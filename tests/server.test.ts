/**
 * The OpenAI-compatible server, driven by the official `openai` client (and raw fetch for what a
 * client library hides: SSE framing, malformed bodies, status codes). The served model is
 * llama-tiny-f32 (random weights, Llama 2 chat template); replies are compared with what the
 * library generates for the same prompt, greedily.
 */
import { spawn } from "node:child_process";
import path from "node:path";

import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, renderChat, startServer, type Context, type Model, type RunningServer } from "../src/index.js";
import { SessionPool } from "../src/server/pool.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";

const KEY = "test-key-123";

interface SseResult {
  status: number;
  events: Array<Record<string, unknown>>;
  done: boolean;
  afterDone: string;
}

/** Reads an SSE response by hand: every `data:` event must be JSON, until `data: [DONE]`. */
async function readSse(response: Response): Promise<SseResult> {
  const text = await response.text();
  const events: Array<Record<string, unknown>> = [];
  let done = false;
  let afterDone = "";
  for (const block of text.split("\n\n")) {
    if (block === "") continue;
    if (done) {
      afterDone += block;
      continue;
    }
    expect(block.startsWith("data: ")).toBe(true);
    const data = block.slice(6);
    if (data === "[DONE]") done = true;
    else events.push(JSON.parse(data) as Record<string, unknown>);
  }
  return { status: response.status, events, done, afterDone };
}

describe("OpenAI-compatible server", () => {
  let model: Model;
  let reference: Context;
  let server: RunningServer;
  let client: OpenAI;
  const auth = { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" };

  beforeAll(async () => {
    model = await loadModel(fixturePath("llama-tiny-f32"));
    reference = await model.createContext({ contextSize: 256, threads: 1 });
    server = await startServer({
      model,
      port: 0,
      parallel: 4,
      contextSize: 1024, // the whole context, as llama-server's -c: 256 tokens per request
      threads: 2,
      apiKey: KEY,
      modelName: "llama-tiny",
      embeddingModel: fixturePath("bert-tiny-f32"),
    });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60_000 });
  });
  afterAll(async () => {
    await server?.close();
    model?.dispose();
  });

  /** The library's greedy continuation of `tokens`, for comparison. */
  async function greedy(tokens: Int32Array, maxTokens: number): Promise<string> {
    using session = reference.createSession();
    await session.prompt(tokens);
    return (await session.generate({ maxTokens, temperature: 0 }).collect()).text;
  }

  async function chatTokens(messages: Array<{ role: string; content: string }>): Promise<Int32Array> {
    return model.tokenize(await renderChat(model, messages), { addSpecial: true, parseSpecial: true });
  }

  it("listens on 127.0.0.1 and answers /health without a key", async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const response = await fetch(`${server.url}/health`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: "ok", sessions: { total: 4, busy: 0, queued: 0 } });
  });

  it("contextSize is the whole context, divided among the parallel sequences (llama-server's -c with -np)", async () => {
    const prompt = (n: number) => Array.from({ length: n }, (_, i) => 100 + (i % 50));
    const post = (tokens: number[]) =>
      fetch(`${server.url}/v1/completions`, { method: "POST", headers: auth, body: JSON.stringify({ model: "any", prompt: tokens, max_tokens: 1 }) });
    expect((await post(prompt(250))).status).toBe(200);
    const tooLong = await post(prompt(257));
    expect(tooLong.status).toBe(400);
    expect(((await tooLong.json()) as { error: { message: string } }).error.message).toContain("hold 256");
    await expect(startServer({ model, port: 0, parallel: 4, contextSize: 3 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });

  it("lists the models", async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toEqual(["llama-tiny", expect.stringMatching(/^bert-tiny-f32/)]);
  });

  it("completes a prompt as the library does", async () => {
    const prompt = "Once upon a time";
    const r = await client.completions.create({ model: "llama-tiny", prompt, max_tokens: 8, temperature: 0 });
    const tokens = model.tokenize(prompt, { addSpecial: true, parseSpecial: true });
    expect(r.object).toBe("text_completion");
    expect(r.model).toBe("llama-tiny");
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0].text).toBe(await greedy(tokens, 8));
    expect(["stop", "length"]).toContain(r.choices[0].finish_reason);
    expect(r.usage).toEqual({ prompt_tokens: tokens.length, completion_tokens: expect.any(Number), total_tokens: expect.any(Number) });
    expect(r.usage!.completion_tokens).toBeLessThanOrEqual(8);
    expect(r.usage!.total_tokens).toBe(r.usage!.prompt_tokens + r.usage!.completion_tokens);
    // Token-id prompts and echo.
    const echoed = await client.completions.create({ model: "llama-tiny", prompt: Array.from(tokens), max_tokens: 8, temperature: 0, echo: true });
    expect(echoed.choices[0].text).toBe(model.detokenize(tokens) + r.choices[0].text);
  });

  it("answers a chat completion with the model's chat template", async () => {
    const messages = [
      { role: "system" as const, content: "You are terse." },
      { role: "user" as const, content: "Hello" },
    ];
    const r = await client.chat.completions.create({ model: "llama-tiny", messages, max_tokens: 10, temperature: 0 });
    const tokens = await chatTokens(messages);
    expect(r.object).toBe("chat.completion");
    expect(r.id).toMatch(/^chatcmpl-/);
    expect(r.choices[0].message.role).toBe("assistant");
    expect(r.choices[0].message.content).toBe(await greedy(tokens, 10));
    expect(r.usage?.prompt_tokens).toBe(tokens.length);
    expect(r.choices[0].finish_reason).toMatch(/^(stop|length)$/);
  });

  it("streams a chat completion in OpenAI's chunk format", async () => {
    const messages = [{ role: "user" as const, content: "Tell me a story" }];
    const whole = await client.chat.completions.create({ model: "llama-tiny", messages, max_tokens: 12, temperature: 0 });
    const stream = await client.chat.completions.create({
      model: "llama-tiny", messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true },
    });
    let content = "";
    const chunks = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
      content += chunk.choices[0]?.delta.content ?? "";
    }
    expect(chunks[0].object).toBe("chat.completion.chunk");
    expect(chunks[0].choices[0].delta.role).toBe("assistant");
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    const finishes = chunks.filter((c) => c.choices[0]?.finish_reason);
    expect(finishes).toHaveLength(1);
    expect(finishes[0].choices[0].finish_reason).toBe(whole.choices[0].finish_reason);
    expect(content).toBe(whole.choices[0].message.content);
    expect(chunks.at(-1)?.choices).toEqual([]);
    expect(chunks.at(-1)?.usage).toEqual(whole.usage);
  });

  it("maps stop and response_format (a JSON Schema, through llama.cpp's grammar)", async () => {
    const r = await client.chat.completions.create({
      model: "llama-tiny", messages: [{ role: "user", content: "Say yes" }], max_tokens: 40, stop: ["STOP"],
      response_format: { type: "json_schema", json_schema: { name: "answer", schema: { type: "string", enum: ["yes STOP more"] } } },
    });
    expect(r.choices[0].message.content).toBe('"yes ');
    expect(r.choices[0].finish_reason).toBe("stop");
    const whole = await client.completions.create({
      model: "llama-tiny", prompt: "Answer:", max_tokens: 40,
      response_format: { type: "json_schema", json_schema: { name: "answer", schema: { type: "string", enum: ["yes STOP more"] } } },
    } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(whole.choices[0].text).toBe('"yes STOP more"');
  });

  it("returns log-probabilities when asked", async () => {
    const r = await client.chat.completions.create({
      model: "llama-tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3,
    });
    const content = r.choices[0].logprobs?.content ?? [];
    expect(content).toHaveLength(r.usage!.completion_tokens);
    for (const entry of content) {
      expect(entry.logprob).toBeLessThanOrEqual(0);
      expect(entry.top_logprobs).toHaveLength(3);
      // Greedy: the chosen token is the most likely one.
      expect(entry.logprob).toBeCloseTo(entry.top_logprobs[0].logprob, 5);
    }
  });

  it("embeds texts with the embedding model", async () => {
    const bert = await loadModel(fixturePath("bert-tiny-f32"));
    try {
      const texts = ["The cat sat on the mat.", "A completely different sentence"];
      // The client asks for base64 by default and decodes it.
      const r = await client.embeddings.create({ model: "bert", input: texts });
      const ctx = await bert.createEmbeddingContext({ threads: 1 });
      const expected = await ctx.embed(texts, { normalize: true });
      expect(r.data).toHaveLength(2);
      expect(r.model).toMatch(/^bert-tiny-f32/);
      for (const [i, item] of r.data.entries()) {
        expect(item.index).toBe(i);
        expect(item.embedding).toHaveLength(bert.info.embeddingSize);
        item.embedding.forEach((v, k) => expect(v).toBeCloseTo(expected[i][k], 5));
        expect(Math.hypot(...item.embedding)).toBeCloseTo(1, 4);
      }
      const tokens = texts.reduce((n, t) => n + bert.tokenize(t).length, 0);
      expect(r.usage).toEqual({ prompt_tokens: tokens, total_tokens: tokens });
      const floats = await fetch(`${server.url}/v1/embeddings`, { method: "POST", headers: auth, body: JSON.stringify({ input: texts[0], encoding_format: "float" }) });
      const body = (await floats.json()) as { data: Array<{ embedding: number[] }> };
      expect(body.data[0].embedding.length).toBe(bert.info.embeddingSize);
      body.data[0].embedding.forEach((v, k) => expect(v).toBeCloseTo(r.data[0].embedding[k], 5));
    } finally {
      bert.dispose();
    }
  });

  it("embeds with the served model (mean pooling) when no embedding model is given", async () => {
    const plain = await startServer({ model, port: 0, parallel: 1, contextSize: 64, threads: 1 });
    try {
      const r = await fetch(`${plain.url}/v1/embeddings`, { method: "POST", body: JSON.stringify({ input: ["Hello world"] }) });
      expect(r.status).toBe(200);
      const body = (await r.json()) as { model: string; data: Array<{ embedding: number[] }> };
      expect(body.model).toMatch(/^llama-tiny-f32/);
      expect(body.data[0].embedding).toHaveLength(model.info.embeddingSize);
      expect(Math.hypot(...body.data[0].embedding)).toBeCloseTo(1, 4);
      const ctx = await model.createEmbeddingContext({ pooling: "mean", threads: 1 });
      const expected = await ctx.embed("Hello world", { normalize: true });
      ctx.dispose();
      body.data[0].embedding.forEach((v, k) => expect(v).toBeCloseTo(expected[k], 5));
    } finally {
      await plain.close();
    }
    expect(model.disposed).toBe(false); // a Model passed in stays the caller's
  });

  it("serves 16 concurrent streaming chats, batched, each complete and well-formed", async () => {
    const started = Date.now();
    const responses = await Promise.all(
      Array.from({ length: 16 }, async (_, i) => {
        const response = await fetch(`${server.url}/v1/chat/completions`, {
          method: "POST",
          headers: auth,
          body: JSON.stringify({
            model: "llama-tiny", stream: true, max_tokens: 12, temperature: 0.8, seed: i,
            messages: [{ role: "user", content: `Request number ${i}` }],
          }),
          signal: AbortSignal.timeout(60_000),
        });
        expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
        return readSse(response);
      }),
    );
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(responses).toHaveLength(16);
    const ids = new Set<unknown>();
    for (const r of responses) {
      expect(r.status).toBe(200);
      expect(r.done).toBe(true);
      expect(r.afterDone).toBe("");
      expect(r.events.length).toBeGreaterThanOrEqual(2);
      const choices = r.events.map((e) => (e.choices as Array<{ finish_reason: string | null; delta: { content?: string } }>)[0]);
      expect(choices.slice(0, -1).every((c) => c.finish_reason === null)).toBe(true);
      expect(choices.at(-1)?.finish_reason).toMatch(/^(stop|length)$/);
      expect(r.events.every((e) => e.object === "chat.completion.chunk" && e.id === r.events[0].id)).toBe(true);
      ids.add(r.events[0].id);
    }
    expect(ids.size).toBe(16);
    const health = (await (await fetch(`${server.url}/health`)).json()) as { sessions: { busy: number; queued: number }; decode: { maxSequencesPerBatch: number } };
    expect(health.sessions).toMatchObject({ busy: 0, queued: 0 });
    // The context's decode thread batched several requests' tokens in one llama_decode.
    expect(health.decode.maxSequencesPerBatch).toBeGreaterThan(1);
  });

  it("answers bad requests with OpenAI-style JSON errors and stays up", async () => {
    const post = (path: string, body: string, headers: Record<string, string> = auth) => fetch(`${server.url}${path}`, { method: "POST", headers, body });
    const malformed = await post("/v1/chat/completions", '{"model": "x", "messages": [');
    expect(malformed.status).toBe(400);
    expect(malformed.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await malformed.json()).toEqual({ error: { message: expect.stringContaining("not valid JSON"), type: "invalid_request_error", param: null, code: "invalid_json" } });
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ["/v1/chat/completions", { messages: [] }, "messages"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "x" }], temperature: "hot" }, "temperature"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "x" }], n: 2 }, "n"],
      ["/v1/chat/completions", { messages: [{ role: "wizard", content: "x" }] }, "messages[0].role"],
      ["/v1/completions", { prompt: 42 }, "prompt"],
      ["/v1/completions", { prompt: "x", max_tokens: -1 }, "max_tokens"],
      ["/v1/embeddings", { input: [] }, "input"],
    ];
    for (const [path, body, param] of cases) {
      const r = await post(path, JSON.stringify(body));
      expect([path, param, r.status]).toEqual([path, param, 400]);
      expect(await r.json()).toMatchObject({ error: { type: "invalid_request_error", param, message: expect.any(String) } });
    }
    // The model's template refuses roles that do not alternate: the template's message, as a 400.
    const template = await post("/v1/chat/completions", JSON.stringify({ messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }] }));
    expect(template.status).toBe(400);
    expect(((await template.json()) as { error: { message: string } }).error.message).toContain("Conversation roles must alternate");
    const long = await post("/v1/completions", JSON.stringify({ prompt: "word ".repeat(400) }));
    expect(long.status).toBe(400);
    expect(await long.json()).toMatchObject({ error: { code: "context_length_exceeded" } });
    const huge = await post("/v1/completions", JSON.stringify({ prompt: "x".repeat(1_100_000) }));
    expect(huge.status).toBe(413);
    expect(await huge.json()).toMatchObject({ error: { code: "request_too_large" } });
    expect((await fetch(`${server.url}/v1/nothing`, { headers: auth })).status).toBe(404);
    const wrongMethod = await fetch(`${server.url}/v1/chat/completions`, { headers: auth });
    expect([wrongMethod.status, wrongMethod.headers.get("allow")]).toEqual([405, "POST"]);
    // The openai client sees the errors as typed exceptions.
    await expect(client.chat.completions.create({ model: "llama-tiny", messages: [] })).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });

  it("refuses a wrong or missing API key with 401", async () => {
    const wrong = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "wrong", maxRetries: 0 });
    const error = await wrong.models.list().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((error as InstanceType<typeof OpenAI.AuthenticationError>).status).toBe(401);
    const none = await fetch(`${server.url}/v1/models`);
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ error: { type: "authentication_error", code: "invalid_api_key" } });
    const chat = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", headers: { Authorization: "Bearer nope" }, body: "{}" });
    expect(chat.status).toBe(401);
  });

  it("frees the session of a client that goes away mid-stream", async () => {
    const controller = new AbortController();
    const response = await fetch(`${server.url}/v1/completions`, {
      method: "POST", headers: auth, signal: controller.signal,
      body: JSON.stringify({ prompt: "Go", max_tokens: 200, stream: true, temperature: 1, seed: 3 }),
    });
    const reader = response.body!.getReader();
    await reader.read();
    controller.abort();
    for (let i = 0; i < 100; i++) {
      const health = (await (await fetch(`${server.url}/health`)).json()) as { sessions: { busy: number } };
      if (health.sessions.busy === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const health = (await (await fetch(`${server.url}/health`)).json()) as { sessions: { busy: number } };
    expect(health.sessions.busy).toBe(0);
    const after = await client.completions.create({ model: "llama-tiny", prompt: "Still up?", max_tokens: 3, temperature: 0 });
    expect(after.choices[0].text.length).toBeGreaterThanOrEqual(0);
    expect(after.usage?.completion_tokens).toBeGreaterThan(0);
  });
});

describe("the server's session pool", () => {
  it("hands out free sessions by shared prefix, queues when all are busy, and honours aborts", async () => {
    using model = await loadModel(fixturePath("llama-tiny-f32"));
    const context = await model.createContext({ contextSize: 64, sequences: 2, threads: 1 });
    const pool = new SessionPool(context, 2);
    const a = await pool.acquire([1, 2, 3]);
    const b = await pool.acquire([1, 2, 3]);
    await a.prompt([1, 500, 600]);
    await b.prompt([1, 700, 800]);
    expect([pool.busy, pool.queued]).toEqual([2, 0]);
    const order: string[] = [];
    const third = pool.acquire([1, 700, 800, 900]).then((s) => (order.push("third"), s));
    const controller = new AbortController();
    const fourth = pool.acquire([1], controller.signal);
    const fifth = pool.acquire([1]).then((s) => (order.push("fifth"), s));
    expect(pool.queued).toBe(3);
    controller.abort();
    await expect(fourth).rejects.toMatchObject({ code: "ERR_ABORTED" });
    pool.release(a);
    expect(await third).toBe(a); // first in line gets the first session given back
    pool.release(b);
    expect(await fifth).toBe(b);
    expect(order).toEqual(["third", "fifth"]);
    pool.release(a);
    pool.release(b);
    // With both free, a prompt goes to the session whose history it shares most with.
    expect(await pool.acquire([1, 700, 800, 5])).toBe(b);
    expect(await pool.acquire([1, 500])).toBe(a);
    const waiting = pool.acquire([1]);
    pool.close();
    await expect(waiting).rejects.toMatchObject({ code: "ERR_ABORTED" });
  });
});

describe("llama-napi serve (CLI)", () => {
  const main = path.join(repoRoot, "dist", "cli", "main.js");

  it("serves a model until Ctrl-C", async () => {
    const child = spawn(process.execPath, [main, "serve", "-m", fixturePath("llama-tiny-f32"), "--port", "0", "-np", "2", "-c", "128", "-t", "1", "--api-key", "k1", "--alias", "tiny"], {
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
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "k1", maxRetries: 0 });
      const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 4 });
      expect(r.model).toBe("tiny");
      expect(r.usage?.completion_tokens).toBeGreaterThan(0);
      expect((await fetch(`${url}/v1/models`)).status).toBe(401);
    } finally {
      child.kill("SIGINT");
    }
    expect(await exited).toBe(0);
    expect(stderr).toMatch(/POST \/v1\/chat\/completions 200 \d+ms/);
  }, 180_000);
});
