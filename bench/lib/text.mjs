/**
 * Deterministic benchmark inputs: a varied text (English, code, numbers, several scripts, emoji)
 * from a seeded generator, and a prompt of an exact token count.
 */

/** mulberry32: a small seeded 32-bit generator; returns floats in [0, 1). */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  "the of and to in is was for that on with as by at from his her they this which have had are not but " +
  "be one all were we when there can an your more their if will would about out up them into time has " +
  "river mountain engine library window garden question evening history science village market letter " +
  "quickly quietly carefully suddenly always never often perhaps although because however therefore " +
  "build carry describe follow measure open remember return travel understand wonder explain discover"
).split(" ");

const MULTILINGUAL = [
  "Le renard brun rapide saute par-dessus le chien paresseux, près de l'église.",
  "Über den Wolken muss die Freiheit wohl grenzenlos sein, sagte der Pilot.",
  "Съешь же ещё этих мягких французских булок, да выпей чаю.",
  "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
  "我能吞下玻璃而不伤身体。今天天气很好，我们去公园散步吧。",
  "いろはにほへと ちりぬるを わかよたれそ つねならむ。東京は雨です。",
  "다람쥐 헌 쳇바퀴에 타고파. 오늘은 날씨가 좋네요.",
  "أبجد هوز حطي كلمن سعفص قرشت ثخذ ضظغ.",
  "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले।",
  "Lörem ipsüm dolör sit ämet, çonsectetur adipiscing élit — «quoted» „text“.",
  "שלום עולם! זהו טקסט לדוגמה.",
  "Tiếng Việt có dấu: Trăm năm trong cõi người ta.",
];

const EMOJI = ["😀", "🎉", "🚀", "👩‍💻", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "❤️", "👍🏽", "🧪", "🌍", "✨", "🐍", "🦀", "☕", "🤖"];

const CODE = [
  (r) => `function f${int(r, 1000)}(a, b) {\n  return a ${pick(r, ["+", "-", "*", "/", "%", "**"])} b;\n}\n`,
  (r) => `for (let i = 0; i < ${int(r, 4096)}; i++) {\n\tsum += values[i] * ${(r() * 10).toFixed(3)};\n}\n`,
  (r) => `def parse_${pick(r, WORDS)}(path: str) -> dict:\n    with open(path, "rb") as f:\n        return json.load(f)\n`,
  (r) => `#include <stdio.h>\nint main(void) { printf("%d\\n", ${int(r, 99999)}); return 0; }\n`,
  (r) => `SELECT id, name FROM users WHERE age > ${int(r, 90)} ORDER BY name LIMIT ${int(r, 100)};\n`,
  (r) => `const { ${pick(r, WORDS)}, ${pick(r, WORDS)} } = await import("./${pick(r, WORDS)}.js"); // TODO: cache\n`,
  (r) => `<div class="card-${int(r, 50)}"><span>${pick(r, WORDS)}</span></div>\n`,
  (r) => `{"id": ${int(r, 1e6)}, "ok": ${r() < 0.5}, "tags": ["${pick(r, WORDS)}", "${pick(r, WORDS)}"]}\n`,
];

function int(r, n) {
  return Math.floor(r() * n);
}

function pick(r, list) {
  return list[int(r, list.length)];
}

function sentence(r) {
  const n = 6 + int(r, 14);
  const words = Array.from({ length: n }, () => pick(r, WORDS));
  words[0] = words[0][0].toUpperCase() + words[0].slice(1);
  return `${words.join(" ")}${pick(r, [".", ".", ".", "!", "?", ";"])}`;
}

function numbers(r) {
  return pick(r, [
    () => `${int(r, 1e9)}`,
    () => (r() * 1e4 - 5e3).toFixed(int(r, 6)),
    () => `${2000 + int(r, 30)}-${String(1 + int(r, 12)).padStart(2, "0")}-${String(1 + int(r, 28)).padStart(2, "0")}`,
    () => `0x${int(r, 2 ** 31).toString(16)}`,
    () => `${(r() * 100).toFixed(1)}%`,
    () => `+1 (${100 + int(r, 900)}) ${100 + int(r, 900)}-${1000 + int(r, 9000)}`,
    () => `${(r() * 1e-6).toExponential(3)}`,
  ])();
}

/** About `bytes` bytes (UTF-8) of varied text, the same for the same seed. */
export function variedText(bytes, seed = 1) {
  const r = rng(seed);
  const parts = [];
  let size = 0;
  while (size < bytes) {
    const x = r();
    let part;
    if (x < 0.45) part = `${sentence(r)} `;
    else if (x < 0.65) part = pick(r, CODE)(r);
    else if (x < 0.77) part = `${numbers(r)} `;
    else if (x < 0.92) part = `${pick(r, MULTILINGUAL)} `;
    else part = `${pick(r, EMOJI)}${r() < 0.5 ? " " : ""}`;
    if (r() < 0.08) part += "\n\n";
    parts.push(part);
    size += Buffer.byteLength(part);
  }
  return parts.join("");
}

/** English prose of exactly `count` tokens for `model` (with the specials a fresh session adds). */
export function promptOfTokens(model, count, seed = 7) {
  const r = rng(seed);
  let text = "";
  while (model.tokenize(text).length < count + 16) text += `${sentence(r)} `;
  // Cut the token list near `count` and keep a cut whose text tokenizes back to exactly `count` tokens.
  const tokens = model.tokenize(text);
  for (let delta = 0; delta <= 8; delta++) {
    for (const n of [count - delta, count + delta]) {
      const candidate = model.detokenize(tokens.slice(0, n), { removeSpecial: true });
      if (model.tokenize(candidate).length === count) return candidate;
    }
  }
  throw new Error(`could not make a prompt of exactly ${count} tokens`);
}
