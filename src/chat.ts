/**
 * Chat templates: a conversation rendered into the prompt a model was trained on, with
 * llama.cpp's own engines (native/ChatTemplate.cc):
 *
 * - Jinja: llama.cpp's Jinja engine through common_chat_templates_apply (what llama-server runs
 *   with --jinja), with the model's `tokenizer.chat_template` or a template string.
 * - Built-in: llama_chat_apply_template, llama.cpp's hand-written versions of the common
 *   templates ("chatml", "llama2", "llama3", ...), recognised from a template's text or named.
 *
 * ```ts
 * const prompt = await renderChat(model, [
 *   { role: "system", content: "You are terse." },
 *   { role: "user", content: "Hi" },
 * ]);
 * ```
 */
import { randomBytes } from "node:crypto";

import { DisposedError, LlamaError, describe, invalidArgument } from "./errors.js";
import { MEDIA_MARKER, type MediaSource } from "./media.js";
import type { Model } from "./model.js";
import { binding, type NativeChatMessage, type NativeChatTemplate, type NativeToolRenderOptions, type NativeToolRenderOutputs } from "./native.js";
import { rejectUnknownKeys } from "./options/suggest.js";

/** The roles every template knows; templates may accept others (e.g. "tool_response"). */
export type ChatRole = "system" | "user" | "assistant" | "tool";

/**
 * One part of a message's content: text, or an image or audio (bytes or a file path; a model
 * with a projector, see src/media.ts). A part of another type is refused with ERR_INVALID_ARGUMENT.
 */
export type ChatContentPart = { type: "text"; text: string } | { type: "image"; data: MediaSource } | { type: "audio"; data: MediaSource };

/** One message of a conversation. */
export interface ChatMessage {
  /** Who speaks: one of {@link ChatRole}, or another role the template accepts. */
  role: ChatRole | (string & {});
  /**
   * What they say: text, or a list of parts with images and audio. Rendered, the parts become one
   * text as llama-server joins them: text parts on separate lines, each image or audio as
   * libmtmd's marker ("<__media__>") with no line break around it.
   */
  content: string | ChatContentPart[];
  /** An assistant message's reasoning (thinking) text, kept apart from its content. */
  reasoning?: string;
  /** The tool calls an assistant message made. */
  toolCalls?: readonly ChatMessageToolCall[];
  /** A tool message: the id of the call it answers. */
  toolCallId?: string;
  /** A tool message: the name of the tool that answered (templates that show it). */
  toolName?: string;
}

/** A tool call as a message of the history holds it. */
export interface ChatMessageToolCall {
  /** The call's id, which the tool message answering it names as `toolCallId`. */
  id: string;
  /** The tool's name. */
  name: string;
  /** The arguments, as JSON text. */
  arguments: string;
}

/** A tool the model may call, as a template renders it. */
export interface ChatToolDefinition {
  /** The function's name. */
  name: string;
  /** What it does, for the model. */
  description?: string;
  /** A JSON Schema of its arguments (an object schema); default: no arguments. */
  parameters?: JsonSchema;
}

/** Which tool calls the model may make: any or none ("auto"), none, at least one ("required"). */
export type ChatToolChoiceMode = "auto" | "none" | "required";

/** A JSON value, as a Jinja template variable. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A JSON value that may be read-only (a schema written `as const`). */
export type ReadonlyJsonValue = string | number | boolean | null | readonly ReadonlyJsonValue[] | { readonly [key: string]: ReadonlyJsonValue };

/** A JSON Schema, as tools take their arguments' schema. */
export type JsonSchema = { readonly [key: string]: ReadonlyJsonValue };

/**
 * Which of llama.cpp's engines renders: "jinja" (its Jinja engine, common_chat_templates_apply)
 * or "builtin" (its hand-written templates, llama_chat_apply_template). The same name and values
 * are the `engine` option and the `engine` a render reports.
 */
export type ChatTemplateEngine = "jinja" | "builtin";

/**
 * The options of rendering a chat: all of them for {@link renderChat}; a {@link ChatTemplate}
 * takes the template's part ({@link ChatTemplateOptions}) when it is made and the rest at each
 * render. An option not listed here is refused with ERR_INVALID_ARGUMENT.
 */
