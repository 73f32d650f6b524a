/**
 * Images and audio in /v1/chat/completions (src/server/media.ts), driven by the `openai` npm client
 * as the oracle of OpenAI's wire format (`image_url` parts with data URIs, `input_audio` parts),
 * on random-weight projectors from src/fixtures/mtmd.ts paired with a random Llama text model.
 *
 * Independent checks: the server's greedy reply is the library's for the same prompt (the rendered
 * conversation with the image, evaluated by a session of its own); a conversation that goes on
 * reuses the image from the cache (`timings.cache_n`); bad parts are 400s whose `param` names the
 * part; image URLs are fetched only when allowed, from a local HTTP server.
 */
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";

import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LLAMA2_CHAT_TEMPLATE, writeRandomLlama } from "../src/fixtures/llama.js";
import { encodePng, encodeWav, testImagePixels, testToneSamples, visionTokenCount, writeAudioProjector, writeVisionProjector } from "../src/fixtures/mtmd.js";
import { loadModel, renderChat, startServer, type Model, type RunningServer } from "../src/index.js";
import { MEDIA_MARKER } from "../src/media.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-media-server-"));
const TEXT_EMBD = 64;
const VISION = { textEmbd: TEXT_EMBD, seed: 52 };
const files = { text: path.join(tmp, "text.gguf"), vision: path.join(tmp, "vision.gguf"), audio: path.join(tmp, "audio.gguf") };
const png = (seed: number, w = 64, h = 48) => encodePng(w, h, testImagePixels(w, h, seed));
const dataUri = (bytes: Uint8Array, mime = "image/png") => `data:${mime};base64,${Buffer.from(bytes).toString("base64")}`;

type Params = OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming;
type Part = OpenAI.Chat.Completions.ChatCompletionContentPart;

let model: Model;
let server: RunningServer;
let client: OpenAI;

beforeAll(async () => {
  await writeRandomLlama(files.text, { nEmbd: TEXT_EMBD, nHead: 4, nHeadKv: 2, nLayer: 2, nCtx: 2048, nFf: 192, seed: 51, chatTemplate: LLAMA2_CHAT_TEMPLATE });
  await writeVisionProjector(files.vision, VISION);
  await writeAudioProjector(files.audio, { textEmbd: TEXT_EMBD, seed: 53 });
  server = await startServer({ model: files.text, projector: files.vision, port: 0, parallel: 2, contextSize: 1024, threads: 2 });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "none", maxRetries: 0 });
  model = await loadModel(files.text, { projector: files.vision });
}, 120_000);

