/**
 * `llama-napi chat`, run as a user runs it (node dist/cli/main.js): through a pipe (one message
 * per line in, one reply per line out) and in a real terminal (tmux: send-keys types,
 * capture-pane reads the screen). The oracle for every reply is the API's ChatSession with the
 * same model, template, system prompt, history and greedy settings; for /tokens, the API
 * session's length after the same turns.
 *
 * The model is stories260K (models/, a real TinyStories model, so replies are plain English;
 * it has no chat template, so the chat uses ChatML as llama.cpp does); the Ctrl-C test uses the
 * slower gpt2-wide-f16 fixture so that a reply is still running when the key arrives.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ChatSession, loadModel, type ChatMessage, type Model } from "../src/index.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";
import { Terminal, hasTmux } from "./helpers/tmux.js";

const MAIN = path.join(repoRoot, "dist", "cli", "main.js");
const STORIES = path.join(repoRoot, "models", "stories260K.gguf");
const N = 24;
const FLAGS = ["-n", String(N), "--temp", "0", "-c", "256", "-t", "1"];

let model: Model;
let dir: string;

beforeAll(async () => {
  model = await loadModel(STORIES);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-chat-"));
});
afterAll(() => {
  model?.dispose();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

interface ApiChat {
  systemPrompt?: string;
  template?: string;
  messages?: ChatMessage[];
}

/** The API's greedy replies to `turns`, and the session's length after each. */
async function apiReplies(turns: string[], options: ApiChat = {}): Promise<{ replies: string[]; lengths: number[] }> {
  using context = await model.createContext({ contextSize: 256, threads: 1 });
  using chat = new ChatSession(context, options);
  const replies: string[] = [];
  const lengths: number[] = [];
  for (const turn of turns) {
    replies.push(await chat.send(turn, { temperature: 0, maxTokens: N }).text());
    lengths.push(chat.session.length);
  }
  return { replies, lengths };
}

/** Runs the chat with `lines` piped to stdin. */
function pipeChat(args: string[], lines: string[]): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, "chat", ...args], { cwd: dir, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ stdout, stderr, code }));
    child.stdin.end(lines.map((l) => `${l}\n`).join(""));
  });
}

/** Undoes the one-line escaping of a reply (\\n, \\r, \\\\). */
function unescapeLine(line: string): string {
  return line.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c === "r" ? "\r" : c));
}

function replyLines(stdout: string): string[] {
  expect(stdout.endsWith("\n")).toBe(true);
  return stdout.slice(0, -1).split("\n").map(unescapeLine);
}