export interface RenderChatOptions {
  /**
   * A Jinja template, or the name of one of llama.cpp's built-in templates (see
   * builtinChatTemplates()). With a model, it replaces the model's own template.
   */
  template?: string;
  /**
   * The engine that renders. Default: "jinja" for a template text (the model's or the one
   * given); "builtin" for a template name, and for a model without a template (then "chatml", as
   * llama.cpp does). "builtin" recognises the common templates from their text; a built-in name
   * cannot be rendered with "jinja".
   */
  engine?: ChatTemplateEngine;
  /** The `bos_token` a Jinja template string sees when there is no model (default ""). */
  bosToken?: string;
  /** The `eos_token` a Jinja template string sees when there is no model (default ""). */
  eosToken?: string;
  /** End with the start of an assistant turn, for the model to write it (default true). */
  addGenerationPrompt?: boolean;
  /**
   * Extra variables for a Jinja template (llama-server's chat_template_kwargs), e.g.
   * `{ enable_thinking: false }`; refused with the "builtin" engine.
   */
  variables?: Readonly<Record<string, JsonValue>>;
  /** Tools the model may call, rendered by the template (Jinja engine); see {@link ChatToolDefinition}. */
  tools?: readonly ChatToolDefinition[];
  /** Which calls the model may make (default "auto"). */
  toolChoice?: ChatToolChoiceMode;
  /** Whether the model may make several calls in one reply (default false). */
  parallelToolCalls?: boolean;
  /** The template's enable-thinking switch, for templates that have one (default: the template's). */
  enableThinking?: boolean;
  /**
   * "auto": the reasoning of thinking models is split from the content by the output parser
   * ({@link RenderedChat.format}); "none": it stays in the content (default).
   */
  reasoningFormat?: "auto" | "none";
}

/** The part of {@link RenderChatOptions} fixed when a {@link ChatTemplate} is made. */
export type ChatTemplateOptions = Pick<RenderChatOptions, "template" | "engine" | "bosToken" | "eosToken">;

/** Which part each option belongs to (every key of RenderChatOptions, checked by the compiler). */
const OPTION_PARTS: { readonly [K in keyof RenderChatOptions]-?: K extends keyof ChatTemplateOptions ? "template" : "render" } = {
  template: "template",
  engine: "template",
  bosToken: "template",
  eosToken: "template",
  addGenerationPrompt: "render",
  variables: "render",
  tools: "render",
  toolChoice: "render",
  parallelToolCalls: "render",
  enableThinking: "render",
  reasoningFormat: "render",
};
const ALL_KEYS: readonly string[] = Object.keys(OPTION_PARTS);
/** The keys of {@link ChatTemplateOptions}. @internal ChatSession passes these on. */
export const CHAT_TEMPLATE_KEYS: readonly string[] = ALL_KEYS.filter((k) => OPTION_PARTS[k as keyof RenderChatOptions] === "template");
const RENDER_KEYS: readonly string[] = ALL_KEYS.filter((k) => OPTION_PARTS[k as keyof RenderChatOptions] === "render");

/**
 * Throws ERR_INVALID_ARGUMENT unless `options` is an object with only `known` keys; `useJinja`
 * (the earlier name of `engine`) is refused with what replaced it.
 * @internal Used by ChatSession too.
 */
export function checkChatOptions(where: string, options: unknown, known: readonly string[]): void {
  if (options === null || typeof options !== "object" || Array.isArray(options)) invalidArgument(where, "an object", options);
  if ("useJinja" in options) {
    throw new LlamaError("ERR_INVALID_ARGUMENT", `Unknown option "useJinja" in ${where}; the engine is chosen with engine: "jinja" or "builtin"`);
  }
  rejectUnknownKeys(where, options, known);
}

/** What a render gives: the prompt and what the template's format adds to it. */
export interface RenderedChat {
  /** The prompt text. Special tokens appear as text: tokenize it with `parseSpecial: true`. */
  text: string;
  /** The engine that rendered it. */
  engine: ChatTemplateEngine;
  /** Stop strings the template's format adds beyond the model's end-of-generation tokens. */
  stops: string[];
  /** The text that starts the assistant's turn (Jinja engine; "" otherwise). */
  generationPrompt: string;
  /**
   * The images and audio of the messages, in the order of their markers ("<__media__>") in
   * `text` (empty for a conversation of text only): what a session evaluates with it.
   */
  media: RenderedMedia[];
  /**
   * The output format llama.cpp's common/chat chose for this template with these options (only
   * when the render was given tool or thinking options): the grammar that constrains tool calls
   * (lazy: it applies from the first trigger on), and the parser that splits the output.
   */
  format?: ChatOutputFormat;
}

