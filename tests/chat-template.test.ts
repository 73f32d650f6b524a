/**
 * Chat templates, checked against llama.cpp's own template test: the test cases are read from
 * vendor/llama.cpp/tests/test-chat-template.cpp at run time (a small C++ lexer below), so every
 * case llama.cpp holds is checked, with both of llama.cpp's engines.
 */
import fs from "node:fs";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ChatTemplate, LlamaError, builtinChatTemplates, loadModel, renderChat, type ChatMessage, type Model } from "../src/index.js";
import { LLAMA2_CHAT_TEMPLATE } from "../src/fixtures/llama.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";

// --- A lexer for the C++ of test-chat-template.cpp: string literals (escapes, prefixes, raw
// strings, adjacent literals joined), /* .field= */ labels, comments, identifiers, punctuation.

type Token =
  | { kind: "string"; value: string }
  | { kind: "label"; name: string }
  | { kind: "ident"; value: string }
  | { kind: "punct"; value: string };

const SIMPLE_ESCAPES: Record<string, number> = { n: 10, t: 9, r: 13, "\\": 92, '"': 34, "'": 39, "?": 63, a: 7, b: 8, f: 12, v: 11 };

/** Reads a quoted literal starting at src[start] (the quote); returns its UTF-8 bytes and the end. */
function readQuoted(src: string, start: number): { bytes: number[]; end: number } {
  const quote = src[start];
  const bytes: number[] = [];
  let i = start + 1;
  for (;;) {
    if (i >= src.length) throw new Error(`unterminated literal at ${start}`);
    const c = src[i];
    if (c === quote) return { bytes, end: i + 1 };
    if (c === "\n") throw new Error(`newline in literal at ${start}`);
    if (c !== "\\") {
      const cp = src.codePointAt(i) as number;
      bytes.push(...Buffer.from(String.fromCodePoint(cp), "utf8"));
      i += cp > 0xffff ? 2 : 1;
      continue;
    }
    const e = src[i + 1];
    if (e in SIMPLE_ESCAPES) {
      bytes.push(SIMPLE_ESCAPES[e]);
      i += 2;
    } else if (/[0-7]/.test(e)) {
      const m = /^[0-7]{1,3}/.exec(src.slice(i + 1)) as RegExpExecArray;
      bytes.push(parseInt(m[0], 8) & 0xff);
      i += 1 + m[0].length;
    } else if (e === "x") {
      const m = /^[0-9a-fA-F]+/.exec(src.slice(i + 2));
      if (!m) throw new Error(`bad \\x escape at ${i}`);
      bytes.push(parseInt(m[0], 16) & 0xff);
      i += 2 + m[0].length;
    } else if (e === "u" || e === "U") {
      const n = e === "u" ? 4 : 8;
      const hex = src.slice(i + 2, i + 2 + n);
      if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) throw new Error(`bad \\${e} escape at ${i}`);
      bytes.push(...Buffer.from(String.fromCodePoint(parseInt(hex, 16)), "utf8"));
      i += 2 + n;
    } else {
      throw new Error(`unknown escape \\${e} at ${i}`);
    }
  }
}

function lexCpp(src: string): Token[] {
  const tokens: Token[] = [];
  const pushString = (value: string) => {
    const last = tokens[tokens.length - 1];
    if (last?.kind === "string") last.value += value; // adjacent literals are one literal
    else tokens.push({ kind: "string", value });
  };
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) {
      i++;
    } else if (src.startsWith("//", i)) {
      const nl = src.indexOf("\n", i);
      i = nl < 0 ? src.length : nl + 1;
    } else if (src.startsWith("/*", i)) {
      const end = src.indexOf("*/", i + 2);
      if (end < 0) throw new Error(`unterminated comment at ${i}`);
      const label = /^\s*\.(\w+)\s*=?\s*$/.exec(src.slice(i + 2, end));
      if (label) tokens.push({ kind: "label", name: label[1] });
      i = end + 2;
    } else if (c === '"') {
      const { bytes, end } = readQuoted(src, i);
      pushString(Buffer.from(bytes).toString("utf8"));
      i = end;
    } else if (c === "'") {
      i = readQuoted(src, i).end; // a character literal: skipped
    } else if (/[A-Za-z_0-9]/.test(c)) {
      const word = (/^[A-Za-z_0-9]+/.exec(src.slice(i)) as RegExpExecArray)[0];
      i += word.length;
      if (src[i] === '"' && /^(u8|u|U|L)?R$/.test(word)) {
        const open = src.indexOf("(", i);
        const delimiter = src.slice(i + 1, open);
        const close = src.indexOf(`)${delimiter}"`, open);
        if (close < 0) throw new Error(`unterminated raw string at ${i}`);
        pushString(src.slice(open + 1, close));
        i = close + delimiter.length + 2;
      } else if (src[i] === '"' && /^(u8|u|U|L)$/.test(word)) {
        continue; // a prefix: the literal follows
      } else {
        tokens.push({ kind: "ident", value: word });
      }
    } else {
      tokens.push({ kind: "punct", value: c });
      i++;
    }
  }
  return tokens;
}

