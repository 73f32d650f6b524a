#!/usr/bin/env node
/**
 * Generating from a model you do not trust, in a child process: if llama.cpp or ggml ends the
 * process (an assert no check foresaw, a model file truncated under its mapping), only the
 * child dies, and the caller gets an answer saying so and carries on.
 *
 *   node examples/isolated-generate.mjs MODEL.gguf "Once upon a time"
 *
 * As a module: `await generateIsolated(modelPath, prompt, { maxTokens, timeoutMs })` resolves to
 * { ok: true, text }, or { ok: false, code, message } for a LlamaError in the child, or
 * { ok: false, code: "ERR_CHILD_DIED", signal, exitCode } when the child died or timed out.
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";

const self = fileURLToPath(import.meta.url);

export function generateIsolated(modelPath, prompt, { maxTokens = 64, timeoutMs = 120_000, execArgv = [], env = process.env } = {}) {
  return new Promise((resolve) => {
    const child = fork(self, ["--child"], { execArgv, env, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    let answer;
    child.on("message", (message) => (answer = message));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (exitCode, signal) => {
      clearTimeout(timer);
      resolve(answer ?? { ok: false, code: "ERR_CHILD_DIED", signal, exitCode, message: `the model process died (${signal ?? `exit code ${exitCode}`})` });
    });
    child.send({ modelPath, prompt, maxTokens });
  });
}

async function child({ modelPath, prompt, maxTokens }) {
  let model;
  try {
    const { loadModel } = await import("llama-napi");
    model = await loadModel(modelPath);
    const context = await model.createContext(); // the model's training context, at most 4096
    const session = context.createSession();
    await session.prompt(prompt);
    const { text } = await session.generate({ maxTokens, temperature: 0 }).collect();
    return { ok: true, text };
  } catch (err) {
    return { ok: false, code: err?.code ?? "ERR_INTERNAL", message: String(err?.message ?? err) };
  } finally {
    model?.dispose();
  }
}

if (process.argv[2] === "--child") {
  process.once("message", async (request) => {
    const answer = await child(request);
    process.send(answer, () => process.exit(0));
  });
} else if (process.argv[1] === self) {
  const [modelPath, prompt = "Once upon a time"] = process.argv.slice(2);
  if (!modelPath) {
    console.error("usage: node examples/isolated-generate.mjs MODEL.gguf [PROMPT]");
    process.exit(2);
  }
  const result = await generateIsolated(modelPath, prompt);
  console.log(result.ok ? prompt + result.text : `failed (${result.code}): ${result.message}`);
  // Whatever happened to the child, this process is still here.
  console.log("the parent process carries on");
}
