/**
 * llama.cpp's own tokenizer test vectors, run through our binding.
 *
 * vendor/llama.cpp/models/ggml-vocab-NAME.gguf are vocabulary-only GGUF files; NAME.gguf.inp and
 * NAME.gguf.out are the texts and the token ids that Hugging Face's tokenizer gives for them
 * (written by convert_hf_to_gguf_update.py). We read them exactly as test-tokenizer-0.cpp does
 * (texts separated by "\n__ggml_vocab_test__\n", one line of space-separated ids per text,
 * add_special = false, parse_special = false) and require the same ids. The files are found at
 * run time, so a vocabulary added to llama.cpp is covered without a change here.
 *
 * On top of that, for every vocabulary (with vectors or not):
 *  - detokenizing gives the text back, up to what the tokenizer type documents it loses, and
 *    cleanUpSpaces gives llama.cpp's clean-up of it;
 *  - test-tokenizer-1-{bpe,spm}.cpp's checks: every token's text, and single code points,
 *    survive tokenize → detokenize;
 *  - the token attributes agree with the GGUF token types read by our own GGUF reader.
 */
import fs from "node:fs";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { metadataValues, readGguf } from "../src/gguf/index.js";
import { loadModel, type Model } from "../src/index.js";
import { repoRoot } from "./helpers/fixtures.js";
import { bertBasicTokens, gpt2ByteChar, llamaCleanSpaces, Rng, utf8OrUndefined } from "./helpers/text-oracles.js";

const MODELS_DIR = path.join(repoRoot, "vendor", "llama.cpp", "models");
const SEPARATOR = "\n__ggml_vocab_test__\n";

interface Vector {
  text: string;
  tokens: number[];
}

/** Every ggml-vocab-*.gguf in the vendored tree, and whether it has .inp/.out test vectors. */
function discoverVocabs(): Array<{ name: string; file: string; hasVectors: boolean }> {
  return fs
    .readdirSync(MODELS_DIR)
    .filter((f) => /^ggml-vocab-.+\.gguf$/.test(f))
    .sort()
    .map((f) => {
      const file = path.join(MODELS_DIR, f);
      const hasVectors = fs.existsSync(`${file}.inp`) && fs.existsSync(`${file}.out`);
      return { name: f.slice("ggml-vocab-".length, -".gguf".length), file, hasVectors };
    });
}

/** read_tests() of test-tokenizer-0.cpp, in TypeScript. */
function readVectors(file: string): Vector[] {
  const raw = fs.readFileSync(`${file}.inp`);
  const inputs: string[] = [];
  const sep = Buffer.from(SEPARATOR, "utf8");
  let pos = 0;
  while (pos < raw.length) {
    const next = raw.indexOf(sep, pos);
    const end = next < 0 ? raw.length : next;
    const text = utf8OrUndefined(raw.subarray(pos, end));
    if (text === undefined) throw new Error(`${file}.inp: test ${inputs.length} is not valid UTF-8`);
    inputs.push(text);
    if (next < 0) break;
    pos = next + sep.length;
  }
  // std::getline: a final newline does not start another line.
  const lines = fs.readFileSync(`${file}.out`, "utf8").split("\n");
  if (lines.at(-1) === "") lines.pop();
  if (lines.length !== inputs.length) {
    throw new Error(`${file}: ${inputs.length} inputs but ${lines.length} outputs`);
  }
  return inputs.map((text, i) => {
    const stripped = lines[i].replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, ""); // string_strip
    const tokens = stripped === "" ? [] : stripped.split(" ").map((s) => Number.parseInt(s, 10));
    if (tokens.some((t) => !Number.isInteger(t))) throw new Error(`${file}.out line ${i + 1} is not a list of ids`);
    return { text, tokens };
  });
}

/** Texts for the round trips: every script, whitespace, numbers, code and emoji. */
const CORPUS = [
  "Hello world",
  "The quick brown fox jumps over the lazy dog.",
  "It's a test -- isn't it? They're here; we've seen 'em.",
  "Straße, Äpfel, Öl und Übermut",
  "नमस्ते दुनिया, यह एक परीक्षण है।",
  "東京タワーは333メートルです。我想在apple工作",
  "مرحبا بالعالم",
  "Привет, мир! Ёжик",
  "🚀 👩‍👩‍👧 👍🏽 🇩🇪 1️⃣",
  "if (x > 0) {\n\treturn x * 2;\n}",
  "3.14159 1,000,000 42nd 0x1F",
  "tabs\tand\nnewlines\r\nand  double  spaces",
];

