/**
 * sampling: generation tokens/s with the default sampler chain (session.generate's defaults:
 * temperature 0.8, top-k 40, top-p 0.95, min-p 0.05) against greedy (temperature 0), on the same
 * model and prompt, in one process per repetition (the order alternates between repetitions).
 */
import { Samples, fmt } from "../lib/stats.mjs";

export default {
  name: "sampling",
  description: "generation tokens/s with the default sampler chain vs greedy: the loss in %",
  async run(ctx) {
    const { options } = ctx;
    const models = await ctx.models();
    const model = models.q8_0;
    const settings = {
      threads: options.threads,
      promptTokens: 128,
      genTokens: options.quick ? 64 : 256,
      contextSize: 512,
      batchSize: 512,
      flashAttention: "on",
      kvCacheType: "f16",
      seed: 1234,
      reps: options.reps,
    };
    const prompt = await ctx.prompt(settings.promptTokens);
    const context = {
      contextSize: settings.contextSize,
      batchSize: settings.batchSize,
      threads: settings.threads,
      flashAttention: settings.flashAttention,
      kvCacheType: settings.kvCacheType,
    };
    const samples = { greedy: new Samples(), default: new Samples() };
    for (let rep = 0; rep < options.reps; rep++) {
      ctx.progress(`sampling: repetition ${rep + 1}/${options.reps}`);
      const order = rep % 2 === 0 ? ["greedy", "default"] : ["default", "greedy"];
      const r = await ctx.runWorker("ours-worker.mjs", { mode: "sampling", model: model.file, prompt, nGen: settings.genTokens, context, order, seed: settings.seed + rep });
      for (const mode of order) samples[mode].add(r[mode]);
    }
    const greedy = samples.greedy.medians();
    const chain = samples.default.medians();
    const lossPercent = (1 - chain.genTokensPerS / greedy.genTokensPerS) * 100;
    const short = Object.entries(samples).filter(([, s]) => s.get("genTokens").some((n) => n !== settings.genTokens + 1));
    const results = { settings, model, samples, medians: { greedy, default: chain }, lossPercent };
    const table = {
      title: `sampling: GPT-2 small ${model.type}, ${settings.threads} threads, ${settings.genTokens} tokens, median of ${options.reps}`,
      columns: ["sampler", "generation tokens/s", "change vs greedy"],
      rows: [
        ["greedy (temperature 0)", fmt(greedy.genTokensPerS), "—"],
        ["default chain (generate({}))", fmt(chain.genTokensPerS), Number.isFinite(lossPercent) ? `${lossPercent >= 0 ? "-" : "+"}${Math.abs(lossPercent).toFixed(1)}%` : "n/a"],
      ],
      notes: short.map(([mode]) => `WARNING: a ${mode} run stopped before ${settings.genTokens + 1} tokens (end of text); its rate counts what it generated`),
    };
    return { results, tables: [table] };
  },
};