// --- A parser for brace initializers: { /* .label= */ value, ... }.

type Value = string | boolean | Array<{ label?: string; value: Value }>;

function parseValue(tokens: Token[], at: { i: number }): Value {
  const t = tokens[at.i++];
  if (t.kind === "string") return t.value;
  if (t.kind === "ident" && (t.value === "true" || t.value === "false")) return t.value === "true";
  if (t.kind === "ident" && t.value === "U8C") {
    expectPunct(tokens, at, "(");
    const inner = parseValue(tokens, at);
    expectPunct(tokens, at, ")");
    return inner;
  }
  if (t.kind === "punct" && t.value === "{") {
    const items: Array<{ label?: string; value: Value }> = [];
    for (;;) {
      const next = tokens[at.i];
      if (next.kind === "punct" && next.value === "}") {
        at.i++;
        return items;
      }
      let label: string | undefined;
      if (next.kind === "label") {
        label = next.name;
        at.i++;
      }
      items.push({ label, value: parseValue(tokens, at) });
      const sep = tokens[at.i++];
      if (sep.kind === "punct" && sep.value === "}") return items;
      if (!(sep.kind === "punct" && sep.value === ",")) throw new Error(`expected , or } in an initializer, got ${JSON.stringify(sep)}`);
    }
  }
  throw new Error(`unexpected token ${JSON.stringify(t)}`);
}

function expectPunct(tokens: Token[], at: { i: number }, value: string): void {
  const t = tokens[at.i++];
  if (t.kind !== "punct" || t.value !== value) throw new Error(`expected ${value}, got ${JSON.stringify(t)}`);
}

/** The initializer that follows `name {` (the first such place). */
function initializerOf(tokens: Token[], name: string): Value {
  for (let i = 0; i + 1 < tokens.length; i++) {
    const t = tokens[i];
    const n = tokens[i + 1];
    if (t.kind === "ident" && t.value === name && n.kind === "punct" && n.value === "{") return parseValue(tokens, { i: i + 1 });
  }
  throw new Error(`no initializer for ${name}`);
}

interface TemplateCase {
  name: string;
  template_str: string;
  expected_output: string;
  expected_output_jinja: string;
  bos_token: string;
  eos_token: string;
  supported_with_jinja: boolean;
  extra_conversation: ChatMessage[];
}

// The TestCase struct's fields in declaration order, with their defaults.
const FIELDS = ["name", "template_str", "expected_output", "expected_output_jinja", "bos_token", "eos_token", "supported_with_jinja", "extra_conversation"] as const;

function asString(v: Value, what: string): string {
  if (typeof v !== "string") throw new Error(`${what} is not a string`);
  return v;
}

function asMessages(v: Value, what: string): ChatMessage[] {
  if (!Array.isArray(v)) throw new Error(`${what} is not a list`);
  return v.map(({ value }, k) => {
    if (!Array.isArray(value) || value.length !== 2) throw new Error(`${what}[${k}] is not {role, content}`);
    return { role: asString(value[0].value, `${what}[${k}].role`), content: asString(value[1].value, `${what}[${k}].content`) };
  });
}

