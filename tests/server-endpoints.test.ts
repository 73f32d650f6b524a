/**
 * The server's operator endpoints (llama-server's names and shapes): /metrics, /slots, /props,
 * /tokenize, /detokenize, /apply-template, /infill, and the `timings` of completions.
 *
 * The main server serves a GPT-2 fixture (the real GPT-2 vocabulary) with three fill-in-the-middle
 * control tokens appended to its vocabulary and named in its metadata
 * (tokenizer.ggml.fim_pre_token_id, ...), so llama.cpp reports them as FIM tokens. Oracles:
 * js-tiktoken's gpt2 encoding for /tokenize, renderChat for /apply-template, the library's own
 * greedy continuation of an independently built token layout for /infill, and the responses'
 * usage for the counters of /metrics.
 */
import fs from "node:fs";
import path from "node:path";

import { Tiktoken } from "js-tiktoken/lite";
import gpt2Ranks from "js-tiktoken/ranks/gpt2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { GPT2_PRESETS, writeRandomGpt2 } from "../src/fixtures/gpt2.js";
import { ggufValue, readGguf, writeGguf, type GgufMetadata } from "../src/gguf/index.js";
import { ChatTemplate, loadModel, renderChat, startServer, type Context, type Model, type RunningServer } from "../src/index.js";
import { fixtureDir, fixturePath, repoRoot } from "./helpers/fixtures.js";

const KEY = "ops-key-42";
const GPT2_VOCAB = path.join(repoRoot, "vendor/llama.cpp/models/ggml-vocab-gpt-2.gguf");
const FIM_TEXTS = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"] as const;

/** The GPT-2 vocabulary with FIM control tokens appended (ids 50257..50259) and named in the metadata. */
async function fimModelPath(): Promise<string> {
  const file = path.join(fixtureDir, "gpt2-fim-ctx1024-v1.gguf");
  if (fs.existsSync(file)) return file;
  fs.mkdirSync(fixtureDir, { recursive: true });
  const vocab = await readGguf(GPT2_VOCAB);
  const tokens = vocab.metadata["tokenizer.ggml.tokens"];
  const types = vocab.metadata["tokenizer.ggml.token_type"];
  if (tokens?.type !== "array" || types?.type !== "array") throw new Error("the GPT-2 vocabulary has no token arrays");
  const n = tokens.value.length;
  const metadata: GgufMetadata = Object.fromEntries(Object.entries(vocab.metadata).filter(([k]) => k.startsWith("tokenizer.")));
  metadata["tokenizer.ggml.tokens"] = ggufValue.array("string", [...(tokens.value as string[]), ...FIM_TEXTS]);
  metadata["tokenizer.ggml.token_type"] = ggufValue.array("int32", [...(types.value as number[]), 3, 3, 3]); // CONTROL
  metadata["tokenizer.ggml.fim_pre_token_id"] = ggufValue.uint32(n);
  metadata["tokenizer.ggml.fim_suf_token_id"] = ggufValue.uint32(n + 1);
  metadata["tokenizer.ggml.fim_mid_token_id"] = ggufValue.uint32(n + 2);
  const vocabFile = `${file}.${process.pid}.vocab.gguf`;
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await writeGguf(vocabFile, { metadata, tensors: [] });
    await writeRandomGpt2(tmp, { ...GPT2_PRESETS.tiny, nCtx: 1024, seed: 777, type: "f32", vocabPath: vocabFile });
    fs.renameSync(tmp, file);
  } finally {
    fs.rmSync(vocabFile, { force: true });
    fs.rmSync(tmp, { force: true });
  }
  return file;
}

interface Sample {
  labels: string;
  value: number;
}

/**
 * A strict reader of Prometheus's text format (0.0.4): every line is `# HELP name text`,
 * `# TYPE name counter|gauge|...` or a sample `name{labels} value`; every sample's metric has
 * exactly one HELP and one TYPE, given before its samples; names match Prometheus's grammar.
 */
