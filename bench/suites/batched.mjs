/**
 * batched: 1, 4 and 8 sessions of one context generating at once (the engine decodes them in one
 * batch), aggregate generation tokens/s, against llama.cpp's llama-batched-bench with the same
 * prompt length, generation length, threads, per-sequence context and batch sizes.
 */
import { Samples, fmt, fmtRatio, ratio } from "../lib/stats.mjs";
import { rng } from "../lib/text.mjs";

const PARALLEL = [1, 4, 8];
const TARGET_AT_8 = 0.9;

export default {
  name: "batched",
  description: "aggregate generation tokens/s of 1, 4, 8 concurrent sessions vs llama-batched-bench (GPT-2 small Q8_0)",
  async run(ctx) {
    const { options } = ctx;
    const models = await ctx.models();
    const tools = await ctx.tools();
    const model = models.q8_0;
    const settings = {
      threads: options.threads,
      parallel: PARALLEL,
      promptTokens: 16,
      genTokens: options.quick ? 32 : 128,
      contextSize: 256, // per session; llama-batched-bench gets 256 × max(parallel) for its 8 sequences
      batchSize: 512,
      ubatchSize: 512,
      flashAttention: "on",
      kvCacheType: "f16",
      unifiedKvCache: false,
      reps: options.reps,
    };
    const prompts = await distinctPrompts(ctx, Math.max(...PARALLEL), settings.promptTokens);
    const context = {
      contextSize: settings.contextSize,
      batchSize: settings.batchSize,
      threads: settings.threads,
      flashAttention: settings.flashAttention,
      kvCacheType: settings.kvCacheType,
      unifiedKvCache: settings.unifiedKvCache,
    };
    const batchedBenchArgs = [
      "-m", model.file, "-c", `${settings.contextSize * Math.max(...PARALLEL)}`, "-b", `${settings.batchSize}`, "-ub", `${settings.ubatchSize}`,
      "-t", `${settings.threads}`, "-tb", `${settings.threads}`, "-fa", settings.flashAttention, "-ctk", settings.kvCacheType, "-ctv", settings.kvCacheType,
      "-no-kvu", "-npp", `${settings.promptTokens}`, "-ntg", `${settings.genTokens}`, "-npl", PARALLEL.join(","), "--output-format", "jsonl",
    ];

    const samples = Object.fromEntries(PARALLEL.map((n) => [n, { ours: new Samples(), llama: new Samples() }]));
    for (let rep = 0; rep < options.reps; rep++) {
      ctx.progress(`batched: repetition ${rep + 1}/${options.reps}`);
      const ours = await ctx.runWorker("ours-worker.mjs", { mode: "batched", model: model.file, prompts, parallel: PARALLEL, nGen: settings.genTokens, context });
      for (const r of ours.results) samples[r.parallel].ours.add(r);

      const out = await ctx.runCommand(tools["llama-batched-bench"], batchedBenchArgs);
      const lines = out.split("\n").filter((l) => l.trim().startsWith("{")).map((l) => JSON.parse(l));
      for (const line of lines) samples[line.pl]?.llama.add({ genTokensPerS: line.speed_tg, promptTokensPerS: line.speed_pp, genMs: line.t_tg * 1e3 });
      if (lines.length !== PARALLEL.length) throw new Error(`llama-batched-bench printed ${lines.length} results; expected ${PARALLEL.length}:\n${out}`);
    }

    const perN = {};
    const rows = [];
    for (const n of PARALLEL) {
      const ours = samples[n].ours.medians();
      const llama = samples[n].llama.medians();
      const r = ratio(ours.genTokensPerS, llama.genTokensPerS);
      perN[n] = { samples: samples[n], medians: { ours, llama }, ratio: r };
      rows.push([`${n} session${n > 1 ? "s" : ""}`, fmt(ours.genTokensPerS), fmt(llama.genTokensPerS), fmtRatio(r)]);
    }
    const at8 = perN[8].ratio;
    const results = { settings, model, commands: { llamaBatchedBench: batchedBenchArgs }, perN, targetAt8: TARGET_AT_8, meetsTarget: at8 >= TARGET_AT_8 };
    const table = {
      title: `batched: GPT-2 small ${model.type}, ${settings.threads} threads, aggregate generation tokens/s, median of ${options.reps}`,
      columns: ["concurrent", "llama-napi", "llama-batched-bench", "ratio"],
      rows,
      notes: [
        `target at 8 sessions: ratio >= ${TARGET_AT_8}; measured ${Number.isFinite(at8) ? `${at8.toFixed(3)}: ${at8 >= TARGET_AT_8 ? "met" : "NOT met"}` : "n/a"}`,
        `each session: a distinct ${settings.promptTokens}-token prompt, then ${settings.genTokens} tokens decoded (greedy; session.generate on all at once); ` +
          `per-session context ${settings.contextSize}, batch ${settings.batchSize}, flash attention ${settings.flashAttention}, KV ${settings.kvCacheType}, not unified`,
      ],
    };
    return { results, tables: [table] };
  },
};

/** `count` distinct prompts of exactly `tokens` tokens each (token arrays), from seeded prose. */
async function distinctPrompts(ctx, count, tokens) {
  const vocab = await ctx.vocabModel();
  const words = "a river crossed the quiet valley where old engines slept under snow and every lamp remembered summer".split(" ");
  return Array.from({ length: count }, (_, i) => {
    const r = rng(100 + i);
    let text = `Story ${i + 1}:`;
    while (vocab.tokenize(text).length < tokens) text += ` ${words[Math.floor(r() * words.length)]}`;
    return [...vocab.tokenize(text).slice(0, tokens)];
  });
}