afterAll(async () => {
  await server?.close();
  model?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The 400 a request gets: its status, param and message. */
async function refusal(c: OpenAI, body: Params): Promise<{ status: number; param: string | null | undefined; message: string }> {
  try {
    await c.chat.completions.create(body);
  } catch (err) {
    if (err instanceof OpenAI.APIError) return { status: err.status ?? 0, param: err.param, message: err.message };
    throw err;
  }
  throw new Error("the request succeeded");
}

const ask = (parts: Part[], extra: Partial<Params> = {}): Params => ({ model: "m", messages: [{ role: "user", content: parts }], max_tokens: 4, temperature: 0, ...extra });

describe("images through /v1/chat/completions", () => {
  it("reports vision in /props", async () => {
    const props = (await (await fetch(`${server.url}/props`)).json()) as { modalities: Record<string, boolean> };
    expect(props.modalities).toEqual({ vision: true, video: false, audio: false });
  });

  it("answers a data-URI image as the library does, streamed and not, and reuses it on the next turn", { timeout: 120_000 }, async () => {
    const image = png(1);
    const parts: Part[] = [
      { type: "text", text: "What is in" },
      { type: "image_url", image_url: { url: dataUri(image) } },
      { type: "text", text: "this picture?" },
    ];
    // The library's greedy reply to the same conversation.
    const rendered = await renderChat(model, [{ role: "user", content: [{ type: "text", text: "What is in" }, { type: "image", data: image }, { type: "text", text: "this picture?" }] }]);
    expect(rendered).toContain(`What is in${MEDIA_MARKER}this picture?`);
    const context = await model.createContext({ contextSize: 512, threads: 2 });
    const session = context.createSession();
    const pieces = rendered.split(MEDIA_MARKER);
    const prompted = await session.prompt([pieces[0]!, { image }, pieces[1]!], { addSpecial: true, parseSpecial: true });
    const expected = await session.generate({ maxTokens: 4, temperature: 0 }).text();
    context.dispose();

    const reply = await client.chat.completions.create(ask(parts));
    expect(reply.choices[0]!.message.content).toBe(expected);
    expect(reply.usage?.prompt_tokens).toBe(prompted.length);
    expect(prompted.length).toBeGreaterThan(visionTokenCount(VISION));

    const stream = await client.chat.completions.create({ ...ask(parts), stream: true, stream_options: { include_usage: true } });
    let streamed = "";
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.delta.content ?? "";
      usage = chunk.usage ?? usage;
    }
    expect(streamed).toBe(expected);
    expect(usage?.prompt_tokens).toBe(prompted.length);

    // The conversation goes on: the image is reused from the cache (llama-server's timings.cache_n).
    const next = await client.chat.completions.create({
      model: "m",
      messages: [
        { role: "user", content: parts },
        { role: "assistant", content: expected },
        { role: "user", content: "And the colours?" },
      ],
      max_tokens: 4,
      temperature: 0,
    });
    const timings = (next as unknown as { timings: { cache_n: number; prompt_n: number } }).timings;
    expect(timings.cache_n).toBeGreaterThan(visionTokenCount(VISION));
    expect(timings.prompt_n).toBeLessThan(next.usage!.prompt_tokens - visionTokenCount(VISION));
  });

  it("answers bad image parts with a 400 naming the part, and stays up", { timeout: 60_000 }, async () => {
    const huge = Buffer.from(png(2));
    huge.writeUInt32BE(100_000, 16);
    huge.writeUInt32BE(100_000, 20);
    const field = "messages[0].content[1].image_url";
    const cases: Array<[Part, string]> = [
      [{ type: "image_url", image_url: { url: "data:image/png;base64,@@not base64@@" } }, field],
      [{ type: "image_url", image_url: { url: dataUri(Buffer.from("plain text, not an image")) } }, field],
      [{ type: "image_url", image_url: { url: dataUri(huge) } }, field],
      [{ type: "image_url", image_url: { url: "data:image/png;base64," } }, field],
      [{ type: "image_url", image_url: { url: dataUri(png(3), "text/plain") } }, field],
      [{ type: "image_url", image_url: { url: "http://127.0.0.1:9/cat.png" } }, field],
      [{ type: "image_url", image_url: { url: "file:///etc/passwd" } }, field],
      [{ type: "image_url", image_url: {} } as Part, field],
      [{ type: "input_audio", input_audio: { data: Buffer.from(encodeWav(testToneSamples(0.2))).toString("base64"), format: "wav" } }, "messages[0].content[1].input_audio"],
      [{ type: "video_url", video_url: { url: "x" } } as unknown as Part, "messages[0].content[1].type"],
    ];
    for (const [part, param] of cases) {
      const r = await refusal(client, ask([{ type: "text", text: "Look:" }, part, { type: "text", text: "?" }]));
      expect(r, JSON.stringify(part).slice(0, 100)).toMatchObject({ status: 400, param });
    }
    // Not base64, and an http URL without allowImageUrls, say so.
    expect((await refusal(client, ask([{ type: "image_url", image_url: { url: "data:image/png;base64,@@" } }]))).message).toMatch(/base64/);
    expect((await refusal(client, ask([{ type: "image_url", image_url: { url: "https://example.com/a.png" } }]))).message).toMatch(/allowImageUrls|--allow-image-urls/);
    // The second message's image names its place.
    const second = await refusal(client, {
      model: "m",
      messages: [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello" },
        { role: "user", content: [{ type: "text", text: "x" }, { type: "text", text: "y" }, { type: "image_url", image_url: { url: "data:image/png;base64,!!" } }] },
      ],
    });
    expect(second).toMatchObject({ status: 400, param: "messages[2].content[2].image_url" });
    const ok = await client.chat.completions.create(ask([{ type: "image_url", image_url: { url: dataUri(png(4)) } }, { type: "text", text: "ok?" }]));
    expect(ok.choices[0]!.finish_reason).toMatch(/stop|length/);
  });

  it("renders image parts with the marker in /apply-template", async () => {
    const res = await fetch(`${server.url}/apply-template`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: dataUri(png(5)) } }, { type: "text", text: "Describe." }] }] }),
    });
    expect(res.status).toBe(200);
    const { prompt } = (await res.json()) as { prompt: string };
    expect(prompt).toContain(`${MEDIA_MARKER}Describe.`);
  });
});