describe("llama-napi chat through a pipe", () => {
  it("writes the API's reply to each line, one line per reply, with the system prompt", async () => {
    const turns = ["Hello there", "Tell me about the dog", "Why?"];
    const { replies } = await apiReplies(turns, { systemPrompt: "You tell short stories." });
    expect(replies.some((r) => r.includes("\n"))).toBe(true); // the escaping is exercised
    const { stdout, stderr, code } = await pipeChat([...FLAGS, "-m", STORIES, "--system", "You tell short stories."], turns);
    expect(code).toBe(0);
    expect(stderr).toBe("");
    expect(replyLines(stdout)).toEqual(replies);
  });

  it("/save writes the conversation and the state; /load in another process continues as the API does", async () => {
    const file = path.join(dir, "saved.chat");
    const first = await apiReplies(["Hello there"], { systemPrompt: "Be nice." });
    const a = await pipeChat([...FLAGS, "-m", STORIES, "--system", "Be nice."], ["Hello there", "/tokens", `/save ${file}`]);
    expect(a.code).toBe(0);
    expect(replyLines(a.stdout)).toEqual(first.replies);
    expect(a.stderr).toContain(`context: ${first.lengths[0]} of 256 tokens used`);
    expect(fs.existsSync(file)).toBe(true);

    // No --system here: the saved chat brings its own.
    const history: ChatMessage[] = [
      { role: "user", content: "Hello there" },
      { role: "assistant", content: first.replies[0]! },
    ];
    const next = await apiReplies(["What did the girl do?"], { systemPrompt: "Be nice.", messages: history });
    const b = await pipeChat([...FLAGS, "-m", STORIES], [`/load ${file}`, "/tokens", "/system", "What did the girl do?"]);
    expect(b.code).toBe(0);
    expect(b.stderr).toContain(`loaded 2 messages and ${first.lengths[0]} tokens of state`);
    expect(b.stderr).toContain(`context: ${first.lengths[0]} of 256 tokens used (${Math.round((first.lengths[0]! / 256) * 100)}%), 2 messages`);
    expect(b.stderr).toContain("system: Be nice.");
    expect(replyLines(b.stdout)).toEqual(next.replies);
  });

  it("refuses /load of a file that is not a saved chat or is another model's, and goes on", async () => {
    const junk = path.join(dir, "junk.chat");
    fs.writeFileSync(junk, "not a chat");
    const otherFile = path.join(dir, "gpt2.chat");
    const other = await pipeChat(["-n", "4", "--temp", "0", "-c", "64", "-t", "1", "-m", fixturePath("gpt2-tiny-f32")], ["Hi", `/save ${otherFile}`]);
    expect(other.code).toBe(0);
    const { replies } = await apiReplies(["Hello there"]);
    const r = await pipeChat([...FLAGS, "-m", STORIES], [`/load ${junk}`, `/load ${otherFile}`, `/load ${path.join(dir, "missing.chat")}`, "Hello there"]);
    expect(r.code).toBe(0);
    const errors = r.stderr.trim().split("\n");
    expect(errors[0]).toMatch(/is not a chat saved with \/save: it does not start with the chat file's header \[ERR_STATE\]$/);
    expect(errors[1]).toMatch(/\[ERR_STATE\]$/);
    expect(errors[1]).toMatch(/vocabulary|architecture/);
    expect(errors[2]).toMatch(/\[ERR_FILE_NOT_FOUND\]$/);
    expect(replyLines(r.stdout)).toEqual(replies); // the failed loads left the chat as it was
  });

  it("/clear starts over and /system changes the system prompt of the conversation so far", async () => {
    const fresh = await apiReplies(["Hello there"]);
    const history: ChatMessage[] = [
      { role: "user", content: "Hello there" },
      { role: "assistant", content: fresh.replies[0]! },
    ];
    const withSystem = await apiReplies(["Where is the cat?"], { systemPrompt: "Talk about cats.", messages: history });
    const r = await pipeChat([...FLAGS, "-m", STORIES], ["Hello there", "/clear", "/tokens", "Hello there", "/system Talk about cats.", "Where is the cat?"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("(conversation cleared)\ncontext: 0 of 256 tokens used (0%), 0 messages");
    expect(replyLines(r.stdout)).toEqual([fresh.replies[0], fresh.replies[0], withSystem.replies[0]]);
  });

  it("--template uses a built-in template or a Jinja one, and refuses one that does not parse", async () => {
    const { replies } = await apiReplies(["Hello there"], { template: "llama2" });
    const chatml = await apiReplies(["Hello there"]);
    expect(replies[0]).not.toBe(chatml.replies[0]); // the template makes a difference
    const r = await pipeChat([...FLAGS, "-m", STORIES, "--template", "llama2"], ["Hello there"]);
    expect(replyLines(r.stdout)).toEqual(replies);

    const jinja = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:";
    const j = await apiReplies(["Hello there"], { template: jinja });
    expect(replyLines((await pipeChat([...FLAGS, "-m", STORIES, "--template", jinja], ["Hello there"])).stdout)).toEqual(j.replies);

    const bad = await pipeChat([...FLAGS, "-m", STORIES, "--template", "{% for m in messages %}"], ["Hello there"]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toMatch(/\[ERR_TEMPLATE_INVALID\]/);
  });
});

describe("llama-napi chat in a terminal (tmux)", () => {
  it("shows the load progress, streams the API's reply, answers /tokens, and Ctrl-D quits", async (ctx) => {
    if (!hasTmux()) ctx.skip("tmux is not installed (apt-get install tmux)");
    const { replies, lengths } = await apiReplies(["Hello there", "And then?"], { systemPrompt: "Be nice." });
    const term = new Terminal([process.execPath, MAIN, "chat", ...FLAGS, "-m", STORIES, "--system", "Be nice."], { cwd: dir, width: 200 });
    try {
      let screen = await term.waitFor(/^>$/m);
      expect(screen).toMatch(/^loading █{40} 100%\s*$/m);
      expect(screen).toMatch(/^Chatting with .* \(256 tokens of context\)\. \/help lists the commands/m);
      expect(screen).toContain("the model has no chat template; using ChatML"); // stories260K has none
      term.type("Hello there");
      screen = await term.waitFor((s) => s.split("\n").filter((l) => l.startsWith(">")).length === 2);
      term.type("And then?");
      screen = await term.waitFor((s) => s.split("\n").filter((l) => l.startsWith(">")).length === 3);
      term.type("/tokens");
      screen = await term.waitFor(/^context: /m);
      // The screen between the prompts: each reply as the API gives it (trailing spaces aside).
      const trimLines = (t: string) => t.split("\n").map((l) => l.trimEnd()).join("\n");
      const expected = `> Hello there\n${trimLines(replies[0]!)}\n> And then?\n${trimLines(replies[1]!)}\n> /tokens\ncontext: ${lengths[1]} of 256 tokens used`;
      expect(screen).toContain(expected);
      expect(await term.exitCode()).toBeUndefined();
      term.keys("C-d");
      expect(await term.exitCode(10_000)).toBe(0);
    } finally {
      term.close();
    }
  });

  it("Ctrl-C stops a reply and keeps the chat; a second Ctrl-C quits", async (ctx) => {
    if (!hasTmux()) ctx.skip("tmux is not installed (apt-get install tmux)");
    // No -n: the reply runs until the context of 1024 is full (seconds on this model).
    const term = new Terminal([process.execPath, MAIN, "chat", "--temp", "0", "-c", "1024", "-t", "1", "-m", fixturePath("gpt2-wide-f16")], { cwd: dir, width: 200 });
    try {
      await term.waitFor(/^>$/m);
      term.type("Hello");
      await term.waitFor((s) => /^> Hello\n(.+)/m.test(s) && !s.trimEnd().endsWith("> Hello"));
      term.keys("C-c");
      let screen = await term.waitFor(/ \[stopped\]\n>$/);
      expect(await term.exitCode()).toBeUndefined(); // the first Ctrl-C stopped the reply only
      term.type("/tokens");
      screen = await term.waitFor(/^context: \d+ of 1024 tokens used/m);
      const used = Number(/^context: (\d+) of 1024/m.exec(screen)![1]);
      expect(used).toBeGreaterThan(0);
      expect(used).toBeLessThan(1024); // stopped before the context was full
      expect(screen).toMatch(/^context: \d+ of 1024 tokens used \(\d+%\), 2 messages$/m); // the part written stays in the conversation
      term.keys("C-c");
      expect(await term.exitCode(10_000)).toBe(0);
    } finally {
      term.close();
    }
  });
});
