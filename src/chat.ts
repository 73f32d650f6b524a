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
import { DisposedError, LlamaError, invalidArgument } from "./errors.js";
import type { Model } from "./model.js";
import { binding, type NativeChatTemplate } from "./native.js";
import { rejectUnknownKeys } from "./options/suggest.js";

/** The roles every template knows; templates may accept others (e.g. "tool_response"). */
export type ChatRole = "system" | "user" | "assistant" | "tool";

/** One message of a conversation. */
export interface ChatMessage {
  /** Who speaks: one of {@link ChatRole}, or another role the template accepts. */
  role: ChatRole | (string & {});
  /** What they say. */
  content: string;
}

/** A JSON value, as a Jinja template variable. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

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
    const r = await this.#native.apply(messages, {
      addGenerationPrompt,
      engine: this.engine,
      ...(kwargs ? { kwargs } : {}),
    });
    return { text: r.prompt, engine: this.engine, stops: r.additionalStops, generationPrompt: r.generationPrompt };
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
  const { addGenerationPrompt, variables, ...templateOptions } = options;
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
  return (await template.render(messages, { addGenerationPrompt, variables })).text;
}
