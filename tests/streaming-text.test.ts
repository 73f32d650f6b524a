/**
 * The streaming detokenizer (native/TextStream.cc) as generate() exposes it.
 *
 * A GBNF grammar that allows one fixed multilingual string forces the random-weight GPT-2 fixture
 * to spell it; at temperature 1 it picks among the many tokenizations of that string, most of
 * them through byte-level tokens that split UTF-8 characters. The oracle for what each chunk must
 * be is WHATWG's streaming UTF-8 decoder (TextDecoder with { stream: true }): text comes out as
 * soon as its characters are complete, never earlier, never later.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, type Context, type Model } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";
import { llamaCleanSpaces, utf8OrUndefined } from "./helpers/text-oracles.js";

/** Emoji (with a skin tone and a ZWJ family), Devanagari, CJK and German. */
const TARGET = "🙂 नमस्ते 世界 👍🏽👩‍👩‍👧 Grüße";
const SEEDS = [1, 2, 3, 4];
const PROMPT = "Text:";

/** A GBNF string literal. */
function gbnfLiteral(text: string): string {
  return `"${text.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}
const GRAMMAR = `root ::= ${gbnfLiteral(TARGET)}`;

/**
 * What the stream must emit, from its specification: text is released once its characters are
 * complete and it cannot be the start of a stop string; the first stop string found ends the
 * text before it; at the end of generation (not at a stop) everything held is flushed.
 */
function expectedChunks(pieces: readonly Uint8Array[], stops: readonly string[], flushAtEnd: boolean): string[] {
  const decoder = new TextDecoder("utf-8");
  let text = "";
  let released = 0;
  const chunks: string[] = [];
  for (const piece of pieces) {
    text += decoder.decode(piece, { stream: true });
    const hits = stops.map((s) => text.indexOf(s)).filter((at) => at >= 0);
    if (hits.length > 0) {
      chunks.push(text.slice(released, Math.min(...hits)));
      return chunks;
    }
    let keep = 0;
    for (const stop of stops) {
      for (let len = Math.min(stop.length - 1, text.length); len > keep; len--) {
        if (text.endsWith(stop.slice(0, len))) keep = len;
      }
    }
    const end = Math.max(released, text.length - keep);
    chunks.push(text.slice(released, end));
    released = end;
  }
  if (flushAtEnd && chunks.length > 0) chunks[chunks.length - 1] += text.slice(released) + decoder.decode();
  return chunks;
}

interface Run {
  tokens: number[];
  chunks: string[];
  finishReason: string | undefined;
}

describe("streaming detokenizer", () => {
  let model: Model;
  let context: Context;
  beforeAll(async () => {
    model = await loadModel(fixturePath("gpt2-tiny-f32"));
    // One thread: the tiny model decodes in well under a millisecond, and more threads only spin
    // against each other on a busy two-core machine.
    context = await model.createContext({ contextSize: 128, threads: 1 });
  });
  afterAll(() => model?.dispose());

  async function run(options: { seed: number; maxTokens?: number; stop?: string[]; grammar?: string }): Promise<Run> {
    using session = context.createSession();
    await session.prompt(PROMPT);
    const generation = session.generate({ grammar: GRAMMAR, temperature: 1, maxTokens: 100, ...options });
    const tokens: number[] = [];
    const chunks: string[] = [];
    for await (const { token, text } of generation) {
      tokens.push(token);
      chunks.push(text);
    }
    return { tokens, chunks, finishReason: generation.finishReason };
  }

  const bytesOf = (tokens: readonly number[]) => Buffer.concat(tokens.map((t) => model.tokenToBytes(t)));
  /** Tokens whose bytes are not whole UTF-8 characters on their own. */
  const partialTokens = (tokens: readonly number[]) => tokens.filter((t) => utf8OrUndefined(model.tokenToBytes(t)) === undefined);

  it("releases each character as soon as its last byte arrives, for several seeds", async () => {
    let partial = 0;
    const tokenizations = new Set<string>();
    for (const seed of SEEDS) {
      const { tokens, chunks, finishReason } = await run({ seed });
      expect(finishReason).toBe("eog");
      expect(chunks.join("")).toBe(TARGET);
      expect(model.detokenize(tokens)).toBe(TARGET);
      expect(bytesOf(tokens).toString("utf8")).toBe(TARGET);
      // Chunk by chunk, exactly what a streaming UTF-8 decoder releases for the same bytes.
      const decoder = new TextDecoder("utf-8", { fatal: true });
      tokens.forEach((t, i) => expect(chunks[i], `seed ${seed}, token ${i}`).toBe(decoder.decode(model.tokenToBytes(t), { stream: true })));
      expect(chunks.some((c) => c.includes("\ufffd"))).toBe(false);
      partial += partialTokens(tokens).length;
      tokenizations.add(tokens.join(","));
    }
    // The hold-back was really exercised, and the seeds took different paths.
    expect(partial).toBeGreaterThan(10);
    expect(tokenizations.size).toBeGreaterThan(1);
  });

  it("streams the tokens' own bytes, which detokenize() gives too (and, asked, llama.cpp's space clean-up)", async () => {
    // The stream is the concatenated token pieces (what llama.cpp's own tools print), and so is
    // detokenize(). With cleanUpSpaces it is llama_detokenize's text for GPT-2, which removes the
    // space in " ," " ." etc. (Hugging Face's clean_up_tokenization_spaces).
    const spaced = "Hi , you . It 's ok !";
    const generation = await run({ seed: 5, grammar: `root ::= ${gbnfLiteral(spaced)}` });
    expect(generation.finishReason).toBe("eog");
    expect(generation.chunks.join("")).toBe(spaced);
    expect(model.detokenize(generation.tokens)).toBe(spaced);
    expect(model.detokenize(generation.tokens, { cleanUpSpaces: true })).toBe(llamaCleanSpaces(spaced));
    expect(llamaCleanSpaces(spaced)).toBe("Hi, you. It's ok!");

    // Free greedy generation from random weights: whatever comes out, the same holds.
    using session = context.createSession();
    await session.prompt(PROMPT);
    const { tokens, text } = await session.generate({ temperature: 0, maxTokens: 60 }).collect();
    expect(tokens.length).toBeGreaterThan(10);
    expect(text).toBe(bytesOf(tokens).toString("utf8"));
    expect(model.detokenize(tokens)).toBe(text);
    expect(model.detokenize(tokens, { cleanUpSpaces: true })).toBe(llamaCleanSpaces(text));
  });

  it("cuts at a stop string whose first character is split across tokens", async () => {
    // "स्ते" starts with स (E0 A4 B8), which GPT-2 can only spell in pieces.
    const stop = "स्ते";
    const expected = TARGET.slice(0, TARGET.indexOf(stop));
    let splitStops = 0;
    for (const seed of SEEDS) {
      const { tokens, chunks, finishReason } = await run({ seed, stop: [stop] });
      expect(finishReason).toBe("stop");
      expect(chunks.join("")).toBe(expected);
      expect(chunks).toEqual(expectedChunks(tokens.map((t) => model.tokenToBytes(t)), [stop], false));
      expect(chunks.some((c) => c.includes("\ufffd"))).toBe(false);
      // Where the stop string begins, a token boundary falls inside its first character.
      const start = Buffer.byteLength(expected);
      const width = Buffer.byteLength(stop.slice(0, 1));
      let offset = 0;
      for (const t of tokens) {
        const end = offset + model.tokenToBytes(t).length;
        if (offset < start + width && end > start && (offset > start || end < start + width)) {
          splitStops++;
          break;
        }
        offset = end;
      }
    }
    expect(splitStops).toBeGreaterThan(0);
  });

  it("holds back text that could start a stop string, and releases it when it does not", async () => {
    // "🙂 " could start "🙂 x" until "न" arrives; "न" could start "नही" until "म"; "Grüß" could
    // start "Grüßen" until the generation ends and flushes it.
    const stops = ["🙂 x", "नही", "Grüßen"];
    for (const seed of SEEDS.slice(0, 2)) {
      const { tokens, chunks, finishReason } = await run({ seed, stop: stops });
      expect(finishReason).toBe("eog");
      expect(chunks.join("")).toBe(TARGET);
      expect(chunks).toEqual(expectedChunks(tokens.map((t) => model.tokenToBytes(t)), stops, true));
      // Nothing at all is released before "न" is complete, and then only "🙂 ".
      const first = chunks.findIndex((c) => c !== "");
      expect(chunks[first]).toBe("🙂 ");
      expect(bytesOf(tokens.slice(0, first + 1)).toString("utf8").endsWith("न")).toBe(true);
      expect(chunks.at(-1)?.endsWith("Grüße")).toBe(true);
      expect(chunks.some((c) => c.includes("\ufffd"))).toBe(false);
    }
  });

  it("flushes an incomplete character at the end as U+FFFD, like detokenize", async () => {
    // Find, in a full run, a token after which the bytes so far end inside a character; then stop
    // the same run there with maxTokens. TextStream::Flush releases the incomplete bytes as they
    // are, and turning them into a JS string replaces them with U+FFFD (WHATWG: one per maximal
    // invalid subsequence), which is also what detokenize() gives for the same tokens.
    let checked = 0;
    for (const seed of SEEDS) {
      const full = await run({ seed });
      const cut = full.tokens.findIndex((_, i) => utf8OrUndefined(bytesOf(full.tokens.slice(0, i + 1))) === undefined);
      if (cut < 0) continue;
      const { tokens, chunks, finishReason } = await run({ seed, maxTokens: cut + 1 });
      expect(tokens).toEqual(full.tokens.slice(0, cut + 1));
      expect(finishReason).toBe("length");
      const text = chunks.join("");
      expect(text).toBe(bytesOf(tokens).toString("utf8"));
      expect(text).toBe(model.detokenize(tokens));
      expect(text.endsWith("\ufffd")).toBe(true);
      // Only the final, flushed chunk carries the replacement character.
      expect(chunks.slice(0, -1).some((c) => c.includes("\ufffd"))).toBe(false);
      checked++;
    }
    expect(checked).toBeGreaterThan(0);
  });
});