/** A loaded vocabulary and what our own GGUF reader says about it. */
interface Vocab {
  model: Model;
  /** tokenizer.ggml.tokens and tokenizer.ggml.token_type, read by src/gguf (not llama.cpp). */
  texts: ArrayLike<string>;
  types: ArrayLike<number> | undefined;
  /** tokenizer.ggml.unknown_token_id, if the file names one. */
  unk: number | undefined;
}

async function openVocab(file: string): Promise<Vocab> {
  const model = await loadModel(file, { vocabOnly: true });
  const meta = metadataValues(await readGguf(file));
  const unk = model.metadata["tokenizer.ggml.unknown_token_id"];
  return {
    model,
    texts: meta["tokenizer.ggml.tokens"] as ArrayLike<string>,
    types: meta["tokenizer.ggml.token_type"] as ArrayLike<number> | undefined,
    unk: typeof unk === "number" ? unk : undefined,
  };
}

/** BPE and SPM are lossless: detokenize() gives every text back, whatever llama.cpp's clean-up setting. */
function expectLossless(texts: readonly string[], back: readonly string[]): void {
  const wrong = back.map((b, i) => [texts[i], b]).filter(([t, b]) => t !== b);
  expect(wrong.slice(0, 3), "detokenized differently").toEqual([]);
}

/**
 * cleanUpSpaces: true is llama.cpp's clean-up of what cleanUpSpaces: false gives, for every type
 * (one of the two is llama_detokenize itself, the other the addon's own loop over the pieces).
 */
function expectCleanUpIsLlamas(model: Model, tokens: readonly number[][]): void {
  const tidy = tokens.map((t) => model.detokenize(t, { cleanUpSpaces: true }));
  const raw = tokens.map((t) => model.detokenize(t, { cleanUpSpaces: false }));
  expect(tidy).toEqual(raw.map(llamaCleanSpaces));
  for (const options of [{ removeSpecial: true }, { unparseSpecial: true }, { removeSpecial: true, unparseSpecial: true }]) {
    const special = tokens.map((t) => [...(model.specialTokens.bos === null ? [] : [model.specialTokens.bos]), ...t]);
    expect(special.map((t) => model.detokenize(t, { ...options, cleanUpSpaces: true }))).toEqual(
      special.map((t) => llamaCleanSpaces(model.detokenize(t, { ...options, cleanUpSpaces: false }))),
    );
  }
}

/** What llama.cpp's WPM detokenizer gives for a text before its clean-up: " word" per BERT word. */
function wpmRawText(text: string): string {
  return bertBasicTokens(text).map((w) => ` ${w}`).join("");
}

/** What detokenize() gives for a WPM text by default: the words, then llama.cpp's clean-up. */
function wpmText(text: string): string {
  return llamaCleanSpaces(wpmRawText(text));
}

/**
 * Under the sanitizers (npm run test:asan), where each vocabulary costs ~10x, one vocabulary of
 * each tokenizer type (SPM, BPE with GPT-2's and with Qwen 2's pre-tokenizer, WPM, UGM) runs
 * every check; the others run in npm test.
 */
const SANITIZER_VOCABS = new Set(["llama-spm", "gpt-2", "qwen2", "bert-bge", "nomic-bert-moe"]);
const vocabs = discoverVocabs().filter((v) => process.env.LLAMA_NAPI_SANITIZER === undefined || SANITIZER_VOCABS.has(v.name));
const withVectors = vocabs.filter((v) => v.hasVectors);