describe("image URLs", () => {
  let images: http.Server;
  let base: string;
  let fetching: RunningServer;

  beforeAll(async () => {
    const image = png(6);
    images = http.createServer((req, res) => {
      if (req.url === "/cat.png") {
        res.writeHead(200, { "Content-Type": "image/png", "Content-Length": String(image.length) });
        res.end(image);
      } else if (req.url === "/big.png") {
        res.writeHead(200, { "Content-Type": "image/png" }); // chunked: the limit applies while reading
        const block = Buffer.alloc(1 << 20);
        let sent = 0;
        const write = () => {
          while (sent < 24 && res.write(block)) sent++;
          if (sent < 24) res.once("drain", write);
          else res.end();
        };
        res.on("error", () => {});
        write();
      } else {
        res.writeHead(404).end("not here");
      }
    });
    await new Promise<void>((resolve) => images.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(images.address() as AddressInfo).port}`;
    // A second server on the same model (its projector loaded already), allowed to fetch.
    fetching = await startServer({ model, projector: files.vision, allowImageUrls: true, port: 0, parallel: 1, contextSize: 512, threads: 2 });
  });

  afterAll(async () => {
    await fetching?.close();
    images?.closeAllConnections();
    await new Promise((resolve) => images?.close(resolve));
  });

  it("fetches an http image with allowImageUrls, as a data URI would give it", { timeout: 60_000 }, async () => {
    const c = new OpenAI({ baseURL: `${fetching.url}/v1`, apiKey: "none", maxRetries: 0 });
    const byUrl = await c.chat.completions.create(ask([{ type: "image_url", image_url: { url: `${base}/cat.png` } }, { type: "text", text: "What?" }]));
    const byData = await c.chat.completions.create(ask([{ type: "image_url", image_url: { url: dataUri(png(6)) } }, { type: "text", text: "What?" }]));
    expect(byUrl.choices[0]!.message.content).toBe(byData.choices[0]!.message.content);
    expect(byUrl.usage?.prompt_tokens).toBe(byData.usage?.prompt_tokens);
    const field = "messages[0].content[0].image_url";
    // A port nothing listens on: one just freed.
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    for (const url of [`${base}/missing.png`, `${base}/big.png`, `http://127.0.0.1:${port}/refused.png`]) {
      const r = await refusal(c, ask([{ type: "image_url", image_url: { url } }, { type: "text", text: "?" }]));
      expect(r, url).toMatchObject({ status: 400, param: field });
    }
    expect((await refusal(c, ask([{ type: "image_url", image_url: { url: `${base}/big.png` } }, { type: "text", text: "?" }]))).message).toMatch(/20 MiB/);
  });
});

describe("audio, and servers without a projector", () => {
  it("takes input_audio with an audio projector, and refuses images there", { timeout: 120_000 }, async () => {
    const audio = await startServer({ model: files.text, load: { projector: files.audio }, port: 0, parallel: 1, contextSize: 1024, threads: 2 });
    try {
      const props = (await (await fetch(`${audio.url}/props`)).json()) as { modalities: Record<string, boolean> };
      expect(props.modalities).toEqual({ vision: false, video: false, audio: true });
      const c = new OpenAI({ baseURL: `${audio.url}/v1`, apiKey: "none", maxRetries: 0 });
      const wav = Buffer.from(encodeWav(testToneSamples(1))).toString("base64");
      const parts: Part[] = [
        { type: "text", text: "Listen:" },
        { type: "input_audio", input_audio: { data: wav, format: "wav" } },
        { type: "text", text: "What is it?" },
      ];
      const reply = await c.chat.completions.create(ask(parts));
      expect(reply.usage!.prompt_tokens).toBeGreaterThan(100);
      const stream = await c.chat.completions.create({ ...ask(parts), stream: true });
      let streamed = "";
      for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? "";
      expect(streamed).toBe(reply.choices[0]!.message.content);
      expect(await refusal(c, ask([{ type: "input_audio", input_audio: { data: wav, format: "ogg" as "wav" } }, { type: "text", text: "?" }]))).toMatchObject({
        status: 400,
        param: "messages[0].content[0].input_audio.format",
      });
      expect(await refusal(c, ask([{ type: "input_audio", input_audio: { data: "%%%", format: "wav" } }, { type: "text", text: "?" }]))).toMatchObject({
        status: 400,
        param: "messages[0].content[0].input_audio.data",
      });
      expect(await refusal(c, ask([{ type: "image_url", image_url: { url: dataUri(png(7)) } }, { type: "text", text: "?" }]))).toMatchObject({
        status: 400,
        param: "messages[0].content[0].image_url",
      });
    } finally {
      await audio.close();
    }
  });

  it("a server without a projector refuses image parts clearly, and serves text parts", { timeout: 60_000 }, async () => {
    const plain = await startServer({ model: files.text, port: 0, parallel: 1, contextSize: 256, threads: 1 });
    try {
      const c = new OpenAI({ baseURL: `${plain.url}/v1`, apiKey: "none", maxRetries: 0 });
      const r = await refusal(c, ask([{ type: "text", text: "Look:" }, { type: "image_url", image_url: { url: dataUri(png(8)) } }]));
      expect(r).toMatchObject({ status: 400, param: "messages[0].content[1].image_url" });
      expect(r.message).toMatch(/projector|mmproj/);
      const text = await c.chat.completions.create(ask([{ type: "text", text: "Only" }, { type: "text", text: "text" }]));
      expect(text.usage!.prompt_tokens).toBeGreaterThan(0);
      const props = (await (await fetch(`${plain.url}/props`)).json()) as { modalities: Record<string, boolean> };
      expect(props.modalities).toEqual({ vision: false, video: false, audio: false });
    } finally {
      await plain.close();
    }
  });
});
