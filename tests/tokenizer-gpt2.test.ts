/**
 * GPT-2 tokenization against an independent encoder: js-tiktoken with OpenAI's r50k_base ranks
 * (GPT-2's vocabulary; bundled with the package, nothing is downloaded). The corpus is generated
 * from a seeded PRNG: prose with contractions, code, whitespace runs, numbers, emoji sequences,
 * several scripts and random code points from every plane.
 *
 * One deliberate adjustment to the oracle: js-tiktoken runs GPT-2's pattern with ECMAScript's
 * `\s`, which counts U+FEFF as white space and not U+0085. GPT-2's encoder (Python's `regex`) and
 * llama.cpp use Unicode's White_Space property, which is the other way round. The oracle uses
 * `\p{White_Space}`; a test below shows the two places where the unpatched pattern differs.
 */
import { Tiktoken } from "js-tiktoken/lite";
import r50kBase from "js-tiktoken/ranks/r50k_base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadModel, type Model } from "../src/index.js";
import { repoRoot } from "./helpers/fixtures.js";
import { gpt2ByteChar, llamaCleanSpaces, Rng } from "./helpers/text-oracles.js";

const VOCAB = `${repoRoot}/vendor/llama.cpp/models/ggml-vocab-gpt-2.gguf`;
const SAMPLES_PER_CATEGORY = 400;

const unicodePattern = r50kBase.pat_str.replaceAll("\\s", "\\p{White_Space}").replaceAll("\\S", "\\P{White_Space}");

// ---------------------------------------------------------------------------------------------
// Corpus generators
// ---------------------------------------------------------------------------------------------

const WORDS = (
  "the of and to in is was he for it with as his on be at by had are but from or have an they which one you were all " +
  "her she there would their we him been has when who will no more if out so up said what its about than into them " +
  "can only other time new some could these two may first then do any like my now over such our man me even most " +
  "made after also did many off before must well back through years much where your way down should because each " +
  "just those people Mr how too little state good very make world still see own men work long here get both between " +
  "Tokenization hello World Zürich naïve café résumé coöperate façade"
).split(" ");
const CONTRACTIONS = ["it's", "they're", "we've", "I'm", "you'll", "he'd", "don't", "can't", "won't", "isn't", "John's",
  "IT'S", "WE'RE", "rock 'n' roll", "O'Neil", "'tis", "y'all", "'s", "'re", "'ve", "'m", "'ll", "'d", "' '", "the '90s"];
const PUNCT = [".", ",", ";", ":", "!", "?", "...", " -", " --", "\"", "'", "(", ")", " .", " ,", " !", " ?"];

function prose(r: Rng): string {
  const out: string[] = [];
  const n = r.int(3, 30);
  for (let i = 0; i < n; i++) {
    let w = r.chance(0.15) ? r.pick(CONTRACTIONS) : r.pick(WORDS);
    if (i === 0 || r.chance(0.1)) w = w.charAt(0).toUpperCase() + w.slice(1);
    out.push(w);
    if (r.chance(0.2)) out.push(r.pick(PUNCT));
    out.push(r.chance(0.9) ? " " : r.pick(["  ", "\n", "\n\n", "\t"]));
  }
  return out.join("").trimEnd() + (r.chance(0.5) ? "." : "");
}

const IDENTS = ["x", "i", "sum", "count", "fooBar", "snake_case_name", "__init__", "HTTPServer", "öl", "λ", "_", "$el", "i18n"];
const OPS = [" = ", " += ", " == ", " !== ", " => ", "->", "::", " && ", " || ", "++", "<<", ">>=", " ? ", " : ", ".", ","];

function code(r: Rng): string {
  const lines: string[] = [];
  const n = r.int(1, 8);
  for (let i = 0; i < n; i++) {
    const indent = r.pick(["", "  ", "    ", "\t", "\t\t", "        "]);
    const parts: string[] = [r.pick(["if (", "for (", "return ", "def ", "const ", "", "#include <", "// ", "/* ", "print(f\""])];
    const m = r.int(1, 6);
    for (let k = 0; k < m; k++) {
      parts.push(r.pick(IDENTS), r.pick(OPS));
      if (r.chance(0.3)) parts.push(String(r.int(0, 100000)));
      if (r.chance(0.2)) parts.push(`"${r.pick(WORDS)}\\n"`);
    }
    parts.push(r.pick([") {", ");", ":", "}", "]", ">", " */", "\")", ""]));
    lines.push(indent + parts.join(""));
  }
  return lines.join(r.pick(["\n", "\r\n", "\n\n"]));
}

