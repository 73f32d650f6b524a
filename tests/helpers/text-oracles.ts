/**
 * Small, independent text oracles for the tokenizer tests: a seeded PRNG, the space clean-up
 * llama.cpp applies when it detokenizes, and BERT's basic tokenizer (as Hugging Face writes it).
 */
import { mulberry32 } from "./math.js";

/** Helpers on top of a PRNG. */
export class Rng {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

/**
 * The "clean_up_tokenization_spaces" step of llama.cpp's detokenizer (llama_vocab::impl::detokenize
 * in vendor/llama.cpp/src/llama-vocab.cpp), for vocabularies that have it (BPE by default, WPM).
 * It mimics Hugging Face's decode(): " ?", " !", " .", " ," lose their space; " ' " becomes "'";
 * " 's", " 'm", " 're", " 've" lose their space (" 't", " 'd", " 'll" keep it). Three passes, each
 * keeping the first character, exactly like the C++ (whose passes work on UTF-8 bytes; every
 * pattern is ASCII, so UTF-16 code units give the same result).
 */
export function llamaCleanSpaces(text: string): string {
  if (text.length === 0) return text;
  // Pass 1: " ?", " !", " .", " ," drop the space.
  let out = text[0];
  for (let i = 1; i < text.length; i++) {
    const x = text[i];
    if (text[i - 1] === " " && (x === "?" || x === "!" || x === "." || x === ",")) out = out.slice(0, -1);
    out += x;
  }
  // Pass 2: " ' " becomes "'" (the skipped space reads as NUL afterwards, as in the C++).
  const units = out.split("");
  out = units[0];
  for (let i = 1; i < units.length; i++) {
    const x = units[i];
    if (x === "'" && i + 1 < units.length && units[i - 1] === " " && units[i + 1] === " ") {
      out = out.slice(0, -1);
      units[++i] = "\0";
    }
    out += x;
  }
  // Pass 3: contractions " 's", " 'm", " 're", " 've" drop the space.
  const t = out;
  out = t[0];
  for (let i = 1; i < t.length; i++) {
    const x = t[i];
    if (t[i - 1] === " " && x === "'" && i + 1 < t.length) {
      const x1 = t[i + 1];
      if (x1 === "s" || x1 === "m") out = out.slice(0, -1);
      else if (i + 2 < t.length && ((x1 === "r" && t[i + 2] === "e") || (x1 === "v" && t[i + 2] === "e"))) out = out.slice(0, -1);
    }
    out += x;
  }
  return out;
}

/** Hugging Face BertTokenizer's Chinese-character ranges (BasicTokenizer._is_chinese_char). */
function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

/** BasicTokenizer._is_punctuation: ASCII non-alphanumerics count too, then Unicode P*. */
function isPunctuation(ch: string, cp: number): boolean {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
  return /\p{P}/u.test(ch);
}

/**
 * Hugging Face's BERT BasicTokenizer (do_lower_case, accents stripped, Chinese characters split):
 * the words WordPiece then cuts into pieces. Written from transformers' tokenization_bert.py, with
 * one documented difference that llama.cpp's WPM pre-processing has: it drops every combining
 * mark (\p{M}: Mn, Mc and Me), where Hugging Face drops only Mn. Devanagari's spacing vowel
 * signs (Mc) therefore vanish in llama.cpp ("दुनिया" → "दनय"; Hugging Face keeps "दनिया").
 */
export function bertBasicTokens(text: string): string[] {
  // _clean_text: drop NUL, U+FFFD and control characters; whitespace becomes a space.
  let cleaned = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd) continue;
    const isWs = ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || /\p{Zs}/u.test(ch);
    if (isWs) {
      cleaned += " ";
      continue;
    }
    if (/\p{C}/u.test(ch)) continue;
    cleaned += isCjk(cp) ? ` ${ch} ` : ch;
  }
  const words: string[] = [];
  for (const token of cleaned.split(" ").filter((w) => w !== "")) {
    const stripped = token.toLowerCase().normalize("NFD").replace(/\p{M}/gu, "");
    let current = "";
    for (const ch of stripped) {
      if (isPunctuation(ch, ch.codePointAt(0)!)) {
        if (current !== "") words.push(current);
        words.push(ch);
        current = "";
      } else {
        current += ch;
      }
    }
    if (current !== "") words.push(current);
  }
  return words;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** The bytes as a string if they are valid UTF-8, otherwise undefined. */
export function utf8OrUndefined(bytes: Uint8Array): string | undefined {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** GPT-2's bytes_to_unicode(): the printable character byte-level BPE vocabularies use for a byte. */
export function gpt2ByteChar(byte: number): string {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  if (printable(byte)) return String.fromCharCode(byte);
  let n = 0;
  for (let b = 0; b < byte; b++) if (!printable(b)) n++;
  return String.fromCharCode(256 + n);
}
