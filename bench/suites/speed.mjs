/**
 * speed: prompt and generation speed, time to first token, model load time, peak RSS and
 * event-loop lag of llama-napi, against raw llama.cpp (llama-bench for prompt/generation speed,
 * bench/llama-tools/load-bench for load time, time to first token and peak RSS) and against
 * node-llama-cpp, on GPT-2 small Q8_0 and Q4_0. Every measurement runs in a fresh process;
 * the implementations alternate inside each repetition and medians are quoted.
 */
import fs from "node:fs";
import path from "node:path";

import { Samples, fmt, fmtRatio, ratio } from "../lib/stats.mjs";

const METRICS = [
  // key, label, which direction is better
  ["promptTokensPerS", "prompt tokens/s", "higher"],
  ["genTokensPerS", "generation tokens/s", "higher"],
  ["ttftMs", "time to first token (ms)", "lower"],
  ["loadMs", "model load (ms, mmap)", "lower"],
  ["maxRssMb", "peak RSS (MB)", "lower"],
  ["lagP50Ms", "event-loop lag p50 (ms)", "lower"],
  ["lagP99Ms", "event-loop lag p99 (ms)", "lower"],
];

export default {
  name: "speed",
  description: "prompt/generation tokens/s, time to first token, load time, peak RSS, event-loop lag (GPT-2 small Q8_0, Q4_0)",
  async run(ctx) {
    const { options } = ctx;
    const models = await ctx.models();
    const tools = await ctx.tools();
    // Without node-llama-cpp (say, no registry), its column shows n/a and the error is recorded.
    const nlcVersion = await ctx.attempt("installing node-llama-cpp", () => ctx.nodeLlamaCpp());
    const settings = {
      threads: options.threads,
      contextSize: 256,
      batchSize: 512,
      ubatchSize: 512,
      flashAttention: "on",
      kvCacheType: "f16",
      mmap: true,
      promptTokens: 128,
      genTokens: options.quick ? 32 : 64,
      reps: options.reps,
    };
    const prompt = await ctx.prompt(settings.promptTokens);
    const promptFile = path.join(ctx.workDir, `prompt-${settings.promptTokens}.txt`);
    fs.writeFileSync(promptFile, prompt);
    const context = {
      contextSize: settings.contextSize,
      batchSize: settings.batchSize,
      threads: settings.threads,
      flashAttention: settings.flashAttention,
      kvCacheType: settings.kvCacheType,
    };
    const common = ["-t", `${settings.threads}`, "-b", `${settings.batchSize}`, "-ub", `${settings.ubatchSize}`];
    const llamaBenchArgs = [...common, "-fa", settings.flashAttention, "-ctk", settings.kvCacheType, "-ctv", settings.kvCacheType];
    const llamaBenchCommands = {
      prompt: [...llamaBenchArgs, "-lm", "mmap", "-p", `${settings.promptTokens}`, "-n", "0", "-r", "1", "-o", "json"],
      // Generation after the prompt, as the other two do: nGen tokens at depth promptTokens.
      gen: [...llamaBenchArgs, "-lm", "mmap", "-p", "0", "-n", `${settings.genTokens}`, "-d", `${settings.promptTokens}`, "-r", "1", "-o", "json"],
    };

    const output = { settings, commands: { llamaBench: llamaBenchCommands }, models: {} };
    const tables = [];
    for (const key of ["q8_0", "q4_0"]) {
      const model = models[key];
      const samples = { ours: new Samples(), llama: new Samples(), nlc: new Samples() };
      const checks = [];
      let reported;
      for (let rep = 0; rep < options.reps; rep++) {
        ctx.progress(`speed ${model.type}: repetition ${rep + 1}/${options.reps}`);
        const ours = await ctx.runWorker("ours-worker.mjs", { mode: "speed", model: model.file, prompt, nGen: settings.genTokens, context });
        samples.ours.add({ ...ours, maxRssMb: ours.maxRssKb / 1024 });
        checks.push(["llama-napi", ours.promptTokens, ours.genTokens]);

        const llama = await measureLlamaCpp(ctx, tools, model.file, promptFile, settings, llamaBenchCommands);
        samples.llama.add(llama);
        reported ??= llama.reported;
        checks.push(["llama.cpp (load-bench)", llama.promptTokens, llama.genTokens]);

        const nlc =
          nlcVersion &&
          (await ctx.attempt(`node-llama-cpp on ${model.type}`, () =>
            ctx.runWorker("nlc-worker.mjs", { model: model.file, prompt, nGen: settings.genTokens, context }),
          ));
        if (nlc) {
          samples.nlc.add({ ...nlc, maxRssMb: nlc.maxRssKb / 1024 });
          checks.push(["node-llama-cpp", nlc.promptTokens, nlc.genTokens]);
        }
      }
      const medians = { ours: samples.ours.medians(), llama: samples.llama.medians(), nlc: samples.nlc.medians() };
      const ratios = {};
      for (const [metric] of METRICS) {
        ratios[metric] = { vsLlamaCpp: ratio(medians.ours[metric], medians.llama[metric]), vsNodeLlamaCpp: ratio(medians.ours[metric], medians.nlc[metric]) };
      }
      // Every implementation must have run the same number of prompt and generated tokens.
      const warnings = [
        ...new Set(
          checks
            .filter(([, p, g]) => p !== settings.promptTokens || g !== settings.genTokens + 1)
            .map(([who, p, g]) => `${who} evaluated ${p} prompt tokens and generated ${g} (expected ${settings.promptTokens} and ${settings.genTokens + 1})`),
        ),
      ];
      output.models[key] = { model, samples, medians, ratios, llamaBenchReported: reported, warnings };
      tables.push({
        title: `speed: GPT-2 small ${model.type} (random weights), ${settings.threads} threads, median of ${options.reps}`,
        columns: ["metric", "llama-napi", "llama.cpp", "node-llama-cpp", "vs llama.cpp", "vs node-llama-cpp", "better"],
        rows: METRICS.map(([metric, label, better]) => [
          label,
          fmt(medians.ours[metric]),
          fmt(medians.llama[metric]),
          fmt(medians.nlc[metric]),
          fmtRatio(ratios[metric].vsLlamaCpp),
          fmtRatio(ratios[metric].vsNodeLlamaCpp),
          better,
        ]),
        notes: warnings.map((w) => `WARNING: ${w}`),
      });
    }
    tables[tables.length - 1].notes.push(
      `settings: prompt ${settings.promptTokens} tokens, generation ${settings.genTokens} tokens after it (decodes timed from the first token), ` +
        `context ${settings.contextSize}, batch ${settings.batchSize} (ubatch ${settings.ubatchSize}), flash attention ${settings.flashAttention}, KV ${settings.kvCacheType}, mmap, warm-up run first, greedy`,
      "llama.cpp: prompt/generation tokens/s from llama-bench (pp at depth 0, tg at depth = prompt); load, TTFT and RSS from load-bench (llama_model_load_from_file, same flow)",
      `node-llama-cpp ${nlcVersion ?? "(not available)"} (prebuilt CPU binary): prompt tokens/s = sequence.evaluateWithoutGeneratingNewTokens; generation via LlamaCompletion.generateCompletion`,
      "ratios are llama-napi / other; lag = monitorEventLoopDelay (1 ms resolution) during a second, identical generation (not the timed one), minus the 1 ms timer",
    );
    return { results: output, tables };
  },
};