/** An image or audio part of a rendered conversation: its data, and where it is among the messages. */
export interface RenderedMedia {
  type: "image" | "audio";
  data: MediaSource;
  /** Index of its message in the messages rendered. */
  message: number;
  /** Index of the part in that message's content. */
  part: number;
}

/** How a template's replies are written and parsed (llama.cpp's common_chat_params). */
export interface ChatOutputFormat extends NativeToolRenderOutputs {
  /** The generation prompt the parser and the grammar start from. */
  generationPrompt: string;
  /** The reasoning format the parser was built for. */
  reasoningFormat: "auto" | "none";
}

let builtins: ReadonlySet<string> | undefined;

/** The names of llama.cpp's built-in chat templates ("chatml", "llama2", "llama3", ...). */
export function builtinChatTemplates(): string[] {
  return [...builtinSet()];
}

function builtinSet(): ReadonlySet<string> {
  builtins ??= new Set(binding().builtinChatTemplates());
  return builtins;
}

/**
 * A chat template kept for many renders: what {@link renderChat} uses underneath, for callers
 * that hold on to a template (ChatSession, the server) or need more than the text
 * ({@link RenderedChat}: stops, engine, endOfTurn()). It takes the options of renderChat, split:
 * the template's part ({@link ChatTemplateOptions}) when it is made, the rest at each render. The
 * Jinja template is parsed on the first render, off the event loop, and reused.
 */
export class ChatTemplate {
  /** The engine every render of this template uses (the `engine` option, or its default). */
  readonly engine: ChatTemplateEngine;
  /** The template's text or built-in name ("chatml" for a model without a template). */
  readonly source: string;
  readonly #native: NativeChatTemplate;
  #endOfTurn: Promise<string | undefined> | undefined;

  /**
   * A template from a model (its own, or `options.template`) or from a template string. Throws
   * ERR_INVALID_ARGUMENT for a bad or unknown option; the template is parsed on the first render.
   */
  constructor(modelOrTemplate: Model | string, options: ChatTemplateOptions = {}) {
    checkChatOptions("ChatTemplate options", options, CHAT_TEMPLATE_KEYS);
    const { template, engine, bosToken, eosToken } = options;
    if (template !== undefined && (typeof template !== "string" || template === "")) {
      invalidArgument("template", "a non-empty string", template);
    }
    if (engine !== undefined && engine !== "jinja" && engine !== "builtin") invalidArgument("engine", '"jinja" or "builtin"', engine);
    for (const [name, value] of [["bosToken", bosToken], ["eosToken", eosToken]] as const) {
      if (value !== undefined && typeof value !== "string") invalidArgument(name, "a string", value);
    }
    let model: Model | undefined;
    let custom = template;
    if (typeof modelOrTemplate === "string") {
      if (template !== undefined) invalidArgument("template", "undefined when the first argument is a template", template);
      if (modelOrTemplate === "") invalidArgument("template", "a non-empty string", modelOrTemplate);
      custom = modelOrTemplate;
    } else if (modelOrTemplate !== null && typeof modelOrTemplate === "object" && "native" in modelOrTemplate) {
      model = modelOrTemplate;
    } else {
      invalidArgument("modelOrTemplate", "a Model or a template string", modelOrTemplate);
    }
    const named = custom !== undefined && builtinSet().has(custom);
    if (named && engine === "jinja") {
      invalidArgument("engine", `"builtin" or undefined for the built-in template name "${custom}" (pass the template's text to render it with Jinja)`, engine);
    }
    const native = new (binding().ChatTemplate)(model ? model.native : null, {
      ...(custom === undefined ? {} : { template: custom }),
      ...(bosToken === undefined ? {} : { bosToken }),
      ...(eosToken === undefined ? {} : { eosToken }),
    });
    const text = native.source();
    this.engine = named ? "builtin" : (engine ?? (text !== "" ? "jinja" : "builtin"));
    this.source = text === "" ? "chatml" : text;
    this.#native = native;
  }