const SPACES = [" ", " ", " ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2003", "\u0085", "\u000b", "\u000c", "\u2028"];

function whitespace(r: Rng): string {
  let s = r.chance(0.3) ? "" : r.pick(WORDS);
  const n = r.int(1, 6);
  for (let i = 0; i < n; i++) {
    const run = r.int(1, 12);
    for (let k = 0; k < run; k++) s += r.chance(0.6) ? r.pick(SPACES.slice(0, 5)) : r.pick(SPACES);
    if (r.chance(0.8)) s += r.pick([...WORDS, "1", "!", "'s", "😀"]);
  }
  return s;
}

const DIGIT_SETS = ["0123456789", "०१२३४५६७८९", "٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９", "²³¹¼½¾"];

function digits(r: Rng, n: number, set = "0123456789"): string {
  const chars = [...set];
  let s = "";
  for (let i = 0; i < n; i++) s += r.pick(chars);
  return s;
}

function numbers(r: Rng): string {
  const forms = [
    () => digits(r, r.int(1, 20)),
    () => `${r.chance(0.5) ? "-" : ""}${digits(r, r.int(1, 6))}.${digits(r, r.int(1, 8))}`,
    () => `${r.int(1, 999)},${digits(r, 3)},${digits(r, 3)}`,
    () => `${r.int(1, 9)}.${digits(r, 3)}e${r.chance(0.5) ? "-" : "+"}${r.int(1, 300)}`,
    () => `${r.int(0, 100)}%`,
    () => `${r.int(1900, 2100)}-${String(r.int(1, 12)).padStart(2, "0")}-${String(r.int(1, 28)).padStart(2, "0")}`,
    () => `+${r.int(1, 99)} ${digits(r, 3)} ${digits(r, 4)}`,
    () => `${r.int(1, 99)}${r.pick(["st", "nd", "rd", "th", "x", "k", "px"])}`,
    () => digits(r, r.int(1, 8), r.pick(DIGIT_SETS)),
    () => `0x${r.int(0, 0xffffff).toString(16)}`,
  ];
  const n = r.int(1, 6);
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(r.pick(forms)());
  return out.join(r.pick([" ", ", ", " and ", "\n", ""]));
}

const EMOJI = ["😀", "🚀", "🔥", "🦙", "❤️", "✅", "👍", "🙂", "🇩🇪", "🇯🇵", "🏳️‍🌈", "1️⃣", "#️⃣", "©️", "👩‍👩‍👧", "👨‍💻", "😶‍🌫️",
  "🧑🏾‍🚀", "👍🏻", "👍🏽", "👍🏿", "🫠", "🪿", "☺", "⌚"];
const SKIN = ["", "", "🏻", "🏼", "🏽", "🏾", "🏿"];

function emoji(r: Rng): string {
  let s = "";
  const n = r.int(1, 10);
  for (let i = 0; i < n; i++) {
    const e = r.pick(EMOJI);
    s += /[👍🙂]/u.test(e) ? e + r.pick(SKIN) : e;
    if (r.chance(0.2)) s += "\u200d" + r.pick(EMOJI);
    if (r.chance(0.3)) s += r.pick([" ", "  ", "\n", "!", " x", ""]);
  }
  return s;
}

const SCRIPTS: Record<string, string[]> = {
  hindi: ["नमस्ते", "दुनिया", "भारत", "हिन्दी", "क्षत्रिय", "ज्ञान", "परीक्षण", "है।", "मैं", "आप"],
  german: ["Straße", "Grüße", "Äpfel", "Öl", "Übermut", "größer", "Fußgängerübergänge", "schön", "MAẞE", "Weißwürste"],
  chinese: ["我想在", "工作", "东京", "中华人民共和国", "你好", "世界", "汉字", "𠀋", "龍"],
  japanese: ["東京タワー", "ひらがな", "カタカナ", "日本語", "こんにちは", "ｶﾀｶﾅ", "ー", "〜", "。"],
  arabic: ["مرحبا", "بالعالم", "العربية", "كِتَابٌ", "سلام", "١٢٣", "؟", "ـ"],
  other: ["Привет", "Ёжик", "안녕하세요", "สวัสดี", "Γειά σου", "שלום", "ქართული", "Ελληνικά", "Tiếng Việt", "İstanbul"],
};

