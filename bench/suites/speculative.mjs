/**
 * speculative: n-gram lookup decoding (generate's `lookup` option) against plain generation and
 * against llama.cpp's own `llama-lookup` (examples/lookup, built from the same tree), greedy, the
 * end-of-generation token banned on both sides (`--ignore-eos`), same model, threads and length.
 *
 *   - GPT-2 small Q8_0 with random weights: greedy decoding falls into loops, text that repeats;
 *   - stories260K (../shared/models) continuing a passage it has just read: the prompt is its own
 *     greedy story followed by the story's first words again.
 *
 * llama-lookup drafts from an n-gram cache with statistics (common/ngram-cache: n-grams of 1-4
 * tokens, the most frequent continuation); llama-napi from the most recent earlier occurrence of
 * the longest matching n-gram (native/EngineLookup.cc). Their acceptance differs, and the table
 * shows both. The draft-model cases of issue 22 are not here (no draft model support yet).
 */
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { ROOT } from "../lib/env.mjs";
import { fmt, fmtRatio, median, ratio } from "../lib/stats.mjs";

const STORIES = path.join(ROOT, "..", "shared", "models", "stories260K.gguf");
const N_GEN = 256;
const LOOKUP = { ngramSize: 3, maxDraft: 8 };

/** llama-lookup's tokens/s and draft counts, from its log. */
async function llamaLookup(ctx, tool, model, prompt, threads) {
  const args = ["-m", model, "-p", prompt, "-n", String(N_GEN), "--spec-draft-n-max", String(LOOKUP.maxDraft), "-t", String(threads), "-c", "512"];
  args.push("--temp", "0", "--ignore-eos", "--seed", "1", "--log-colors", "off");
  const out = await ctx.runCommand("sh", ["-c", `"$0" "$@" 2>&1`, tool, ...args]);
  const speed = /decoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s+([\d.]+) t\/s/.exec(out);
  const drafted = /n_drafted\s*=\s*(\d+)/.exec(out);
  const accepted = /n_accept\s*=\s*(\d+)/.exec(out);
  if (!speed || !drafted || !accepted) throw new Error(`unexpected llama-lookup output:\n${out.slice(-2000)}`);
  return { tokensPerS: Number(speed[3]), tokens: Number(speed[1]), drafted: Number(drafted[1]), accepted: Number(accepted[1]) };
}

export default {
  name: "speculative",
  description: "n-gram lookup decoding vs plain generation and vs llama-lookup (greedy)",
  async run(ctx) {
    const { options } = ctx;
    const tools = await ctx.tools();
    const rounds = options.quick ? 2 : options.reps;
    const context = { contextSize: 512, threads: options.threads };
    const cases = [{ name: "GPT-2 small Q8_0, random weights (loops)", model: (await ctx.models()).q8_0.file, prompt: await ctx.prompt(32) }];
    if (fs.existsSync(STORIES)) {
      // Its own greedy story, then the story's first words again.
      const lib = await import(pathToFileURL(path.join(ROOT, "dist", "index.js")).href);
      const m = await lib.loadModel(STORIES);
      const c = await m.createContext({ contextSize: 1024, threads: options.threads });
      const s = c.createSession();
      const opening = "Once upon a time, there was a little girl named Lily.";
      await s.prompt(opening);
      const story = opening + (await s.generate({ maxTokens: 200, temperature: 0 }).text());
      m.dispose();
      cases.push({ name: "stories260K re-reading its own story", model: STORIES, prompt: `${story}\n\n${opening}` });
    } else {
      ctx.log(`speculative: no ${STORIES}: the stories260K case is left out`);
    }
    const rows = [];
    const results = [];
    for (const c of cases) {
      ctx.progress(`speculative: ${c.name}`);
      const ours = await ctx.runWorker("ours-worker.mjs", { mode: "lookup", model: c.model, prompt: c.prompt, nGen: N_GEN, rounds, lookup: LOOKUP, context });
      const raw = [];
      for (let r = 0; r < rounds; r++) raw.push(await llamaLookup(ctx, tools["llama-lookup"], c.model, c.prompt, options.threads));
      const m = {
        plain: median(ours.plainTokensPerS),
        lookup: median(ours.lookupTokensPerS),
        rawLookup: median(raw.map((x) => x.tokensPerS)),
        acceptance: ours.accepted / Math.max(1, ours.drafted),
        rawAcceptance: raw[0].accepted / Math.max(1, raw[0].drafted),
      };
      results.push({ case: c.name, ours, raw, medians: m });
      rows.push([
        c.name,
        fmt(m.plain),
        fmt(m.lookup),
        fmtRatio(ratio(m.lookup, m.plain)),
        `${(100 * m.acceptance).toFixed(0)}% (${ours.accepted}/${ours.drafted})`,
        fmt(m.rawLookup),
        `${(100 * m.rawAcceptance).toFixed(0)}% (${raw[0].accepted}/${raw[0].drafted})`,
        fmtRatio(ratio(m.lookup, m.rawLookup)),
        ours.sameText ? "yes" : "NO",
      ]);
    }
    const table = {
      title: `speculative: greedy, ${N_GEN} tokens, ${options.threads} threads, lookup ${JSON.stringify(LOOKUP)} (llama-lookup --spec-draft-n-max ${LOOKUP.maxDraft}), median of ${rounds} (tokens/s)`,
      columns: ["case", "plain", "lookup", "lookup / plain", "kept (ours)", "llama-lookup", "kept (llama-lookup)", "lookup / llama-lookup", "same text as plain"],
      rows,
      notes: ["llama-lookup's tokens/s counts from its first decode after the prompt; ours from the first generated token to the last (the speed suite's way)"],
    };
    return { results: { settings: { nGen: N_GEN, lookup: LOOKUP, rounds, context }, cases: results }, tables: [table] };
  },
};