  /**
   * The text that ends an assistant turn in this template ("<|im_end|>" for ChatML, "</s>" for
   * Llama 2), found by rendering a turn; undefined when the template ends a turn with whitespace
   * only or not at all. As a stop string, it ends a reply where the model writes the end of its
   * turn as text rather than as an end-of-generation token.
   */
  endOfTurn(): Promise<string | undefined> {
    this.#endOfTurn ??= (async () => {
      const marker = "\u2063llama-napi-turn\u2063";
      try {
        const { text } = await this.render(
          [
            { role: "user", content: "Hi" },
            { role: "assistant", content: marker },
          ],
          { addGenerationPrompt: false },
        );
        const at = text.lastIndexOf(marker);
        const end = at < 0 ? "" : text.slice(at + marker.length).trim();
        return end === "" ? undefined : end;
      } catch {
        return undefined; // a template that cannot render this turn has no end marker to offer
      }
    })();
    return this.#endOfTurn;
  }

  /**
   * Renders a conversation (off the event loop), with the options of {@link RenderChatOptions}
   * that are not fixed by the template. Template errors reject with ERR_TEMPLATE_INVALID.
   */
  async render(messages: readonly ChatMessage[], options: Omit<RenderChatOptions, keyof ChatTemplateOptions> = {}): Promise<RenderedChat> {
    if (!Array.isArray(messages)) invalidArgument("messages", "an array of { role, content }", messages);
    if (options !== null && typeof options === "object") {
      const fixed = CHAT_TEMPLATE_KEYS.find((k) => k in options);
      if (fixed !== undefined) {
        throw new LlamaError("ERR_INVALID_ARGUMENT", `"${fixed}" is fixed when a ChatTemplate is made: pass it to new ChatTemplate(), or use renderChat()`);
      }
    }
    checkChatOptions("ChatTemplate.render options", options, RENDER_KEYS);
    const { addGenerationPrompt = true, variables } = options;
    const tools = toolRenderOptions(options);
    if (tools !== undefined && this.engine === "builtin") {
      throw new LlamaError("ERR_INVALID_ARGUMENT", "Tools and thinking options need the Jinja engine; this template renders with llama.cpp's built-in templates");
    }
    if (typeof addGenerationPrompt !== "boolean") invalidArgument("addGenerationPrompt", "a boolean", addGenerationPrompt);
    let kwargs: Record<string, string> | undefined;
    if (variables !== undefined) {
      if (variables === null || typeof variables !== "object" || Array.isArray(variables)) invalidArgument("variables", "an object", variables);
      if (this.engine === "builtin") {
        throw new LlamaError("ERR_INVALID_ARGUMENT", "Template variables need the Jinja engine; this template renders with llama.cpp's built-in templates");
      }
      kwargs = {};
      for (const [key, value] of Object.entries(variables)) kwargs[key] = JSON.stringify(value);
    }
    const media: RenderedMedia[] = [];
    // Each media part renders as a placeholder of its own, then libmtmd's marker: a template that
    // moves, drops or repeats messages keeps the media list in the order of the markers.
    let nonce = "";
    const placeholder = (k: number) => `<__media_${(nonce ||= randomBytes(6).toString("hex"))}_${k}__>`;
    const natives = messages.map((m, i) => nativeMessage(m, i, media, placeholder));
    const r = await this.#native.apply(natives, {
      addGenerationPrompt,
      engine: this.engine,
      ...(kwargs ? { kwargs } : {}),
      ...tools,
    });
    let text = r.prompt;
    const ordered: RenderedMedia[] = [];
    if (media.length > 0) {
      if (text.includes(MEDIA_MARKER)) {
        const at = messages.findIndex((m) => contentText(m.content, () => "").includes(MEDIA_MARKER));
        throw new LlamaError(
          "ERR_INVALID_ARGUMENT",
          `${at >= 0 ? `messages[${at}].content contains` : "The rendered conversation contains"} "${MEDIA_MARKER}", libmtmd's media marker, in a conversation with images or audio: give them as { type: "image" } or { type: "audio" } parts`,
        );
      }
      text = text.replace(new RegExp(`<__media_${nonce}_(\\d+)__>`, "g"), (_, k: string) => {
        ordered.push(media[Number(k)]!);
        return MEDIA_MARKER;
      });
    }
    const rendered: RenderedChat = { text, engine: this.engine, stops: r.additionalStops, generationPrompt: r.generationPrompt, media: ordered };
    if (tools !== undefined && r.format !== undefined) {
      rendered.format = {
        format: r.format,
        formatId: r.formatId ?? 0,
        grammar: r.grammar ?? "",
        grammarLazy: r.grammarLazy ?? false,
        grammarTriggers: r.grammarTriggers ?? [],
        preservedTokens: r.preservedTokens ?? [],
        parser: r.parser ?? "",
        supportsThinking: r.supportsThinking ?? false,
        thinkingStartTag: r.thinkingStartTag ?? "",
        thinkingEndTags: r.thinkingEndTags ?? [],
        generationPrompt: r.generationPrompt,
        reasoningFormat: tools.reasoningFormat ?? "none",
      };
    }
    return rendered;
  }
}