function parsePrometheus(text: string): Map<string, { help: string; type: string; samples: Sample[] }> {
  const metrics = new Map<string, { help: string; type: string; samples: Sample[] }>();
  const name = "[a-zA-Z_:][a-zA-Z0-9_:]*";
  const value = "[-+]?(?:[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?|NaN|Inf)";
  const labels = `\\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*")*,?)?\\}`;
  const sampleRe = new RegExp(`^(${name})(${labels})? (${value})(?: [0-9]+)?$`);
  const helpRe = new RegExp(`^# HELP (${name}) (.*)$`);
  const typeRe = new RegExp(`^# TYPE (${name}) (counter|gauge|histogram|summary|untyped)$`);
  expect(text.endsWith("\n"), "the text ends with a newline").toBe(true);
  for (const line of text.slice(0, -1).split("\n")) {
    let m: RegExpExecArray | null;
    if ((m = helpRe.exec(line))) {
      expect(metrics.get(m[1])?.help, `second HELP for ${m[1]}`).toBeUndefined();
      metrics.set(m[1], { help: m[2], type: metrics.get(m[1])?.type ?? "", samples: [] });
    } else if ((m = typeRe.exec(line))) {
      const entry = metrics.get(m[1]);
      expect(entry, `TYPE before HELP for ${m[1]}`).toBeDefined();
      expect(entry!.type, `second TYPE for ${m[1]}`).toBe("");
      entry!.type = m[2];
    } else if ((m = sampleRe.exec(line))) {
      const entry = metrics.get(m[1]);
      expect(entry?.help, `sample of ${m[1]} without HELP`).toBeTruthy();
      expect(entry?.type, `sample of ${m[1]} without TYPE`).toBeTruthy();
      entry!.samples.push({ labels: m[2] ?? "", value: Number(m[3].replace("Inf", "Infinity")) });
    } else {
      throw new Error(`not a line of Prometheus's text format: ${JSON.stringify(line)}`);
    }
  }
  for (const [n, entry] of metrics) {
    expect(entry.type, `${n} has a TYPE`).not.toBe("");
    expect(entry.samples.length, `${n} has samples`).toBeGreaterThan(0);
  }
  return metrics;
}

interface CompletionResponse {
  choices: Array<{ text?: string; message?: { content: string }; finish_reason: string }>;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  timings: Record<string, number>;
}