describe("llama.cpp tokenizer test vectors", () => {
  it(`finds the vendored vocabularies and their vectors (${withVectors.length} with vectors)`, () => {
    expect(withVectors.length).toBeGreaterThan(process.env.LLAMA_NAPI_SANITIZER === undefined ? 10 : 3);
    expect(vocabs.length).toBeGreaterThanOrEqual(withVectors.length);
  });

  const typesWithVectors = new Set<string>();

  for (const entry of vocabs) {
    describe(entry.name, () => {
      let vocab: Vocab;
      beforeAll(async () => {
        vocab = await openVocab(entry.file);
        if (entry.hasVectors) typesWithVectors.add(vocab.model.info.vocabType);
      });
      afterAll(() => vocab?.model.dispose());

      if (entry.hasVectors) {
        it("tokenizes every test vector exactly as llama.cpp's tests expect", () => {
          const vectors = readVectors(entry.file);
          expect(vectors.length).toBeGreaterThan(0);
          const mismatches = vectors
            .map((v) => ({ text: v.text, expected: v.tokens, got: [...vocab.model.tokenize(v.text, { addSpecial: false, parseSpecial: false })] }))
            .filter((r) => r.got.length !== r.expected.length || r.got.some((t, i) => t !== r.expected[i]));
          expect(mismatches).toEqual([]);
        });

        it("detokenizes the expected ids back to the text, up to the type's documented losses", () => {
          checkVectorRoundTrip(vocab, readVectors(entry.file));
        });
      }

      it("round-trips a multilingual corpus through tokenize/detokenize", () => {
        checkCorpusRoundTrip(vocab);
      });

      it("keeps every token's text (test-tokenizer-1) and single code points intact", () => {
        const type = vocab.model.info.vocabType;
        // llama.cpp runs these for BPE and SPM (and UGM passes them); WPM lower-cases and splits
        // punctuation, so "[unused0]" comes back as " [ unused0 ]" by design.
        if (type === "wpm") return;
        checkTokenTexts(vocab.model);
        if (type === "bpe" || type === "spm") checkCodePoints(vocab);
      });

      it("reports token texts and attributes that agree with the GGUF file", () => {
        checkAttributes(vocab);
      });
    });
  }

  it("has vectors for the BPE, SPM and WPM tokenizer types", () => {
    expect([...typesWithVectors].sort()).toEqual(expect.arrayContaining(["bpe", "spm", "wpm"]));
  });
});

function checkVectorRoundTrip({ model, unk }: Vocab, vectors: Vector[]): void {
  const type = model.info.vocabType;
  if (type === "wpm") {
    // BERT: lower-cased, accents stripped, punctuation split off; [UNK] renders as nothing, so
    // texts with an unknown word are left out.
    const checked = vectors.filter((v) => unk === undefined || !v.tokens.includes(unk));
    expect(checked.length).toBeGreaterThan(vectors.length / 2);
    for (const v of checked) {
      expect(model.detokenize(v.tokens), JSON.stringify(v.text)).toBe(wpmText(v.text));
      expect(model.detokenize(v.tokens, { cleanUpSpaces: false }), JSON.stringify(v.text)).toBe(wpmRawText(v.text));
    }
    return;
  }
  if (type === "bpe" || type === "spm") {
    expectLossless(
      vectors.map((v) => v.text),
      vectors.map((v) => model.detokenize(v.tokens)),
    );
    expectCleanUpIsLlamas(model, vectors.map((v) => v.tokens));
    return;
  }
  // Unigram and newer types normalise; their output is a fixed point.
  for (const v of vectors) expect([...model.tokenize(model.detokenize(v.tokens), { addSpecial: false })]).toEqual(v.tokens);
}

function checkCorpusRoundTrip({ model, unk }: Vocab): void {
  const type = model.info.vocabType;
  const tokens = CORPUS.map((text) => [...model.tokenize(text, { addSpecial: false })]);
  const back = tokens.map((t) => model.detokenize(t));
  expectCleanUpIsLlamas(model, tokens);
  if (type === "bpe" || type === "spm") {
    expectLossless(CORPUS, back);
    return;
  }
  if (type === "wpm") {
    let checked = 0;
    CORPUS.forEach((text, i) => {
      if (unk !== undefined && tokens[i].includes(unk)) return;
      checked++;
      expect(back[i], JSON.stringify(text)).toBe(wpmText(text));
    });
    expect(checked).toBeGreaterThan(CORPUS.length / 2);
    return;
  }
  // UGM (and anything newer): text already in normal form (NFKC, single spaces, no edge spaces,
  // no joiners) comes back unchanged; any text reaches a fixed point after one round.
  let exact = 0;
  CORPUS.forEach((text, i) => {
    expect([...model.tokenize(back[i], { addSpecial: false })], JSON.stringify(text)).toEqual(tokens[i]);
    const normal = text.normalize("NFKC").replace(/\s+/gu, " ").trim();
    if (normal === text && !/[\u200d\ufe0f]/u.test(text)) {
      exact++;
      expect(back[i]).toBe(text);
    }
  });
  expect(exact).toBeGreaterThan(3);
}

