/**
 * The state of `llama-napi chat` and its slash commands: /clear, /system, /tokens, /save, /load.
 * A saved chat is one file: a magic line, the conversation as JSON, and the session's state
 * (session.saveState(): tokens, KV cache, logits), so that /load continues without evaluating the
 * conversation again.
 */
import fs from "node:fs";
import path from "node:path";

import { ChatSession } from "../chat-session.js";
import type { ChatMessage } from "../chat.js";
import type { Context } from "../context.js";
import { LlamaError } from "../errors.js";
import type { Session } from "../session.js";

const MAGIC = Buffer.from("LLAMA-NAPI-CHAT\n", "latin1");
const FORMAT_VERSION = 1;

/** What a saved chat's JSON part holds. */
interface SavedChat {
  version: number;
  model: string;
  systemPrompt: string | null;
  messages: ChatMessage[];
}

/** The chat of the command: one session, with a ChatSession over it that /clear, /system and /load replace. */
export class ChatState {
  readonly context: Context;
  readonly session: Session;
  chat: ChatSession;

  constructor(context: Context, options: { systemPrompt: string | undefined; template: string | undefined }) {
    this.context = context;
    this.session = context.createSession();
    this.chat = new ChatSession(context, { session: this.session, systemPrompt: options.systemPrompt, template: options.template });
  }

  /** The conversation without the system message. */
  history(): ChatMessage[] {
    const all = this.chat.messages;
    return this.chat.systemPrompt === undefined ? all : all.slice(1);
  }

  replace(systemPrompt: string | undefined, messages: ChatMessage[]): void {
    this.chat = new ChatSession(this.context, { session: this.session, systemPrompt, template: this.chat.template, messages });
  }

  dispose(): void {
    this.session.dispose();
  }
}

/** Runs a slash command; returns the text to show, or "quit". */
export async function runCommand(state: ChatState, line: string): Promise<string | "quit"> {
  const match = /^\/(\S+)\s*([\s\S]*)$/.exec(line.trim());
  const name = match?.[1] ?? "";
  const arg = match?.[2]?.trim() ?? "";
  switch (name) {
    case "help":
    case "?":
      return COMMANDS_HELP;
    case "quit":
    case "exit":
      return "quit";
    case "clear":
      state.session.truncate(0);
      state.replace(state.chat.systemPrompt, []);
      return "(conversation cleared)";
    case "system":
      if (arg === "") return state.chat.systemPrompt === undefined ? "(no system prompt)" : `system: ${state.chat.systemPrompt}`;
      state.replace(arg, state.history());
      return "(system prompt set; it applies from the next message)";
    case "tokens": {
      const used = state.session.length;
      const capacity = state.session.capacity;
      return `context: ${used} of ${capacity} tokens used (${Math.round((used / capacity) * 100)}%), ${state.history().length} messages`;
    }
    case "save":
      if (arg === "") return "usage: /save FILE";
      await saveChat(state, arg);
      return `(saved ${state.history().length} messages and ${state.session.length} tokens of state to ${path.resolve(arg)})`;
    case "load":
      if (arg === "") return "usage: /load FILE";
      await loadChat(state, arg);
      return `(loaded ${state.history().length} messages and ${state.session.length} tokens of state from ${path.resolve(arg)})`;
    default:
      return `unknown command /${name}; /help lists the commands (start a message with // to send one that begins with /)`;
  }
}

export const COMMANDS_HELP = `Commands:
  /clear          start a new conversation (the system prompt stays)
  /system [TEXT]  show or set the system prompt
  /tokens         how full the context is
  /save FILE      save the conversation and the session's state
  /load FILE      continue a conversation saved with /save (same model)
  /quit           quit (also Ctrl-D, or Ctrl-C at the prompt)
Ctrl-C while a reply is written stops it.`;

async function saveChat(state: ChatState, file: string): Promise<void> {
  const json: SavedChat = {
    version: FORMAT_VERSION,
    model: state.context.model.info.name || path.basename(state.context.model.path),
    systemPrompt: state.chat.systemPrompt ?? null,
    messages: state.history(),
  };
  const body = Buffer.from(JSON.stringify(json), "utf8");
  const length = Buffer.alloc(4);
  length.writeUInt32LE(body.length);
  const data = Buffer.concat([MAGIC, length, body, await state.session.saveState()]);
  const target = path.resolve(file);
  const temp = `${target}.${process.pid}.tmp`;
  try {
    await fs.promises.writeFile(temp, data);
    await fs.promises.rename(temp, target);
  } catch (err) {
    await fs.promises.rm(temp, { force: true });
    throw new LlamaError("ERR_STATE", `Could not write ${target}: ${(err as Error).message}`, { cause: err });
  }
}

async function loadChat(state: ChatState, file: string): Promise<void> {
  let data: Buffer;
  try {
    data = await fs.promises.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code === "ENOENT" ? "ERR_FILE_NOT_FOUND" : "ERR_FILE_UNREADABLE";
    throw new LlamaError(code, `Could not read ${path.resolve(file)}: ${(err as Error).message}`, { cause: err });
  }
  const bad = (why: string) => new LlamaError("ERR_STATE", `${path.resolve(file)} is not a chat saved with /save: ${why}`);
  if (data.length < MAGIC.length + 4 || !data.subarray(0, MAGIC.length).equals(MAGIC)) throw bad("it does not start with the chat file's header");
  const length = data.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4;
  if (start + length > data.length) throw bad("it is truncated");
  let saved: SavedChat;
  try {
    saved = JSON.parse(data.subarray(start, start + length).toString("utf8")) as SavedChat;
  } catch {
    throw bad("its conversation is not valid JSON");
  }
  if (saved.version !== FORMAT_VERSION) throw bad(`format version ${String(saved.version)}, this llama-napi reads ${FORMAT_VERSION}`);
  if (!Array.isArray(saved.messages) || saved.messages.some((m) => typeof m?.role !== "string" || typeof m?.content !== "string")) {
    throw bad("its messages are not { role, content } objects");
  }
  // The state first: when it is refused (another model, ERR_STATE), the chat stays as it was.
  await state.session.loadState(data.subarray(start + length));
  state.replace(typeof saved.systemPrompt === "string" ? saved.systemPrompt : undefined, saved.messages);
}