/** Recently used templates, so that renderChat() parses a template once. */
const CACHE_SIZE = 16;
const byModel = new WeakMap<Model, Map<string, ChatTemplate>>();
const byText = new Map<string, ChatTemplate>();

function cached(cache: Map<string, ChatTemplate>, key: string, make: () => ChatTemplate): ChatTemplate {
  let template = cache.get(key);
  if (template) {
    cache.delete(key);
  } else {
    template = make();
    if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  }
  cache.set(key, template);
  return template;
}

/**
 * Renders a conversation with a model's chat template (or `options.template`), or with a
 * template string: the one way to render a chat. Resolves to the prompt text; special tokens
 * appear as text, so tokenize it with `parseSpecial: true` (`session.prompt(text, { parseSpecial:
 * true })`). Templates are parsed once and kept (the 16 most recent per model, and without a
 * model); a {@link ChatTemplate} holds one for as long as it is needed. Unknown options are
 * refused with ERR_INVALID_ARGUMENT.
 */
export async function renderChat(
  modelOrTemplate: Model | string,
  messages: readonly ChatMessage[],
  options: RenderChatOptions = {},
): Promise<string> {
  checkChatOptions("renderChat options", options, ALL_KEYS);
  const { addGenerationPrompt, variables, tools, toolChoice, parallelToolCalls, enableThinking, reasoningFormat, ...templateOptions } = options;
  const key = JSON.stringify([templateOptions.template, templateOptions.engine, templateOptions.bosToken, templateOptions.eosToken]);
  let template: ChatTemplate;
  if (typeof modelOrTemplate === "string") {
    template = cached(byText, `${key}\0${modelOrTemplate}`, () => new ChatTemplate(modelOrTemplate, templateOptions));
  } else {
    if (modelOrTemplate === null || typeof modelOrTemplate !== "object") invalidArgument("modelOrTemplate", "a Model or a template string", modelOrTemplate);
    if (modelOrTemplate.disposed) throw DisposedError.of("Model");
    let cache = byModel.get(modelOrTemplate);
    if (!cache) byModel.set(modelOrTemplate, (cache = new Map()));
    template = cached(cache, key, () => new ChatTemplate(modelOrTemplate, templateOptions));
  }
  const toolOptions = Object.fromEntries(
    Object.entries({ tools, toolChoice, parallelToolCalls, enableThinking, reasoningFormat }).filter(([, v]) => v !== undefined),
  ) as Pick<RenderChatOptions, "tools" | "toolChoice" | "parallelToolCalls" | "enableThinking" | "reasoningFormat">;
  return (await template.render(messages, { addGenerationPrompt, variables, ...toolOptions })).text;
}

/**
 * Checks a message's content: a string, or an array of { type: "text", text }, { type: "image",
 * data } and { type: "audio", data } parts (data: a non-empty Uint8Array or file path).
 * @internal ChatSession checks messages with it too.
 */
export function checkContent(content: unknown, where: string): void {
  if (typeof content === "string") return;
  if (!Array.isArray(content)) invalidArgument(where, "a string or an array of content parts", content);
  content.forEach((p: unknown, j: number) => {
    const part = p as Record<string, unknown> | null;
    const name = `${where}[${j}]`;
    if (part === null || typeof part !== "object" || Array.isArray(part)) invalidArgument(name, '{ type: "text", text }, { type: "image", data } or { type: "audio", data }', p);
    if (part.type === "text") {
      if (typeof part.text !== "string") invalidArgument(`${name}.text`, "a string", part.text);
    } else if (part.type === "image" || part.type === "audio") {
      const { data } = part;
      if (!(data instanceof Uint8Array) && (typeof data !== "string" || data === "")) {
        invalidArgument(`${name}.data`, "a Uint8Array (the file's bytes) or a file path", data);
      }
    } else {
      throw new LlamaError("ERR_INVALID_ARGUMENT", `${name}.type must be "text", "image" or "audio"; got ${describe(part.type)}`);
    }
  });
}

/**
 * A content's text, as llama-server joins parts (common_chat_msg::to_json_oaicompat): text parts
 * on separate lines, no line break before or after a media part, which `media(part, j)` renders
 * (default: libmtmd's marker).
 */