function toCase(v: Value, index: number): TemplateCase {
  if (!Array.isArray(v)) throw new Error(`test case ${index} is not an initializer`);
  const c: TemplateCase = {
    name: "", template_str: "", expected_output: "", expected_output_jinja: "", bos_token: "", eos_token: "",
    supported_with_jinja: true, extra_conversation: [],
  };
  v.forEach(({ label, value }, k) => {
    const field = FIELDS[k];
    if (field === undefined || (label !== undefined && label !== field)) throw new Error(`test case ${index}: field ${k} is labelled ${label}, expected ${field}`);
    if (field === "supported_with_jinja") {
      if (typeof value !== "boolean") throw new Error(`test case ${index}: ${field} is not a boolean`);
      c.supported_with_jinja = value;
    } else if (field === "extra_conversation") {
      c.extra_conversation = asMessages(value, `test case ${index}.${field}`);
    } else {
      c[field] = asString(value, `test case ${index}.${field}`);
    }
  });
  return c;
}

const testFile = path.join(repoRoot, "vendor", "llama.cpp", "tests", "test-chat-template.cpp");
const tokens = lexCpp(fs.readFileSync(testFile, "utf8"));
const conversation = asMessages(initializerOf(tokens, "conversation"), "conversation");
const cases = (() => {
  const list = initializerOf(tokens, "test_cases");
  if (!Array.isArray(list)) throw new Error("test_cases is not a list");
  return list.map(({ value }, k) => toCase(value, k));
})();