describe("operator endpoints", () => {
  let model: Model;
  let reference: Context;
  let server: RunningServer;
  let oracle: Tiktoken;
  const auth = { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" };

  beforeAll(async () => {
    model = await loadModel(await fimModelPath());
    reference = await model.createContext({ contextSize: 512, threads: 1 });
    // 2 sequences of 512 tokens (contextSize is the whole context: llama-server's -c) and
    // batches of 64 tokens, which /infill's prompt layout depends on.
    server = await startServer({ model, port: 0, parallel: 2, contextSize: 1024, batchSize: 64, threads: 2, apiKey: KEY, metrics: true, slots: true, modelName: "gpt2-fim" });
    oracle = new Tiktoken(gpt2Ranks);
  });
  afterAll(async () => {
    await server?.close();
    model?.dispose();
  });

  const get = (p: string, headers: Record<string, string> = auth) => fetch(`${server.url}${p}`, { headers });
  const post = (p: string, body: unknown, headers: Record<string, string> = auth) =>
    fetch(`${server.url}${p}`, { method: "POST", headers, body: JSON.stringify(body) });
  async function json<T = Record<string, unknown>>(r: Response | Promise<Response>, status = 200): Promise<T> {
    const response = await r;
    const body = (await response.json()) as T;
    expect(response.status, JSON.stringify(body)).toBe(status);
    return body;
  }
  async function badRequest(r: Promise<Response>, param: string, message: RegExp): Promise<void> {
    const body = await json<{ error: { param: string; message: string; type: string } }>(r, 400);
    expect(body.error.type).toBe("invalid_request_error");
    expect(body.error.param).toBe(param);
    expect(body.error.message).toMatch(message);
  }
  async function scrape(): Promise<Map<string, { help: string; type: string; samples: Sample[] }>> {
    const r = await get("/metrics");
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/plain; version=0.0.4");
    return parsePrometheus(await r.text());
  }
  const value = (m: Map<string, { samples: Sample[] }>, name: string): number => {
    const entry = m.get(name);
    expect(entry, `metric ${name}`).toBeDefined();
    return entry!.samples[0].value;
  };
  async function greedy(tokens: ArrayLike<number>, maxTokens: number): Promise<string> {
    using session = reference.createSession();
    await session.prompt(tokens);
    return (await session.generate({ maxTokens, temperature: 0 }).collect()).text;
  }

  it("the fixture's vocabulary has the FIM tokens", () => {
    const n = 50257;
    expect(model.specialTokens).toMatchObject({ fimPre: n, fimSuf: n + 1, fimMid: n + 2 });
    expect([n, n + 1, n + 2].map((t) => model.tokenToPiece(t, { special: true }))).toEqual([...FIM_TEXTS]);
  });

  it("asks for the API key on every operator endpoint", async () => {
    const routes: Array<[string, string]> = [["GET", "/metrics"], ["GET", "/slots"], ["GET", "/props"], ["POST", "/tokenize"], ["POST", "/detokenize"], ["POST", "/apply-template"], ["POST", "/infill"]];
    for (const [method, route] of routes) {
      const r = await fetch(`${server.url}${route}`, { method, ...(method === "POST" ? { body: "{}" } : {}) });
      expect(r.status, route).toBe(401);
      expect(((await r.json()) as { error: { type: string } }).error.type).toBe("authentication_error");
      const wrong = await fetch(`${server.url}${route}`, { method: method === "GET" ? "POST" : "GET", headers: auth, ...(method === "GET" ? { body: "{}" } : {}) });
      expect(wrong.status, route).toBe(405);
    }
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });

  it("/tokenize gives what model.tokenize and js-tiktoken's gpt2 encoding give", async () => {
    const texts = ["Hello world", " The quick brown fox jumps over the lazy dog.", "it's 2024: naïve café, 東京 🦙🦙!", "  spaces\n\nand\ttabs ", "x<|endoftext|>y", ""];
    for (const content of texts) {
      const { tokens } = await json<{ tokens: number[] }>(post("/tokenize", { content }));
      expect(tokens, content).toEqual([...model.tokenize(content, { addSpecial: false, parseSpecial: true })]);
      expect(tokens, content).toEqual(oracle.encode(content, "all"));
      // add_special: GPT-2 adds no BOS; parse_special: false reads "<|endoftext|>" as text.
      expect((await json<{ tokens: number[] }>(post("/tokenize", { content, add_special: true }))).tokens).toEqual([...model.tokenize(content, { addSpecial: true, parseSpecial: true })]);
      const plain = await json<{ tokens: number[] }>(post("/tokenize", { content, parse_special: false }));
      expect(plain.tokens).toEqual(oracle.encode(content, [], []));
    }
    // FIM tokens are special tokens: their text becomes them.
    expect((await json<{ tokens: number[] }>(post("/tokenize", { content: "a<|fim_middle|>" }))).tokens).toEqual([...oracle.encode("a"), 50259]);
    // Mixed content: strings and token ids, as llama-server's tokenize_mixed.
    expect((await json<{ tokens: number[] }>(post("/tokenize", { content: ["Hello", 11, " world"] }))).tokens).toEqual([...oracle.encode("Hello"), 11, ...oracle.encode(" world")]);
  });

  it("/tokenize with_pieces gives each token's text, or its bytes where they are not valid UTF-8", async () => {
    const content = "Hi 🦙 naïve";
    const { tokens } = await json<{ tokens: Array<{ id: number; piece: string | number[] }> }>(post("/tokenize", { content, with_pieces: true }));
    expect(tokens.map((t) => t.id)).toEqual(oracle.encode(content));
    const bytes = Buffer.concat(tokens.map((t) => (typeof t.piece === "string" ? Buffer.from(t.piece, "utf8") : Buffer.from(t.piece))));
    expect(bytes.equals(Buffer.from(content, "utf8"))).toBe(true);
    for (const t of tokens) {
      const own = Buffer.from(model.tokenToBytes(t.id, { special: true }));
      if (typeof t.piece === "string") expect(Buffer.from(t.piece, "utf8").equals(own)).toBe(true);
      else expect(t.piece).toEqual([...own]);
    }
    // The llama's 4 UTF-8 bytes are split over byte-level tokens: some pieces are byte arrays.
    expect(tokens.some((t) => Array.isArray(t.piece))).toBe(true);
    expect(tokens.find((t) => t.piece === "Hi")).toBeDefined();
  });

  it("/tokenize and /detokenize answer a bad field with a 400 naming it", async () => {
    await badRequest(post("/tokenize", {}), "content", /content is required/);
    await badRequest(post("/tokenize", { content: 42 }), "content", /string or an array/);
    await badRequest(post("/tokenize", { content: ["a", 1.5] }), "content", /content/);
    await badRequest(post("/tokenize", { content: [model.info.vocabSize] }), "content", /token ids from 0/);
    await badRequest(post("/tokenize", { content: "a", with_pieces: "yes" }), "with_pieces", /boolean/);
    await badRequest(post("/tokenize", { content: "a", add_special: 1 }), "add_special", /boolean/);
    await badRequest(post("/detokenize", { tokens: "abc" }), "tokens", /array of token ids/);
    await badRequest(post("/detokenize", { tokens: [1, -1] }), "tokens", /-1/);
    await badRequest(post("/detokenize", { tokens: [model.info.vocabSize] }), "tokens", new RegExp(String(model.info.vocabSize)));
  });

  it("/detokenize gives back the text that /tokenize read", async () => {
    const texts = ["Hello world", "it's 2024: naïve café, 東京 🦙!", " leading and trailing ", "a<|endoftext|>b<|fim_prefix|>c", "line\nbreaks\r\n"];
    for (const text of texts) {
      const { tokens } = await json<{ tokens: number[] }>(post("/tokenize", { content: text }));
      const { content } = await json<{ content: string }>(post("/detokenize", { tokens }));
      expect(content).toBe(text);
    }
    expect(await json(post("/detokenize", { tokens: [] }))).toEqual({ content: "" });
    expect(await json(post("/detokenize", { tokens: oracle.encode("tiktoken's ids") }))).toEqual({ content: "tiktoken's ids" });
  });

  it("/apply-template renders what renderChat renders, with the generation prompt", async () => {
    const messages = [
      { role: "system", content: "You are terse." },
      { role: "user", content: "Hello" },
      { role: "assistant", content: "Hi." },
      { role: "user", content: [{ type: "text", text: "Parts" }, { type: "text", text: "joined" }] },
    ];
    const { prompt } = await json<{ prompt: string }>(post("/apply-template", { messages }));
    const expected = await renderChat(model, [...messages.slice(0, 3), { role: "user", content: "Parts\njoined" }] as Parameters<typeof renderChat>[1], { addGenerationPrompt: true });
    expect(prompt).toBe(expected);
    expect(prompt).toMatch(/<\|im_start\|>assistant\n$/); // no template in the model: ChatML
    await badRequest(post("/apply-template", { messages: [] }), "messages", /non-empty array/);
    await badRequest(post("/apply-template", { messages: [{ role: "wizard", content: "x" }] }), "messages[0].role", /one of/);
  });

  it("/props gives llama-server's global properties", async () => {
    const props = await json<Record<string, any>>(get("/props"));
    expect(props.total_slots).toBe(2);
    expect(props.model_path).toBe(model.path);
    expect(props.model_alias).toBe("gpt2-fim");
    expect(props.chat_template).toBe(new ChatTemplate(model).source);
    expect(props.build_info).toMatch(/^llama-napi \S+ \(llama\.cpp [0-9a-f]{7}\)$/);
    expect(props.modalities).toEqual({ vision: false, video: false, audio: false });
    expect(props.endpoint_metrics).toBe(true);
    expect(props.endpoint_slots).toBe(true);
    expect(props.eos_token).toBe("<|endoftext|>");
    const settings = props.default_generation_settings;
    expect(settings.n_ctx).toBe(512);
    expect(settings.params).toMatchObject({ n_predict: -1, temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05, repeat_penalty: 1, dry_sequence_breakers: ["\n", ":", '"', "*"], seed: 4294967295, stop: [] });
  });

  it("gives llama-server's timings in completions: prompt_n + cache_n is the prompt, predicted_n the reply", async () => {
    const prompt = "Timings are measured from the prompt to the last token";
    const promptTokens = model.tokenize(prompt, { addSpecial: true, parseSpecial: true }).length;
    const check = (r: CompletionResponse) => {
      const t = r.timings;
      expect(Object.keys(t).sort()).toEqual(["cache_n", "predicted_ms", "predicted_n", "predicted_per_second", "predicted_per_token_ms", "prompt_ms", "prompt_n", "prompt_per_second", "prompt_per_token_ms"]);
      for (const v of Object.values(t)) expect(Number.isFinite(v) && v >= 0).toBe(true);
      expect(t.prompt_n + t.cache_n).toBe(r.usage.prompt_tokens);
      expect(t.predicted_n).toBe(r.usage.completion_tokens);
      if (t.prompt_n > 0) expect(t.prompt_per_token_ms).toBeCloseTo(t.prompt_ms / t.prompt_n, 6);
      if (t.predicted_n > 1) expect(t.predicted_per_second).toBeCloseTo(((t.predicted_n - 1) / t.predicted_ms) * 1000, 3);
      return t;
    };
    const first = await json<CompletionResponse>(post("/v1/completions", { prompt, max_tokens: 6, temperature: 0 }));
    expect(first.usage.prompt_tokens).toBe(promptTokens);
    check(first);
    // The same prompt again: the session that holds it is chosen, its cache reused.
    const second = check(await json<CompletionResponse>(post("/v1/completions", { prompt, max_tokens: 6, temperature: 0 })));
    expect(second.cache_n).toBeGreaterThanOrEqual(promptTokens - 1);
    expect(second.prompt_n).toBeLessThanOrEqual(1);
    const chat = await json<CompletionResponse>(post("/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], max_tokens: 5, temperature: 0 }));
    check(chat);
  });

  it("puts the timings in the last streamed chunk", async () => {
    let completionTokens = -1;
    for (const includeUsage of [true, false]) {
      const r = await post("/v1/chat/completions", { messages: [{ role: "user", content: "Stream" }], max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: includeUsage } });
      const events = (await r.text()).split("\n\n").filter((b) => b !== "" && b !== "data: [DONE]").map((b) => JSON.parse(b.slice(6)) as Record<string, any>);
      const withTimings = events.filter((e) => e.timings !== undefined);
      expect(withTimings).toEqual([events.at(-1)]);
      const last = events.at(-1)!;
      if (includeUsage) {
        expect(last.usage).toBeDefined();
        expect(last.timings.predicted_n).toBe(last.usage.completion_tokens);
        expect(last.timings.prompt_n + last.timings.cache_n).toBe(last.usage.prompt_tokens);
        completionTokens = last.usage.completion_tokens;
      } else {
        // The chunk with the finish reason; the same greedy reply as with include_usage.
        expect(last.choices[0].finish_reason).not.toBeNull();
        expect(last.timings.predicted_n).toBe(completionTokens);
      }
    }
  });

  it("/metrics is Prometheus text whose counters grow by exactly the tokens of a request", async () => {
    const before = await scrape();
    for (const name of ["prompt_tokens_total", "prompt_tokens_cached_total", "prompt_seconds_total", "tokens_predicted_total", "tokens_predicted_seconds_total", "n_decode_total", "n_tokens_max"]) {
      expect(before.get(`llamacpp:${name}`)?.type, name).toBe("counter");
    }
    for (const name of ["prompt_tokens_seconds", "predicted_tokens_seconds", "requests_processing", "requests_deferred", "kv_cache_tokens", "kv_cache_usage_ratio"]) {
      expect(before.get(`llamacpp:${name}`)?.type, name).toBe("gauge");
    }
    expect(value(before, "llamacpp:requests_processing")).toBe(0);
    expect(value(before, "llamacpp:requests_deferred")).toBe(0);
    const r = await json<CompletionResponse>(post("/v1/completions", { prompt: "A prompt that no session holds yet, about metrics", max_tokens: 9, temperature: 0 }));
    const after = await scrape();
    const delta = (name: string) => value(after, `llamacpp:${name}`) - value(before, `llamacpp:${name}`);
    expect(delta("prompt_tokens_total")).toBe(r.timings.prompt_n);
    expect(delta("prompt_tokens_total") + delta("prompt_tokens_cached_total")).toBe(r.usage.prompt_tokens);
    expect(delta("tokens_predicted_total")).toBe(r.usage.completion_tokens);
    expect(delta("n_decode_total")).toBeGreaterThanOrEqual(r.usage.completion_tokens - 1);
    expect(delta("prompt_seconds_total")).toBeCloseTo(r.timings.prompt_ms / 1000, 6);
    expect(delta("tokens_predicted_seconds_total")).toBeCloseTo(r.timings.predicted_ms / 1000, 6);
    expect(value(after, "llamacpp:n_tokens_max")).toBeGreaterThanOrEqual(r.usage.total_tokens);
    expect(value(after, "llamacpp:predicted_tokens_seconds")).toBeGreaterThan(0);
    const kv = value(after, "llamacpp:kv_cache_tokens");
    expect(kv).toBeGreaterThanOrEqual(r.usage.prompt_tokens);
    expect(value(after, "llamacpp:kv_cache_usage_ratio")).toBeCloseTo(kv / 1024, 9);
    // The rates are averaged since the previous scrape: nothing ran since the last one.
    expect(value(await scrape(), "llamacpp:predicted_tokens_seconds")).toBe(0);
  });

  it("/slots shows a busy sequence during a streamed request and idle ones after", async () => {
    const idle = await json<Array<Record<string, any>>>(get("/slots"));
    expect(idle.map((s) => s.id)).toEqual([0, 1]);
    for (const s of idle) expect(s).toMatchObject({ n_ctx: 512, is_processing: false, speculative: false });
    const prompt = "Stream a long reply so that the slot stays busy";
    const promptTokens = model.tokenize(prompt, { addSpecial: true, parseSpecial: true }).length;
    const response = await post("/v1/completions", { prompt, max_tokens: 400, temperature: 0, stream: true }, auth);
    const reader = response.body!.getReader();
    try {
      await reader.read(); // the first token is out
      const slots = await json<Array<Record<string, any>>>(get("/slots"));
      const busy = slots.filter((s) => s.is_processing);
      expect(busy).toHaveLength(1);
      expect(busy[0].n_prompt_tokens_processed + busy[0].n_prompt_tokens_cache).toBe(promptTokens);
      expect(busy[0].next_token[0].has_next_token).toBe(true);
      expect(busy[0].next_token[0].n_decoded).toBeGreaterThanOrEqual(1);
      expect(busy[0].n_prompt_tokens).toBe(promptTokens + busy[0].next_token[0].n_decoded);
      const metrics = await scrape();
      expect(value(metrics, "llamacpp:requests_processing")).toBe(1);
      // One of the two sequences is free.
      expect((await get("/slots?fail_on_no_slot=1")).status).toBe(200);
    } finally {
      await reader.cancel(); // closes the connection: the server stops the generation
    }
    // The cancelled request gives its session back.
    let after: Array<Record<string, any>> = [];
    for (let i = 0; i < 200; i++) {
      after = await json<Array<Record<string, any>>>(get("/slots"));
      if (after.every((s) => !s.is_processing)) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(after.every((s) => !s.is_processing)).toBe(true);
    const used = after.find((s) => s.next_token?.[0].n_decoded > 0 && s.n_prompt_tokens >= promptTokens);
    expect(used).toBeDefined();
    expect(used!.next_token[0].has_next_token).toBe(false);
  });

  it("/infill lays out FIM_PRE prefix prompt FIM_SUF suffix FIM_MID as llama-server, cut to the batch", async () => {
    const [pre, suf, mid] = [50257, 50258, 50259];
    const tok = (s: string) => oracle.encode(s, [], []);
    const cases = [
      { input_prefix: "def add(a, b):\n    ", input_suffix: "\n    return c\n", prompt: "" },
      { input_prefix: "function f() {", input_suffix: "}", prompt: " let" },
      // A prefix longer than 3/4 of a batch (48 tokens) keeps its end; the suffix keeps its start
      // within 64/4 - 2 - the prompt's tokens.
      { input_prefix: "one two three four five six seven eight nine ten ".repeat(8), input_suffix: " alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".repeat(3), prompt: "" },
      // Extra context: without FIM_REP/FIM_SEP tokens, each chunk comes after a snippet separator.
      { input_prefix: "x = ", input_suffix: "\n", prompt: "", input_extra: [{ filename: "a.py", text: "y = 1\n" }, { text: "z = 2\n" }] },
    ];
    for (const c of cases) {
      const prefix = tok(c.input_prefix);
      const suffix = tok(c.input_suffix);
      const promptTokens = tok(c.prompt);
      const prefixKept = prefix.slice(prefix.length - Math.min(prefix.length, 48));
      const suffixKept = suffix.slice(0, Math.max(0, Math.min(suffix.length, 16 - 2 - promptTokens.length)));
      const extra = (c.input_extra ?? []).flatMap((e) => [...tok("\n\n--- snippet ---\n\n"), ...tok(e.text)]);
      const expected = [...extra, pre, ...prefixKept, ...promptTokens, suf, ...suffixKept, mid];
      const r = await json<CompletionResponse>(post("/infill", { ...c, max_tokens: 8, temperature: 0 }));
      expect(r.usage.prompt_tokens).toBe(expected.length);
      expect(r.timings.prompt_n + r.timings.cache_n).toBe(expected.length);
      expect(r.choices[0].text).toBe(await greedy(expected, 8));
    }
    // The layout matters: the reply differs from the continuation of another order (suffix first).
    const c = cases[0];
    const r = await json<CompletionResponse>(post("/infill", { ...c, max_tokens: 8, temperature: 0 }));
    expect(r.choices[0].text).not.toBe(await greedy([suf, ...tok(c.input_suffix), pre, ...tok(c.input_prefix), mid], 8));
  });

  it("/infill answers a bad field with a 400 naming it", async () => {
    await badRequest(post("/infill", { input_suffix: "" }), "input_prefix", /required/);
    await badRequest(post("/infill", { input_prefix: "" }), "input_suffix", /required/);
    await badRequest(post("/infill", { input_prefix: "", input_suffix: "", prompt: [1, 2] }), "prompt", /string/);
    await badRequest(post("/infill", { input_prefix: "", input_suffix: "", input_extra: "x" }), "input_extra", /array/);
    await badRequest(post("/infill", { input_prefix: "", input_suffix: "", input_extra: [{ filename: "a" }] }), "input_extra[0].text", /text/);
    await badRequest(post("/infill", { input_prefix: "", input_suffix: "", temperature: "hot" }), "temperature", /temperature/);
  });

  describe("a server without the opt-in endpoints, on a model without FIM tokens", () => {
    let llama: Model;
    let plain: RunningServer;
    beforeAll(async () => {
      llama = await loadModel(fixturePath("llama-tiny-f32"));
      plain = await startServer({ model: llama, port: 0, parallel: 1, contextSize: 128, threads: 1 });
    });
    afterAll(async () => {
      await plain?.close();
      llama?.dispose();
    });

    it("answers /metrics and /slots with llama-server's 501", async () => {
      for (const route of ["/metrics", "/slots"]) {
        const body = await json<{ error: { type: string; message: string } }>(fetch(`${plain.url}${route}`), 501);
        expect(body.error.type).toBe("not_supported_error");
        expect(body.error.message).toContain(`\`${route.slice(1)}: true\``);
      }
      const props = await json<Record<string, unknown>>(fetch(`${plain.url}/props`));
      expect(props).toMatchObject({ endpoint_metrics: false, endpoint_slots: false, total_slots: 1 });
    });

    it("refuses /infill with a 400 that names the missing FIM tokens", async () => {
      expect([llama.specialTokens.fimPre, llama.specialTokens.fimSuf, llama.specialTokens.fimMid]).toEqual([null, null, null]);
      const r = await fetch(`${plain.url}/infill`, { method: "POST", body: JSON.stringify({ input_prefix: "a", input_suffix: "b" }) });
      const body = (await r.json()) as { error: { message: string; code: string } };
      expect(r.status).toBe(400);
      expect(body.error.message).toMatch(/no fill-in-the-middle tokens \(fim_pre\/fim_suf\/fim_mid\): fim_pre, fim_suf, fim_mid missing/);
    });

    it("tokenizes with the SPM vocabulary: BOS on request, byte pieces for byte-fallback tokens", async () => {
      const text = "Hello 🦙";
      const r = (await (await fetch(`${plain.url}/tokenize`, { method: "POST", body: JSON.stringify({ content: text, add_special: true, with_pieces: true }) })).json()) as { tokens: Array<{ id: number; piece: string | number[] }> };
      expect(r.tokens.map((t) => t.id)).toEqual([...llama.tokenize(text, { addSpecial: true, parseSpecial: true })]);
      expect(r.tokens[0].id).toBe(llama.specialTokens.bos);
      expect(r.tokens.some((t) => Array.isArray(t.piece))).toBe(true);
      const back = (await (await fetch(`${plain.url}/detokenize`, { method: "POST", body: JSON.stringify({ tokens: r.tokens.slice(1).map((t) => t.id) }) })).json()) as { content: string };
      // The pieces as llama-server joins them: SPM's word-start space included.
      expect(back.content).toBe(Buffer.concat(r.tokens.slice(1).map((t) => Buffer.from(llama.tokenToBytes(t.id, { special: true })))).toString("utf8"));
      expect(back.content.trimStart()).toBe(text);
    });
  });
});