function contentText(content: ChatMessage["content"], media: (part: ChatContentPart, j: number) => string = () => MEDIA_MARKER): string {
  if (typeof content === "string") return content;
  let text = "";
  let afterMedia = false;
  content.forEach((part, j) => {
    if (part.type === "text") {
      if (!afterMedia && text !== "") text += "\n";
      text += part.text;
      afterMedia = false;
    } else {
      text += media(part, j);
      afterMedia = true;
    }
  });
  return text;
}

/** The native form of a message: the fields it reads, checked; its media parts go to `media`, rendered by `placeholder`. */
function nativeMessage(m: ChatMessage, i: number, media: RenderedMedia[], placeholder: (k: number) => string): NativeChatMessage {
  const name = `messages[${i}]`;
  if (m === null || typeof m !== "object") invalidArgument(name, "a { role, content } message", m);
  checkContent(m.content, `${name}.content`);
  const content = contentText(m.content, (part, j) => {
    media.push({ type: part.type as "image" | "audio", data: (part as { data: MediaSource }).data, message: i, part: j });
    return placeholder(media.length - 1);
  });
  const out: NativeChatMessage = { role: m.role, content };
  for (const key of ["reasoning", "toolCallId", "toolName"] as const) {
    const value = m[key];
    if (value === undefined) continue;
    if (typeof value !== "string") invalidArgument(`${name}.${key}`, "a string", value);
    out[key] = value;
  }
  if (m.toolCalls !== undefined) {
    if (!Array.isArray(m.toolCalls)) invalidArgument(`${name}.toolCalls`, "an array of { id, name, arguments }", m.toolCalls);
    out.toolCalls = m.toolCalls.map((c: ChatMessageToolCall, j: number) => {
      if (c === null || typeof c !== "object" || typeof c.name !== "string" || typeof c.id !== "string" || typeof c.arguments !== "string") {
        invalidArgument(`${name}.toolCalls[${j}]`, "a { id, name, arguments } call with string fields", c);
      }
      return { id: c.id, name: c.name, arguments: c.arguments };
    });
  }
  return out;
}

/** The tool and thinking options of a render, checked; undefined when none was given. */
function toolRenderOptions(options: RenderChatOptions): NativeToolRenderOptions | undefined {
  const { tools, toolChoice, parallelToolCalls, enableThinking, reasoningFormat } = options;
  if (tools === undefined && toolChoice === undefined && parallelToolCalls === undefined && enableThinking === undefined && reasoningFormat === undefined) {
    return undefined;
  }
  const out: NativeToolRenderOptions = {};
  if (tools !== undefined) {
    if (!Array.isArray(tools)) invalidArgument("tools", "an array of { name, description?, parameters? }", tools);
    const seen = new Set<string>();
    out.tools = tools.map((t: ChatToolDefinition, i: number) => {
      if (t === null || typeof t !== "object" || typeof t.name !== "string" || !/^[A-Za-z0-9_.-]{1,128}$/.test(t.name)) {
        invalidArgument(`tools[${i}].name`, "a name of 1 to 128 letters, digits, _, . or -", t?.name);
      }
      if (seen.has(t.name)) invalidArgument(`tools[${i}].name`, "a name no other tool has", t.name);
      seen.add(t.name);
      if (t.description !== undefined && typeof t.description !== "string") invalidArgument(`tools[${i}].description`, "a string", t.description);
      const parameters = t.parameters ?? { type: "object", properties: {} };
      if (parameters === null || typeof parameters !== "object" || Array.isArray(parameters)) {
        invalidArgument(`tools[${i}].parameters`, "a JSON Schema object", parameters);
      }
      return { name: t.name, description: t.description ?? "", parameters: JSON.stringify(parameters) };
    });
  }
  if (toolChoice !== undefined) {
    if (toolChoice !== "auto" && toolChoice !== "none" && toolChoice !== "required") invalidArgument("toolChoice", '"auto", "none" or "required"', toolChoice);
    out.toolChoice = toolChoice;
  }
  for (const [key, value] of [["parallelToolCalls", parallelToolCalls], ["enableThinking", enableThinking]] as const) {
    if (value === undefined) continue;
    if (typeof value !== "boolean") invalidArgument(key, "a boolean", value);
    out[key] = value;
  }
  if (reasoningFormat !== undefined) {
    if (reasoningFormat !== "auto" && reasoningFormat !== "none") invalidArgument("reasoningFormat", '"auto" or "none"', reasoningFormat);
    out.reasoningFormat = reasoningFormat;
  }
  return out;
}