describe("llama.cpp's chat template test cases (tests/test-chat-template.cpp)", () => {
  it("reads the cases and the conversation from the C++ file", () => {
    expect(cases.length).toBeGreaterThan(20);
    expect(conversation).toEqual([
      { role: "system", content: "You are a helpful assistant" },
      { role: "user", content: "Hello" },
      { role: "assistant", content: "Hi there" },
      { role: "user", content: "Who are you" },
      { role: "assistant", content: "   I am an assistant   " },
      { role: "user", content: "Another question" },
    ]);
    // Spot checks of the lexer: escapes, U8C(...) literals, defaults, and the one unsupported case.
    const first = cases[0];
    expect(first.template_str.startsWith("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'")).toBe(true);
    expect(first.expected_output.endsWith("<|im_start|>assistant\n")).toBe(true);
    expect(cases.find((c) => c.name === "MiniCPM-3B-OpenHermes-2.5-v2-GGUF")?.expected_output).toContain("<用户>Hello<AI>");
    expect(cases.filter((c) => !c.supported_with_jinja).map((c) => c.name)).toEqual(["ai-sage/GigaChat-20B-A3B-instruct"]);
    expect(cases.filter((c) => c.extra_conversation.length > 0).length).toBeGreaterThanOrEqual(3);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  it("refuses an unknown template on the built-in path, as llama.cpp does", async () => {
    const error = await renderChat("INVALID TEMPLATE", conversation, { engine: "builtin" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlamaError);
    expect((error as LlamaError).code).toBe("ERR_TEMPLATE_INVALID");
  });

  describe.each(cases)("$name", (c) => {
    const messages = [...conversation, ...c.extra_conversation];

    it("built-in templates (llama_chat_apply_template) give expected_output", async () => {
      expect(await renderChat(c.template_str, messages, { engine: "builtin" })).toBe(c.expected_output);
    });

    it.runIf(c.supported_with_jinja)("the Jinja engine (common_chat_templates_apply) gives expected_output_jinja", async () => {
      const text = await renderChat(c.template_str, messages, { engine: "jinja", bosToken: c.bos_token, eosToken: c.eos_token });
      expect(text).toBe(c.expected_output_jinja || c.expected_output);
    });
  });
});

describe("chat templates of models and custom templates", () => {
  let model: Model;
  let gpt2: Model;
  const chat: ChatMessage[] = [
    { role: "system", content: "You are terse." },
    { role: "user", content: "Hello" },
    { role: "assistant", content: "Hi there" },
    { role: "user", content: "Who are you" },
  ];
  const chatml =
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n" +
    "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n";

  beforeAll(async () => {
    model = await loadModel(fixturePath("llama-tiny-f32"));
    gpt2 = await loadModel(fixturePath("gpt2-tiny-f32"));
  });
  afterAll(() => {
    model?.dispose();
    gpt2?.dispose();
  });

  it("renders with the model's own tokenizer.chat_template (Jinja, the model's BOS/EOS)", async () => {
    expect(model.chatTemplate).toBe(LLAMA2_CHAT_TEMPLATE);
    const text = await renderChat(model, chat);
    // bos_token + '[INST] ' ... with the model's "<s>"/"</s>"; the leading BOS text is dropped
    // because the tokenizer adds BOS itself (llama.cpp does the same).
    expect(text).toBe("[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] Who are you [/INST]");
    const template = new ChatTemplate(model);
    expect(template.engine).toBe("jinja");
    expect(template.source).toBe(LLAMA2_CHAT_TEMPLATE);
    const rendered = await template.render(chat);
    expect(rendered.text).toBe(text);
    expect(rendered.engine).toBe("jinja");
  });

  it("tokenizes the rendered special tokens as special tokens", async () => {
    const text = await renderChat(model, chat);
    const tokens = model.tokenize(text, { parseSpecial: true });
    const { bos, eos } = model.specialTokens;
    expect(tokens[0]).toBe(bos);
    expect([...tokens].filter((t) => t === bos)).toHaveLength(2);
    expect([...tokens].filter((t) => t === eos)).toHaveLength(1);
  });

  it("renders with llama.cpp's built-in llama2 template when asked (engine: 'builtin')", async () => {
    // llama.cpp recognises the template as Llama 2 with a system prompt; its hand-written version
    // puts no spaces around the answer nor a BOS between turns (its own test records the same
    // difference for Llama-2-style templates).
    const builtin = await renderChat(model, chat, { engine: "builtin" });
    expect(builtin).toBe("[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]");
    expect(new ChatTemplate(model, { engine: "builtin" }).engine).toBe("builtin");
  });

  it("reports a template's raise_exception as ERR_TEMPLATE_INVALID with the template's message", async () => {
    const error = await renderChat(model, [{ role: "user", content: "a" }, { role: "user", content: "b" }]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlamaError);
    expect((error as LlamaError).code).toBe("ERR_TEMPLATE_INVALID");
    expect((error as LlamaError).message).toContain("Conversation roles must alternate");
  });

  it("renders a custom Jinja template, with or without the generation prompt, and template variables", async () => {
    const template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{{ greeting | default('') }}{% endif %}";
    const two = chat.slice(1, 3);
    expect(await renderChat(model, two, { template })).toBe("<user>Hello\n<assistant>Hi there\n<assistant>");
    expect(await renderChat(model, two, { template, addGenerationPrompt: false })).toBe("<user>Hello\n<assistant>Hi there\n");
    expect(await renderChat(template, two, { variables: { greeting: "Hey" } })).toBe("<user>Hello\n<assistant>Hi there\n<assistant>Hey");
    // Without a model, bos/eos are what is given.
    expect(await renderChat("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}", two, { bosToken: "[B]", eosToken: "[E]" })).toBe("[B]Hello[E]");
  });

  it("uses a built-in template by name, and chatml for a model without a template", async () => {
    expect(builtinChatTemplates()).toEqual(expect.arrayContaining(["chatml", "llama2", "llama3", "gemma", "phi3"]));
    expect(await renderChat(model, chat, { template: "chatml" })).toBe(chatml);
    expect(new ChatTemplate(model, { template: "chatml" }).engine).toBe("builtin");
    expect(gpt2.chatTemplate).toBeNull();
    const fallback = new ChatTemplate(gpt2);
    expect([fallback.engine, fallback.source]).toEqual(["builtin", "chatml"]);
    expect(await renderChat(gpt2, chat)).toBe(chatml);
    // llama.cpp's Jinja path falls back to its own ChatML template too.
    expect(await renderChat(gpt2, chat, { engine: "jinja" })).toBe(chatml);
  });

  it("finds the text that ends an assistant turn, for use as a stop string", async () => {
    expect(await new ChatTemplate(model).endOfTurn()).toBe("</s>");
    expect(await new ChatTemplate(model, { template: "chatml" }).endOfTurn()).toBe("<|im_end|>");
    expect(await new ChatTemplate("{% for m in messages %}{{ m.content }}<|END|>\n{% endfor %}").endOfTurn()).toBe("<|END|>");
    expect(await new ChatTemplate("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}").endOfTurn()).toBeUndefined();
    expect(await new ChatTemplate("{{ raise_exception('no') }}").endOfTurn()).toBeUndefined();
  });

  it("rejects bad templates and arguments with typed errors", async () => {
    const parse = await renderChat("{% for x in %}", chat).catch((e: unknown) => e);
    expect((parse as LlamaError).code).toBe("ERR_TEMPLATE_INVALID");
    expect((parse as LlamaError).message).toMatch(/could not be parsed: .+/);
    const unknown = await renderChat(model, chat, { template: "{{ nope }}", engine: "builtin" }).catch((e: unknown) => e);
    expect((unknown as LlamaError).code).toBe("ERR_TEMPLATE_INVALID");
    const codeOf = async (f: () => Promise<unknown>): Promise<string> => {
      try {
        await f();
        return "resolved";
      } catch (e) {
        return (e as LlamaError).code;
      }
    };
    expect(await codeOf(() => renderChat(model, "nope" as never))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(() => renderChat(model, [{ role: "user" }] as never))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(() => renderChat(model, [{ role: "", content: "x" }]))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(() => renderChat("chatml", chat, { engine: "jinja" }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(() => renderChat("chatml", chat, { variables: { a: 1 } }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(() => renderChat("", chat))).toBe("ERR_INVALID_ARGUMENT");
    const disposable = await loadModel(fixturePath("llama-tiny-f32"), { vocabOnly: true });
    expect(await renderChat(disposable, chat)).toBe(await renderChat(model, chat));
    disposable.dispose();
    expect(await codeOf(() => renderChat(disposable, chat))).toBe("ERR_DISPOSED");
  });

  it("takes one vocabulary of options, refusing unknown names with the nearest known one", async () => {
    const messageOf = async (f: () => unknown): Promise<string> => {
      try {
        await f();
        return "resolved";
      } catch (e) {
        expect((e as LlamaError).code).toBe("ERR_INVALID_ARGUMENT");
        return (e as LlamaError).message;
      }
    };
    expect(await messageOf(() => renderChat(model, chat, { addGenerationPromt: false } as never))).toBe(
      'Unknown option "addGenerationPromt" in renderChat options; did you mean "addGenerationPrompt"?',
    );
    expect(await messageOf(() => renderChat(model, chat, { tempalte: "chatml" } as never))).toBe(
      'Unknown option "tempalte" in renderChat options; did you mean "template"?',
    );
    expect(await messageOf(() => renderChat(model, chat, { engin: "builtin" } as never))).toContain('did you mean "engine"?');
    expect(await messageOf(() => new ChatTemplate(model, { tempalte: "chatml" } as never))).toBe(
      'Unknown option "tempalte" in ChatTemplate options; did you mean "template"?',
    );
    // The earlier name of `engine` says what replaced it.
    expect(await messageOf(() => renderChat(model, chat, { useJinja: false } as never))).toContain('engine: "jinja" or "builtin"');
    expect(await messageOf(() => renderChat(model, chat, { engine: "auto" as never }))).toMatch(/^engine must be "jinja" or "builtin"/);
    // What a ChatTemplate fixed when it was made cannot be changed per render.
    const template = new ChatTemplate(model, { engine: "builtin" });
    expect(await messageOf(() => template.render(chat, { engine: "jinja" } as never))).toContain('"engine" is fixed when a ChatTemplate is made');
    expect(await messageOf(() => template.render(chat, { variabels: {} } as never))).toContain('did you mean "variables"?');
    // The engine is named the same in and out, and a built-in template's error names the option.
    expect((await template.render(chat)).engine).toBe("builtin");
    const error = await renderChat("not a template", chat, { engine: "builtin" }).catch((e: unknown) => e);
    expect((error as LlamaError).code).toBe("ERR_TEMPLATE_INVALID");
    expect((error as LlamaError).message).toContain('engine: "jinja"');
  });
});
