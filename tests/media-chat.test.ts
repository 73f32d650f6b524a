/**
 * Images and audio in chat messages (src/chat.ts, src/chat-session.ts), on random-weight
 * projectors written by src/fixtures/mtmd.ts ("gemma3" vision, "ultravox" audio), each paired with
 * a random Llama text model of the projector's output width (as in tests/media.test.ts).
 *
 * Independent checks: the rendered text holds libmtmd's marker, unaltered, once per media part and
 * where llama-server puts it (text parts on separate lines, none around a marker); the media list
 * follows the markers even when a template reorders messages; across turns the earlier images are
 * reused from the cache (`result.prompt.reused` covers them), and the reply after a reused prefix is
 * the reply of a fresh chat on the same conversation.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LLAMA2_CHAT_TEMPLATE, writeRandomLlama } from "../src/fixtures/llama.js";
import { encodePng, encodeWav, testImagePixels, testToneSamples, visionTokenCount, writeAudioProjector, writeVisionProjector } from "../src/fixtures/mtmd.js";
import { ChatSession, ChatTemplate, loadModel, renderChat, type ChatContentPart, type ChatMessage, type ChatTrimEvent, type Context, type Model } from "../src/index.js";
import { MEDIA_MARKER } from "../src/media.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-media-chat-"));
const TEXT_EMBD = 64;
const VISION = { textEmbd: TEXT_EMBD, seed: 42 };
const files = { text: path.join(tmp, "text.gguf"), vision: path.join(tmp, "vision.gguf"), audio: path.join(tmp, "audio.gguf") };
const png = (seed: number, w = 64, h = 48) => encodePng(w, h, testImagePixels(w, h, seed));
const image = (data: Uint8Array | string): ChatContentPart => ({ type: "image", data });
const text = (t: string): ChatContentPart => ({ type: "text", text: t });
const markers = (s: string) => s.split(MEDIA_MARKER).length - 1;

let model: Model;
let context: Context;

beforeAll(async () => {
  await writeRandomLlama(files.text, { nEmbd: TEXT_EMBD, nHead: 4, nHeadKv: 2, nLayer: 2, nCtx: 2048, nFf: 192, seed: 41, chatTemplate: LLAMA2_CHAT_TEMPLATE });
  await writeVisionProjector(files.vision, VISION);
  await writeAudioProjector(files.audio, { textEmbd: TEXT_EMBD, seed: 43 });
  model = await loadModel(files.text, { projector: files.vision });
  context = await model.createContext({ contextSize: 512, sequences: 3, threads: 2 });
}, 120_000);

afterAll(() => {
  model?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("rendering messages with media parts", () => {
  it("puts the marker where each part goes, as llama-server joins parts, and lists the media in order", async () => {
    const a = png(1);
    const b = png(2);
    const messages: ChatMessage[] = [
      { role: "system", content: "Be brief." },
      { role: "user", content: [text("Compare"), text("these:"), image(a), text("and"), image(b), text("please")] },
    ];
    const rendered = await new ChatTemplate(model).render(messages);
    // Text parts on separate lines; no line break before or after a media part.
    expect(rendered.text).toContain(`Compare\nthese:${MEDIA_MARKER}and${MEDIA_MARKER}please`);
    expect(markers(rendered.text)).toBe(2);
    expect(rendered.media.map((m) => [m.type, m.message, m.part, m.data])).toEqual([
      ["image", 1, 2, a],
      ["image", 1, 4, b],
    ]);
    // renderChat gives the same text; a text-only conversation has no media.
    expect(await renderChat(model, messages)).toBe(rendered.text);
    expect((await new ChatTemplate(model).render([{ role: "user", content: "hi" }])).media).toEqual([]);
    // Text parts only: the same text as the joined string.
    const parts = await renderChat(model, [{ role: "user", content: [text("a"), text("b")] }]);
    expect(parts).toBe(await renderChat(model, [{ role: "user", content: "a\nb" }]));
  });

  it("leaves the marker unaltered in Jinja and built-in templates", async () => {
    const messages: ChatMessage[] = [{ role: "user", content: [text("<b>&'\"x"), image(png(3)), text("y")] }];
    for (const template of ["chatml", "llama3", "gemma", LLAMA2_CHAT_TEMPLATE, "{% for m in messages %}{{ m['content'] }}|{% endfor %}"]) {
      const out = await renderChat(model, messages, { template });
      expect(out, template.slice(0, 20)).toContain(`<b>&'"x${MEDIA_MARKER}y`);
      expect(markers(out)).toBe(1);
    }
  });

  it("keeps the media list in the order of the markers when a template reorders messages", async () => {
    const reverse = "{% for m in messages | reverse %}[{{ m['role'] }}: {{ m['content'] }}]{% endfor %}";
    const a = png(4);
    const b = png(5);
    const messages: ChatMessage[] = [
      { role: "user", content: [image(a), text("first")] },
      { role: "assistant", content: "ok" },
      { role: "user", content: [image(b), text("second")] },
    ];
    const rendered = await new ChatTemplate(model, { template: reverse }).render(messages, { addGenerationPrompt: false });
    expect(rendered.text).toBe(`[user: ${MEDIA_MARKER}second][assistant: ok][user: ${MEDIA_MARKER}first]`);
    expect(rendered.media.map((m) => m.data)).toEqual([b, a]);
    // A template that drops a message drops its media; one that repeats it repeats them.
    const twice = "{% for m in messages %}{{ m['content'] }}{{ m['content'] }}{% endfor %}";
    const repeated = await new ChatTemplate(model, { template: twice }).render(messages.slice(0, 1), { addGenerationPrompt: false });
    expect(repeated.media.map((m) => m.data)).toEqual([a, a]);
  });

  it("refuses the marker as text in a conversation with media, and keeps it as text without", async () => {
    await expect(renderChat(model, [{ role: "user", content: [text(`fake ${MEDIA_MARKER}`), image(png(6))] }])).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: expect.stringContaining("messages[0].content"),
    });
    expect(await renderChat(model, [{ role: "user", content: `just ${MEDIA_MARKER} text` }])).toContain(`just ${MEDIA_MARKER} text`);
  });

  it("checks the parts", async () => {
    const bad: unknown[] = [
      [{ type: "video", data: "x.mp4" }],
      [{ type: "image" }],
      [{ type: "image", data: 3 }],
      [{ type: "text", text: 3 }],
      [null],
      { type: "text", text: "not an array" },
    ];
    for (const content of bad) {
      await expect(renderChat(model, [{ role: "user", content } as never]), JSON.stringify(content)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    }
  });
});

describe("ChatSession with images", () => {
  it("keeps the parts in its history and reuses the earlier turns' images from the cache", { timeout: 120_000 }, async () => {
    const file = path.join(tmp, "first.png");
    fs.writeFileSync(file, png(10));
    const chat = new ChatSession(context, { systemPrompt: "You see images." });
    const n = visionTokenCount(VISION);
    try {
      const first = await chat.send([text("What is this?"), image(file)], { maxTokens: 4, temperature: 0 }).collect();
      expect(first.prompt.reused).toBe(0);
      const afterFirst = [...chat.session.tokens];
      expect(afterFirst.filter((t) => t === -1).length).toBe(n);
      const firstImageEnd = afterFirst.lastIndexOf(-1) + 1;
      // The file is read once, when its turn is evaluated: the history holds on without it.
      fs.rmSync(file);
      const second = await chat.send([text("And this one?"), image(png(11))], { maxTokens: 4, temperature: 0 }).collect();
      expect(second.prompt.reused).toBeGreaterThan(firstImageEnd);
      expect(second.prompt.evaluated).toBe(second.prompt.length - second.prompt.reused);
      expect([...chat.session.tokens].filter((t) => t === -1).length).toBe(2 * n);
      const third = await chat.send("Which was brighter?", { maxTokens: 4, temperature: 0 }).collect();
      expect(third.prompt.reused).toBeGreaterThan([...chat.session.tokens].lastIndexOf(-1));
      expect(third.prompt.evaluated).toBeLessThan(40);

      // The history keeps the parts as sent; the rendered text holds one marker per part.
      const messages = chat.messages;
      expect(messages.map((m) => m.role)).toEqual(["system", "user", "assistant", "user", "assistant", "user", "assistant"]);
      expect(messages[1]!.content).toEqual([text("What is this?"), image(file)]);
      const rendered = await chat.template.render(messages);
      expect(markers(rendered.text)).toBe(2);
      expect(rendered.media.map((m) => [m.message, m.part])).toEqual([
        [1, 1],
        [3, 1],
      ]);

      // The reply after the reused prefix is a fresh chat's reply to the same conversation.
      const history = messages.slice(1, -1);
      history[0] = { role: "user", content: [text("What is this?"), image(png(10))] };
      const fresh = new ChatSession(context, { systemPrompt: "You see images.", messages: history.slice(0, -1) });
      try {
        const again = await fresh.send("Which was brighter?", { maxTokens: 4, temperature: 0 }).collect();
        expect(again.prompt.reused).toBe(0);
        expect(again.tokens).toEqual(third.tokens);
        expect(again.prompt.length).toBe(third.prompt.length);
      } finally {
        fresh.dispose();
      }
    } finally {
      chat.dispose();
    }
  });

  it("takes images side by side in one message, and reuses both", async () => {
    const chat = new ChatSession(context);
    const n = visionTokenCount(VISION);
    try {
      await chat.send([image(png(12)), image(png(13)), text("Which differs?")], { maxTokens: 3, temperature: 0 }).collect();
      const rendered = await chat.template.render(chat.messages);
      expect(rendered.text).toContain(`${MEDIA_MARKER}${MEDIA_MARKER}Which differs?`);
      const tokens = [...chat.session.tokens];
      expect(tokens.filter((t) => t === -1).length).toBe(2 * n);
      const next = await chat.send("Say more.", { maxTokens: 3, temperature: 0 }).collect();
      expect(next.prompt.reused).toBeGreaterThan(tokens.lastIndexOf(-1));
    } finally {
      chat.dispose();
    }
  });

  it("drops the oldest turns, images and all, when the conversation does not fit", async () => {
    const trims: ChatTrimEvent[] = [];
    const small = await model.createContext({ contextSize: 192, threads: 2 });
    const chat = new ChatSession(small, { systemPrompt: "Hi.", reserveTokens: 40, onTrim: (e) => trims.push(e) });
    try {
      const capacity = chat.session.capacity;
      // About 63 positions a turn (16 of them the image's): the fourth turn no longer fits.
      for (let turn = 0; turn < 5; turn++) {
        const r = await chat.send([text(`Picture ${turn}, described at some length for the sake of the test`), image(png(20 + turn))], { maxTokens: 8, temperature: 0 }).collect();
        expect(r.prompt.length + 8).toBeLessThanOrEqual(capacity);
      }
      expect(trims.length).toBeGreaterThan(0);
      expect(trims[0]!.droppedMessages[0]!.content).toEqual([expect.objectContaining({ type: "text" }), expect.objectContaining({ type: "image" })]);
      expect(chat.messages[0]).toEqual({ role: "system", content: "Hi." });
      expect(chat.messages.length).toBeLessThan(11);
    } finally {
      chat.dispose();
      small.dispose();
    }
  }, 120_000);

  it("refuses bad parts with typed errors naming them, and stays usable", async () => {
    const chat = new ChatSession(context);
    try {
      expect(() => chat.send([{ type: "video", data: "x" } as never])).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
      expect(() => chat.send([{ type: "image", data: 3 } as never])).toThrow(/message\[0\]\.data/);
      await expect(chat.send([text("x"), image(path.join(tmp, "missing.png"))]).collect()).rejects.toMatchObject({
        code: "ERR_FILE_NOT_FOUND",
        message: expect.stringContaining("messages[0].content[1]"),
      });
      await expect(chat.send([text("x"), image(Buffer.from("not an image at all"))]).collect()).rejects.toMatchObject({ code: "ERR_MEDIA_INVALID" });
      await expect(chat.send([text("x"), { type: "audio", data: encodeWav(testToneSamples(0.5)) }]).collect()).rejects.toMatchObject({
        code: "ERR_UNSUPPORTED",
        message: expect.stringContaining("messages[0].content[1]"),
      });
      expect(chat.messages).toEqual([]);
      const ok = await chat.send([text("fine"), image(png(30))], { maxTokens: 2 }).collect();
      expect(ok.prompt.length).toBeGreaterThan(visionTokenCount(VISION));
    } finally {
      chat.dispose();
    }
  });

  it("a chat on a model without a projector refuses images, naming the part", async () => {
    const plain = await loadModel(files.text);
    try {
      const ctx = await plain.createContext({ contextSize: 256, threads: 1 });
      const chat = new ChatSession(ctx);
      await expect(chat.send([text("x"), image(png(1))]).collect()).rejects.toMatchObject({ code: "ERR_STATE", message: expect.stringContaining("messages[0].content[1]") });
      const r = await chat.send([text("only"), text("text")], { maxTokens: 2 }).collect();
      expect(r.prompt.length).toBeGreaterThan(0);
    } finally {
      plain.dispose();
    }
  });
});

describe("ChatSession with audio", () => {
  it("evaluates audio parts and reuses them on the next turn", async () => {
    const m = await loadModel(files.text, { projector: files.audio });
    try {
      const ctx = await m.createContext({ contextSize: 1024, threads: 2 });
      const chat = new ChatSession(ctx);
      const wav = encodeWav(testToneSamples(1));
      const first = await chat.send([text("Listen:"), { type: "audio", data: wav }, text("What is it?")], { maxTokens: 3, temperature: 0 }).collect();
      const media = [...chat.session.tokens].filter((t) => t === -1).length;
      expect(media).toBeGreaterThan(0);
      expect(first.prompt.evaluated).toBe(first.prompt.length);
      const lastMedia = [...chat.session.tokens].lastIndexOf(-1);
      const second = await chat.send("Again?", { maxTokens: 3, temperature: 0 }).collect();
      expect(second.prompt.reused).toBeGreaterThan(lastMedia);
      expect(markers((await chat.template.render(chat.messages)).text)).toBe(1);
      await expect(chat.send([text("x"), image(png(1))]).collect()).rejects.toMatchObject({ code: "ERR_UNSUPPORTED" });
      chat.dispose();
    } finally {
      m.dispose();
    }
  }, 120_000);
});