function multilingual(r: Rng): string {
  const script = r.pick(Object.keys(SCRIPTS));
  const words = SCRIPTS[r.chance(0.8) ? script : r.pick(Object.keys(SCRIPTS))];
  const out: string[] = [];
  const n = r.int(1, 12);
  for (let i = 0; i < n; i++) out.push(r.pick(words), r.chance(0.85) ? " " : r.pick(["", ", ", "\n", "  ", "।", "、"]));
  return out.join("").trim();
}

/**
 * Random Unicode scalar values from every plane. Surrogates are not scalar values (a JS string can
 * hold a lone one, but UTF-8 cannot: see the test for them below); NUL and the other C0 controls
 * are valid and included.
 */
function randomCodePoints(r: Rng): string {
  let s = "";
  const n = r.int(1, 24);
  for (let i = 0; i < n; i++) {
    const plane = r.pick([0, 0, 0, 0, 1, 1, 2, 3, 14, 15, 16, r.int(4, 13)]);
    let cp = plane * 0x10000 + r.int(0, 0xffff);
    if (plane === 0 && r.chance(0.25)) cp = r.int(0, 0x7f);
    if (cp >= 0xd800 && cp <= 0xdfff) cp -= 0x800;
    s += String.fromCodePoint(cp);
    if (r.chance(0.15)) s += " ";
  }
  return s;
}

function mixed(r: Rng): string {
  const parts = [prose, code, whitespace, numbers, emoji, multilingual, randomCodePoints];
  const n = r.int(2, 4);
  let s = "";
  for (let i = 0; i < n; i++) s += r.pick(parts)(r).slice(0, 80) + r.pick(["", " ", "\n", "\t", "  "]);
  return s;
}

const CATEGORIES = { prose, code, whitespace, numbers, emoji, multilingual, randomCodePoints, mixed };

// ---------------------------------------------------------------------------------------------