/** Raw llama.cpp: llama-bench for prompt and generation speed, load-bench for the rest. */
async function measureLlamaCpp(ctx, tools, modelFile, promptFile, settings, commands) {
  const bench = async (args) => {
    const json = JSON.parse(await ctx.runCommand(tools["llama-bench"], ["-m", modelFile, ...args]));
    if (!Array.isArray(json) || json.length !== 1) throw new Error(`unexpected llama-bench output: ${JSON.stringify(json).slice(0, 500)}`);
    return json[0];
  };
  const pp = await bench(commands.prompt);
  const tg = await bench(commands.gen);
  const load = ctx.lastJsonLine(
    await ctx.runCommand(tools["load-bench"], [
      "-m", modelFile, "-f", promptFile, "-n", `${settings.genTokens + 1}`, "-t", `${settings.threads}`,
      "-c", `${settings.contextSize}`, "-b", `${settings.batchSize}`, "-fa", settings.flashAttention, "-ctk", settings.kvCacheType,
    ]),
  );
  return {
    promptTokensPerS: pp.avg_ts,
    genTokensPerS: tg.avg_ts,
    ttftMs: load.ttft_ms,
    loadMs: load.load_ms,
    maxRssMb: load.max_rss_kb / 1024,
    promptTokens: load.prompt_tokens,
    genTokens: load.gen_tokens,
    loadBenchGenTokensPerS: load.gen_tokens_per_s,
    // What llama-bench says it ran with, to check against the settings.
    reported: Object.fromEntries(
      ["build_commit", "n_batch", "n_ubatch", "n_threads", "type_k", "type_v", "flash_attn", "load_mode", "poll"].map((k) => [k, pp[k]]),
    ),
  };
}
