import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, type Model } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";

describe("tokenize / detokenize (GPT-2 vocabulary)", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixturePath("gpt2-tiny-f32"));
  });
  afterAll(() => model?.dispose());

  const samples = [
    "Hello world",
    " leading space and  double  spaces\n\nand newlines\t\ttabs",
    "Numbers: 3.14159, 1,000,000 and 42nd",
    "Emoji 🚀🔥👩‍👩‍👧 and CJK 東京タワー, Hindi नमस्ते, German Straße",
    "code: for (let i = 0; i < n; i++) { sum += a[i]; }",
  ];

  for (const text of samples) {
    it(`round-trips ${JSON.stringify(text.slice(0, 24))}`, () => {
      const tokens = model.tokenize(text);
      expect(tokens).toBeInstanceOf(Int32Array);
      expect(tokens.length).toBeGreaterThan(0);
      expect(model.detokenize(tokens)).toBe(text);
      // Piece by piece, as raw bytes, the tokens spell the same text.
      const bytes = Buffer.concat([...tokens].map((t) => model.tokenToBytes(t)));
      expect(bytes.toString("utf8")).toBe(text);
    });
  }

  it("knows GPT-2's ids for a few words", () => {
    expect([...model.tokenize("Hello world")]).toEqual([15496, 995]);
    expect(model.tokenToPiece(995)).toBe(" world");
  });

  it("tokenizes the empty string and very long strings", () => {
    expect(model.tokenize("")).toHaveLength(0);
    const long = "All work and no play makes Jack a dull boy. ".repeat(20000);
    const tokens = model.tokenize(long);
    expect(tokens.length).toBeGreaterThan(100000);
    expect(model.detokenize(tokens)).toBe(long);
  });

  it("parses special tokens only when asked", () => {
    const text = "a<|endoftext|>b";
    expect([...model.tokenize(text, { parseSpecial: true })]).toContain(50256);
    expect([...model.tokenize(text)]).not.toContain(50256);
    expect(model.detokenize([50256])).toBe("");
    expect(model.detokenize([50256], { unparseSpecial: true })).toBe("<|endoftext|>");
  });

  it("handles NUL bytes and lone surrogates without crashing", () => {
    const withNul = "a\u0000b";
    expect(model.detokenize(model.tokenize(withNul))).toBe(withNul);
    const lone = "x\uD800y";
    expect(model.detokenize(model.tokenize(lone))).toBe("x\uFFFDy");
  });
});