describe("GPT-2 tokenization agrees with js-tiktoken (r50k_base)", () => {
  let model: Model;
  let oracle: Tiktoken;
  let cleaned = 0;
  beforeAll(async () => {
    model = await loadModel(VOCAB, { vocabOnly: true });
    oracle = new Tiktoken({ ...r50kBase, pat_str: unicodePattern });
  });
  afterAll(() => model?.dispose());

  function check(text: string): string[] {
    const problems: string[] = [];
    const ours = [...model.tokenize(text, { addSpecial: false, parseSpecial: false })];
    const theirs = oracle.encode(text);
    if (ours.length !== theirs.length || ours.some((t, i) => t !== theirs[i])) {
      problems.push(`tokens differ for ${JSON.stringify(text)}: ours ${JSON.stringify(ours)} tiktoken ${JSON.stringify(theirs)}`);
    }
    // Token pieces are lossless, whoever decodes them.
    const bytes = Buffer.concat(ours.map((t) => model.tokenToBytes(t)));
    if (!bytes.equals(Buffer.from(text, "utf8"))) problems.push(`pieces differ for ${JSON.stringify(text)}`);
    if (oracle.decode(ours) !== text) problems.push(`tiktoken decodes our tokens differently for ${JSON.stringify(text)}`);
    // detokenize() gives the text back, as tiktoken's decode does; asked to, it cleans up the
    // spaces before punctuation and contractions, as llama_detokenize does for GPT-2 by default
    // (Hugging Face's clean_up_tokenization_spaces).
    const back = model.detokenize(ours);
    if (back !== text) problems.push(`detokenize gave ${JSON.stringify(back)} for ${JSON.stringify(text)}`);
    const expected = llamaCleanSpaces(text);
    if (expected !== text) cleaned++;
    const tidy = model.detokenize(ours, { cleanUpSpaces: true });
    if (tidy !== expected) problems.push(`detokenize (cleanUpSpaces) gave ${JSON.stringify(tidy)} for ${JSON.stringify(text)}`);
    return problems;
  }

  for (const [name, generate] of Object.entries(CATEGORIES)) {
    it(`${name}: ${SAMPLES_PER_CATEGORY} generated samples`, () => {
      const rng = new Rng(0x6a5d + name.length * 7919 + name.charCodeAt(0));
      const problems: string[] = [];
      let chars = 0;
      for (let i = 0; i < SAMPLES_PER_CATEGORY; i++) {
        const text = generate(rng);
        chars += text.length;
        problems.push(...check(text));
      }
      expect(problems.slice(0, 5)).toEqual([]);
      expect(chars).toBeGreaterThan(SAMPLES_PER_CATEGORY * 5);
    });
  }

  it("exercised the space clean-up of detokenize on part of the corpus", () => {
    expect(cleaned).toBeGreaterThan(20);
  });

  it("detokenizes exactly what was tokenized, spaces before punctuation and contractions included", () => {
    const texts = [" .", " 're", " ,", " n't", " !", " ?", " 's", " 'm", " 've", " 'll", " 'd", " ' ", "x ' y",
      "Hello , world !", "They 're here . We 've seen it , have n't we ?", "rock ' n ' roll", "' tis", "a . b", " "];
    for (const text of texts) {
      const tokens = model.tokenize(text, { addSpecial: false });
      expect(oracle.decode([...tokens]), JSON.stringify(text)).toBe(text);
      expect(model.detokenize(tokens), JSON.stringify(text)).toBe(text);
      expect(model.detokenize(tokens, { cleanUpSpaces: false }), JSON.stringify(text)).toBe(text);
      expect(model.detokenize(tokens, { cleanUpSpaces: true }), JSON.stringify(text)).toBe(llamaCleanSpaces(text));
    }
    // llama.cpp's clean-up, spelled out.
    const tidy = (text: string) => model.detokenize(model.tokenize(text), { cleanUpSpaces: true });
    expect(tidy("Hello , world !")).toBe("Hello, world!");
    expect(tidy("They 're here . We 've seen it , have n't we ?")).toBe("They're here. We've seen it, have n't we?");
    expect(tidy("it 's I 'm you 'll he 'd")).toBe("it's I'm you 'll he 'd");
    expect(tidy("rock ' n ' roll")).toBe("rock'n'roll");
  });

  it("renders and removes special tokens the same with and without the clean-up", () => {
    const eot = r50kBase.special_tokens["<|endoftext|>"];
    const tokens = [eot, ...model.tokenize("Hello world", { addSpecial: false }), eot];
    for (const cleanUpSpaces of [false, true]) {
      expect(model.detokenize(tokens, { cleanUpSpaces })).toBe("Hello world");
      expect(model.detokenize(tokens, { unparseSpecial: true, cleanUpSpaces })).toBe("<|endoftext|>Hello world<|endoftext|>");
      // GPT-2 adds no BOS/EOS, so removeSpecial keeps them (as llama_detokenize does).
      expect(model.detokenize(tokens, { removeSpecial: true, unparseSpecial: true, cleanUpSpaces })).toBe("<|endoftext|>Hello world<|endoftext|>");
    }
    expect(() => model.detokenize(tokens, { cleanUpSpaces: "yes" as unknown as boolean })).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }),
    );
  });

  it("uses Unicode White_Space: ECMAScript's \\s would differ on exactly U+0085 and U+FEFF", () => {
    const ecmascript = new Tiktoken(r50kBase);
    for (const ws of ["\u0085", "\ufeff"]) {
      const text = ` ${ws}b`;
      const ours = [...model.tokenize(text, { addSpecial: false })];
      expect(ours).toEqual(oracle.encode(text));
      expect(ours).not.toEqual(ecmascript.encode(text));
    }
    // Every other white-space character is the same for both patterns.
    for (const ws of SPACES) {
      if (ws === "\u0085") continue;
      const text = `a ${ws}${ws} b`;
      expect(ecmascript.encode(text)).toEqual([...model.tokenize(text, { addSpecial: false })]);
    }
  });

  it("encodes a lone surrogate as U+FFFD, as TextEncoder does", () => {
    // A JS string may hold an unpaired surrogate; UTF-8 cannot. N-API converts it to U+FFFD
    // (EF BF BD) before llama.cpp sees it, so the text comes back with U+FFFD in its place.
    for (const text of ["x\ud800y", "\udfff", "a\ud83d", "\ud83d\ud83d\ude00"]) {
      const replaced = Buffer.from(text, "utf8").toString("utf8");
      expect(replaced).toContain("\ufffd");
      const ours = [...model.tokenize(text, { addSpecial: false })];
      expect(ours).toEqual(oracle.encode(text));
      expect(ours).toEqual([...model.tokenize(replaced, { addSpecial: false })]);
      expect(model.detokenize(ours)).toBe(replaced);
    }
  });

  it("handles NUL and the other C0 controls like any other byte", () => {
    for (let c = 0; c < 0x20; c++) {
      const text = `a${String.fromCharCode(c)}b ${String.fromCharCode(c)}`;
      expect([...model.tokenize(text, { addSpecial: false })]).toEqual(oracle.encode(text));
      expect(model.detokenize(model.tokenize(text, { addSpecial: false }))).toBe(text);
    }
  });
});

