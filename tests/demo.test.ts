/**
 * `npm run demo` as a newcomer meets it: scripts/demo.mjs run as a child process from a copy of
 * the repository's layout in a temporary folder, so that no ../shared folder is reachable from it.
 * With the bundled stories260K it must tell an English story; when the model file is absent it
 * must fall back to a random GPT-2-shaped model and still generate, never asking for more context
 * than that model was trained for.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { repoRoot } from "./helpers/fixtures.js";

const run = promisify(execFile);

let tmp: string;
/** The demo's copy: <tmp>/checkout/scripts/demo.mjs, beside dist, build, vendor, node_modules. */
let checkout: string;

interface DemoRun {
  stdout: string;
  stderr: string;
}

async function runDemo(env: Record<string, string>): Promise<DemoRun> {
  const clean = { ...process.env };
  delete clean.LLAMA_NAPI_DEMO_MODEL;
  try {
    const { stdout, stderr } = await run(process.execPath, [path.join(checkout, "scripts", "demo.mjs")], {
      cwd: checkout,
      env: { ...clean, TMPDIR: path.join(tmp, "os-tmp"), ...env },
      maxBuffer: 16 * 1024 * 1024,
    });
    return { stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string; message: string };
    throw new Error(`the demo exited with ${String(e.code)}:\n${e.stdout ?? ""}\n${e.stderr ?? e.message}`);
  }
}

/** The demo's last line: `[architecture, N tokens in S s: R tokens/s, context C]`. */
function footer(stdout: string): { architecture: string; tokens: number; context: number } {
  const m = /\n\[(\w+), (\d+) tokens in [\d.]+ s: \d+ tokens\/s, context (\d+)\]\n$/.exec(stdout);
  if (!m) throw new Error(`no summary line in the demo's output:\n${stdout}`);
  return { architecture: m[1], tokens: Number(m[2]), context: Number(m[3]) };
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-demo-"));
  checkout = path.join(tmp, "checkout");
  fs.mkdirSync(path.join(checkout, "scripts"), { recursive: true });
  fs.mkdirSync(path.join(checkout, "models"));
  fs.mkdirSync(path.join(tmp, "os-tmp"));
  fs.copyFileSync(path.join(repoRoot, "scripts", "demo.mjs"), path.join(checkout, "scripts", "demo.mjs"));
  fs.copyFileSync(path.join(repoRoot, "models", "stories260K.gguf"), path.join(checkout, "models", "stories260K.gguf"));
  fs.copyFileSync(path.join(repoRoot, "package.json"), path.join(checkout, "package.json"));
  // The compiled package (a copy: its own folder is the package root), and links to the addon,
  // the GPT-2 vocabulary the fallback model uses and the dependencies.
  fs.cpSync(path.join(repoRoot, "dist"), path.join(checkout, "dist"), { recursive: true });
  for (const dir of ["build", "prebuilds", "vendor", "node_modules"]) {
    if (fs.existsSync(path.join(repoRoot, dir))) fs.symlinkSync(path.join(repoRoot, dir), path.join(checkout, dir), "dir");
  }
  expect(fs.existsSync(path.join(tmp, "shared"))).toBe(false);
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe("npm run demo", () => {
  it("reads nothing from ../shared", () => {
    const source = fs.readFileSync(path.join(repoRoot, "scripts", "demo.mjs"), "utf8");
    expect(source).not.toMatch(/shared/);
  });

  it("tells a story with the bundled stories260K", async () => {
    const { stdout, stderr } = await runDemo({});
    expect(stderr).not.toMatch(/not found/);
    expect(stdout.startsWith("Once upon a time")).toBe(true);
    const { architecture, tokens, context } = footer(stdout);
    expect(architecture).toBe("llama");
    // stories260K was trained with 512 tokens; the demo asks for 256.
    expect(context).toBe(256);
    expect(tokens).toBeGreaterThan(20);
    const story = stdout.slice(0, stdout.lastIndexOf("\n\n["));
    // A real model writes English: the commonest words of TinyStories appear.
    const words = story.toLowerCase().match(/[a-z]+/g) ?? [];
    const common = words.filter((w) => ["the", "a", "and", "was", "she", "he", "to", "her", "they", "it"].includes(w));
    expect(story).toMatch(/ (the|a|and|was) /);
    expect(common.length).toBeGreaterThan(words.length / 10);
  });

  it("falls back to a random GPT-2 within its 128-token context when the model file is absent", async () => {
    const missing = path.join(tmp, "no-such-model.gguf");
    const { stdout, stderr } = await runDemo({ LLAMA_NAPI_DEMO_MODEL: missing });
    expect(stderr).toContain(`${missing} not found`);
    expect(stdout.startsWith("The meaning of life is")).toBe(true);
    const { architecture, tokens, context } = footer(stdout);
    expect(architecture).toBe("gpt2");
    // GPT2_PRESETS.tiny is trained for 128 tokens: the demo's 256 must be clamped to it.
    expect(context).toBe(128);
    // "The meaning of life is" is 5 GPT-2 tokens: up to 123 more fit, and a random model rarely
    // picks <|endoftext|> early.
    expect(tokens).toBeGreaterThan(0);
    expect(tokens).toBeLessThanOrEqual(128 - 5);
    const generated = stdout.slice("The meaning of life is".length, stdout.lastIndexOf("\n\n["));
    expect(generated.length).toBeGreaterThan(0);
    // The model was written into the demo's temporary folder, not read from anywhere else.
    expect(fs.readdirSync(path.join(tmp, "os-tmp")).some((f) => f.endsWith(".gguf"))).toBe(true);
  });

  it("uses the model LLAMA_NAPI_DEMO_MODEL names", async () => {
    const other = path.join(tmp, "other.gguf");
    fs.copyFileSync(path.join(repoRoot, "models", "stories260K.gguf"), other);
    const { stdout, stderr } = await runDemo({ LLAMA_NAPI_DEMO_MODEL: other });
    expect(stderr).not.toMatch(/not found/);
    expect(footer(stdout).architecture).toBe("llama");
  });
});
