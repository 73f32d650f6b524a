/**
 * The llama-napi side of the "speculative" suite's draft-model cases, in a fresh process:
 *   node bench/lib/spec-worker.mjs '{"model": target, "draft": draft, "prompt": ..., "nGen": 256,
 *     "rounds": 3, "speculative": { "maxDraft": 8, "minProbability": 0 }, "context": { ... }}'
 * Greedy generation of nGen tokens after the prompt, end-of-generation banned, plain and with
 * generate's `speculative` option (the draft model loaded from its own file, as
 * llama-speculative-simple does, even when it is the target's), alternating over `rounds` after a
 * warm-up of each. Tokens/s from the first to the last token, as the speed suite measures them.
 * Prints one JSON line.
 */
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const lib = await import(pathToFileURL(path.join(ROOT, "dist", "index.js")).href);
const task = JSON.parse(process.argv[2]);

const model = await lib.loadModel(task.model);
const draft = await lib.loadModel(task.draft);
const context = await model.createContext(task.context);
const eos = model.specialTokens.eos;
const base = { maxTokens: task.nGen + 1, temperature: 0, ...(eos === null ? {} : { logitBias: [[eos, -Infinity]] }) };
const speculative = { draft, ...task.speculative };
const rates = { plain: [], draft: [] };
const texts = { plain: "", draft: "" };
const counts = { plain: 0, draft: 0 };
let drafted = 0;
let accepted = 0;
for (let round = 0; round <= task.rounds; round++) {
  for (const mode of round % 2 === 0 ? ["plain", "draft"] : ["draft", "plain"]) {
    const session = context.createSession();
    await session.prompt(task.prompt);
    const generation = session.generate(mode === "plain" ? base : { ...base, speculative });
    let first = NaN;
    let last = NaN;
    let count = 0;
    let text = "";
    for await (const item of generation) {
      last = performance.now();
      if (count++ === 0) first = last;
      text += item.text;
    }
    session.dispose();
    texts[mode] = text;
    counts[mode] = count;
    if (round === 0) continue; // warm-up
    rates[mode].push((count - 1) / ((last - first) / 1e3));
    if (mode === "draft") {
      const stats = generation.speculative;
      if (!stats) throw new Error("generation.speculative is missing after a generation with a draft model");
      drafted += stats.drafted;
      accepted += stats.accepted;
    }
  }
}
context.dispose();
draft.dispose();
model.dispose();
process.stdout.write(
  `${JSON.stringify({
    plainTokensPerS: rates.plain,
    draftTokensPerS: rates.draft,
    drafted,
    accepted,
    tokens: counts,
    sameText: texts.plain === texts.draft,
    text: texts.plain,
  })}\n`,
);
process.exit(0);