describe("GPT-2 vocabulary introspection", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(VOCAB, { vocabOnly: true });
  });
  afterAll(() => model?.dispose());

  it("names the special tokens and which of them end generation", () => {
    const eot = r50kBase.special_tokens["<|endoftext|>"];
    expect(model.specialTokens).toMatchObject({ bos: eot, eos: eot, eot, addBos: false, addEos: false });
    expect(model.isEndOfGeneration(eot)).toBe(true);
    expect(model.isEndOfGeneration(995)).toBe(false);
    expect(model.tokenAttributes(eot)).toMatchObject({ control: true, normal: false });
    expect(model.tokenAttributes(995)).toMatchObject({ control: false, normal: true, byte: false });
    expect(model.tokenToPiece(eot)).toBe("");
    expect(model.tokenToPiece(eot, { special: true })).toBe("<|endoftext|>");
    expect([...model.tokenize("<|endoftext|>", { parseSpecial: true })]).toEqual([eot]);
  });

  it("decodes every token's stored text through GPT-2's byte map, as tokenToBytes does", () => {
    // tokenText is the vocabulary entry ("Ġworld"); inverting bytes_to_unicode() gives its bytes.
    const byteOf = new Map<string, number>(Array.from({ length: 256 }, (_, b) => [gpt2ByteChar(b), b]));
    expect(model.tokenText(995)).toBe("Ġworld");
    expect(model.tokenToPiece(995)).toBe(" world");
    const wrong: number[] = [];
    for (let id = 0; id < model.info.vocabSize; id++) {
      if (model.tokenAttributes(id).control) continue;
      const bytes = [...model.tokenText(id)].map((ch) => byteOf.get(ch));
      if (bytes.some((b) => b === undefined) || !Buffer.from(bytes as number[]).equals(model.tokenToBytes(id))) wrong.push(id);
    }
    expect(wrong).toEqual([]);
  });

  it("rejects token ids outside the vocabulary and calls after dispose", async () => {
    for (const bad of [-1, 50257, 1.5, Number.NaN]) {
      expect(() => model.tokenText(bad)).toThrow(expect.objectContaining({ code: "ERR_TOKEN_INVALID" }));
      expect(() => model.tokenAttributes(bad)).toThrow(expect.objectContaining({ code: "ERR_TOKEN_INVALID" }));
    }
    const other = await loadModel(VOCAB, { vocabOnly: true });
    other.dispose();
    expect(() => other.tokenText(1)).toThrow(expect.objectContaining({ code: "ERR_DISPOSED" }));
    expect(() => other.tokenAttributes(1)).toThrow(expect.objectContaining({ code: "ERR_DISPOSED" }));
  });

  it("loads without weights: no context can be made from it", async () => {
    expect(model.info).toMatchObject({ vocabType: "bpe", vocabSize: 50257, layers: 0, heads: 0, parameters: 0 });
    await expect(model.createContext()).rejects.toMatchObject({ code: "ERR_STATE" });
  });
});