/** Token ids to sweep: every id of an SPM vocabulary (as upstream), else the first 512 and a seeded sample. */
function sweepIds(model: Model): number[] {
  const n = model.info.vocabSize;
  if (model.info.vocabType === "spm" || n <= 8192) return Array.from({ length: n }, (_, i) => i);
  const rng = new Rng(n);
  const ids = new Set<number>(Array.from({ length: 512 }, (_, i) => i));
  while (ids.size < 8192) ids.add(rng.int(0, n - 1));
  return [...ids].sort((a, b) => a - b);
}

/** test-tokenizer-1-{bpe,spm}.cpp: detokenize(token) → tokenize(parse_special) → detokenize is stable. */
function checkTokenTexts(model: Model): void {
  const failures: string[] = [];
  let checked = 0;
  for (const id of sweepIds(model)) {
    // Like the C++ test, skip tokens whose bytes are not valid UTF-8 on their own (byte tokens).
    if (utf8OrUndefined(model.tokenToBytes(id, { special: true })) === undefined) continue;
    const text = model.detokenize([id], { unparseSpecial: true });
    const again = model.detokenize(model.tokenize(text, { addSpecial: false, parseSpecial: true }), { unparseSpecial: true });
    checked++;
    if (again !== text && failures.length < 10) failures.push(`${id}: ${JSON.stringify(text)} -> ${JSON.stringify(again)}`);
  }
  expect(checked).toBeGreaterThan(1000);
  expect(failures).toEqual([]);
}

/**
 * The code-point half of test-tokenizer-1: one code point in, the same code point out. A byte
 * that has no token in the vocabulary (Falcon has none for most C0 controls) is dropped by
 * llama.cpp's BPE; such code points are counted, not failed.
 */
function checkCodePoints({ model, texts }: Vocab): void {
  const known = new Set<string>(Array.from(texts));
  const hasByte = (b: number) => known.has(gpt2ByteChar(b)) || known.has(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  const rng = new Rng(0x1f600);
  const failures: string[] = [];
  let unrepresentable = 0;
  for (let k = 0; k < 2000; k++) {
    const cp = k < 128 ? k + 1 : rng.int(0x80, 0x10ffff);
    // The same exclusions as llama.cpp: surrogates, the unassigned planes 4 to 13, and "▁"
    // (U+2581), which SentencePiece uses for a space.
    if ((cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x40000 && cp <= 0xe0000) || cp === 0x2581) continue;
    const text = String.fromCodePoint(cp);
    const parseSpecial = model.info.vocabType === "spm";
    const back = model.detokenize(model.tokenize(text, { addSpecial: false, parseSpecial }), { unparseSpecial: true });
    if (back === text) continue;
    if (![...Buffer.from(text, "utf8")].every(hasByte)) unrepresentable++;
    else if (failures.length < 10) failures.push(`U+${cp.toString(16)} -> ${JSON.stringify(back)}`);
  }
  expect(failures).toEqual([]);
  expect(unrepresentable).toBeLessThan(64);
}

/** GGUF token types (tokenizer.ggml.token_type) and the attribute llama.cpp derives from each. */
const TOKEN_TYPE_KIND: Record<number, string> = { 1: "normal", 2: "unknown", 3: "control", 4: "userDefined", 5: "unused", 6: "byte" };
const KINDS = ["normal", "unknown", "control", "userDefined", "unused", "byte"] as const;

/**
 * tokenText and tokenAttributes against the GGUF arrays. llama.cpp adds the control flag to the
 * special tokens it recognises by their text (end of turn, FIM, ...) and the unused flag to some,
 * and re-types a handful of end-of-generation tokens (llama-vocab.cpp); nothing else changes.
 */
function checkAttributes({ model, texts, types }: Vocab): void {
  expect(texts.length).toBe(model.info.vocabSize);
  const wrongText: number[] = [];
  const retyped: string[] = [];
  const extraFlags = new Set<string>();
  for (const id of sweepIds(model)) {
    if (model.tokenText(id) !== texts[id]) wrongText.push(id);
    const attrs = model.tokenAttributes(id);
    const expected = types ? (TOKEN_TYPE_KIND[types[id]] ?? "undefined") : "normal";
    const kinds: string[] = KINDS.filter((k) => attrs[k]);
    if (!kinds.includes(expected)) retyped.push(`${id} ${JSON.stringify(texts[id])}: ${expected} -> ${kinds.join("+")}`);
    for (const k of kinds) if (k !== expected) extraFlags.add(k);
  }
  expect(wrongText).toEqual([]);
  expect(retyped.length, retyped.join(", ")).toBeLessThanOrEqual(2);
  expect([...extraFlags].filter((k) => k !== "control" && k !== "unused")).toEqual([]);
}
