import readline from "node:readline";
import { parseArgs } from "node:util";

import type { ChatReply } from "../chat-session.js";
import { LlamaError } from "../errors.js";
import { isRemoteModelRef, resolveModelFile } from "../model-files.js";
import { loadModel } from "../model.js";
import { CONTEXT_OPTIONS } from "../options/context.js";
import { GENERATE_OPTIONS } from "../options/generate.js";
import { LOAD_OPTIONS } from "../options/load.js";
import { UsageError } from "./args.js";
import { ChatState, runCommand } from "./chat-commands.js";
import { expandAliases, flagGroup } from "./option-flags.js";
import { formatBytes, progressBar } from "./progress.js";

const generateFlags = flagGroup(GENERATE_OPTIONS, { help: { maxTokens: "most tokens per reply (default: until the model ends its turn or the context is full)" } });
const contextFlags = flagGroup(CONTEXT_OPTIONS, { help: { contextSize: "tokens the conversation can hold (old turns are dropped beyond)" } });
const loadFlags = flagGroup(LOAD_OPTIONS);

export const chatUsage = `llama-napi chat -m MODEL [--system TEXT] [--template NAME] [options]

Chats with MODEL in the terminal, with the model's chat template (or --template). The reply streams;
Ctrl-C stops a reply, and Ctrl-C at the prompt (or Ctrl-D, or /quit) quits. /help lists the
commands: /clear, /system TEXT, /tokens, /save FILE, /load FILE.
When stdin is not a terminal, each line read is a message and each reply is written as one line
(a newline in the reply as \\n, a backslash as \\\\); command output goes to stderr.

  -m, --model PATH|URL|hf:...  GGUF model file, or a reference that \`llama-napi pull\` takes
      --system TEXT            system prompt
      --template NAME|JINJA    a built-in template name (chatml, llama2, ...) or a Jinja template

Generation and sampling:
${generateFlags.help.join("\n")}

Context:
${contextFlags.help.join("\n")}

Model:
${loadFlags.help.join("\n")}`;

/** One line per reply: the reply's newlines and backslashes escaped. */
function escapeLine(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\r/g, "\\r");
}

function describeError(err: unknown): string {
  if (err instanceof LlamaError) return `llama-napi: ${err.message} [${err.code}]`;
  return `llama-napi: ${err instanceof Error ? err.message : String(err)}`;
}

export async function runChat(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: expandAliases(argv, [generateFlags, contextFlags, loadFlags]),
    options: {
      model: { type: "string", short: "m" },
      system: { type: "string" },
      template: { type: "string" },
      ...generateFlags.parseOptions,
      ...contextFlags.parseOptions,
      ...loadFlags.parseOptions,
    },
    strict: true,
  });
  if (!values.model) throw new UsageError("chat needs a model: -m MODEL");
  if (values.template === "") throw new UsageError("--template needs a name or a template");
  const sendOptions = generateFlags.read(values);
  const contextOptions = contextFlags.read(values);
  const loadOptions = loadFlags.read(values);
  const interactive = process.stdin.isTTY === true;

  let file = values.model;
  if (isRemoteModelRef(file)) {
    const bar = progressBar("downloading");
    file = await resolveModelFile(file, {
      onProgress: ({ downloadedBytes, totalBytes }) => bar.update(totalBytes ? downloadedBytes / totalBytes : undefined, formatBytes(downloadedBytes)),
    });
    bar.done();
  }
  const loadBar = progressBar("loading");
  using model = await loadModel(file, { ...loadOptions, onProgress: (p) => loadBar.update(p) });
  loadBar.done();
  using context = await model.createContext(contextOptions);
  const state = new ChatState(context, { systemPrompt: values.system, template: values.template });
  try {
    // A template that does not parse fails now rather than at the first message.
    await state.chat.template.render([{ role: "user", content: "Hi" }], { addGenerationPrompt: true });
    if (interactive) {
      if (values.template === undefined && typeof model.metadata["tokenizer.chat_template"] !== "string") {
        process.stderr.write("llama-napi: the model has no chat template; using ChatML (--template picks another)\n");
      }
      const name = model.info.name || file;
      process.stdout.write(
        `Chatting with ${name} (${state.session.capacity} tokens of context). /help lists the commands; ` +
          "Ctrl-C stops a reply, Ctrl-C at the prompt or Ctrl-D quits.\n",
      );
    }
    return await loop(state, sendOptions, interactive);
  } finally {
    state.dispose();
  }
}

async function loop(state: ChatState, sendOptions: ReturnType<typeof generateFlags.read>, interactive: boolean): Promise<number> {
  const out = process.stdout;
  const rl = readline.createInterface({ input: process.stdin, output: interactive ? out : undefined, terminal: interactive, prompt: "> " });
  let reply: ChatReply | undefined;
  let stopping = false;
  let quit = false;
  const onInterrupt = () => {
    if (reply && !stopping) {
      stopping = true;
      reply.abort();
      return;
    }
    quit = true;
    reply?.abort();
    rl.close();
  };
  rl.on("SIGINT", onInterrupt); // a terminal: readline reads Ctrl-C
  process.on("SIGINT", onInterrupt); // a pipe: the signal
  const show = (text: string) => (interactive ? out.write(`${text}\n`) : process.stderr.write(`${text}\n`));
  try {
    if (interactive) rl.prompt();
    for await (const line of rl) {
      if (quit) break;
      const message = line.startsWith("//") ? line.slice(1) : line;
      if (line.startsWith("/") && !line.startsWith("//")) {
        try {
          const result = await runCommand(state, line);
          if (result === "quit") break;
          show(result);
        } catch (err) {
          show(describeError(err));
        }
      } else if (message.trim() !== "" || !interactive) {
        stopping = false;
        try {
          reply = state.chat.send(message, sendOptions);
          for await (const { text } of reply) out.write(interactive ? text : escapeLine(text));
          const { finishReason } = await reply.result;
          out.write(interactive && finishReason === "aborted" ? " [stopped]\n" : "\n");
        } catch (err) {
          out.write("\n");
          show(describeError(err));
          if (!interactive) return 1;
        } finally {
          reply = undefined;
        }
      }
      if (quit) break;
      if (interactive) rl.prompt();
    }
  } finally {
    process.off("SIGINT", onInterrupt);
    rl.close();
  }
  if (interactive) out.write("\n");
  return 0;
}
