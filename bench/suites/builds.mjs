/**
 * builds: the prebuilt binary (prebuilds/<platform>-<arch>/, every CPU variant, the one for this
 * CPU chosen at run time; made by `npm run prebuilds`) against the source build tuned to this
 * machine (build/Release, -march=native, backends linked in), on GPT-2 small Q8_0: prompt and
 * generation tokens/s and their ratio (target: the prebuilt within 5%).
 *
 * Both run the same worker (bench/lib/ours-worker.mjs, the speed suite's measurement) in fresh
 * processes, LLAMA_NAPI_BINARY choosing the addon; the two alternate within each repetition (and
 * swap who goes first every other repetition), and medians are quoted.
 */
import fs from "node:fs";
import path from "node:path";

import { ROOT } from "../lib/env.mjs";
import { Samples, fmt, fmtRatio, ratio } from "../lib/stats.mjs";

const METRICS = [
  ["promptTokensPerS", "prompt tokens/s"],
  ["genTokensPerS", "generation tokens/s"],
  ["ttftMs", "time to first token (ms)"],
  ["loadMs", "model load (ms, mmap)"],
];

function binaries() {
  const tuple = `${process.platform}-${process.arch}`;
  const dir = path.join(ROOT, "prebuilds", tuple);
  const prebuilt = fs.existsSync(dir) ? fs.readdirSync(dir).find((f) => f.endsWith(".node")) : undefined;
  if (!prebuilt) throw new Error(`no prebuilt binary in prebuilds/${tuple}/: run \`npm run prebuilds\` first`);
  const source = path.join(ROOT, "build", "Release", "llama_napi.node");
  if (!fs.existsSync(source)) throw new Error("no source build in build/Release: run `npm run build` first");
  return { prebuilt: path.join(dir, prebuilt), source };
}

/** What the addon reports about itself: CPU variant, backend folder, CPU features. */
async function describe(ctx, binary) {
  const script = `const { systemInfo } = await import(${JSON.stringify(path.join(ROOT, "dist", "index.js"))});
    const i = systemInfo(); const cpu = i.devices.find((d) => d.type === "cpu");
    console.log(JSON.stringify({ cpuVariant: i.cpuVariant, library: cpu?.library, features: cpu?.features ?? [], prebuilt: i.prebuilt }));`;
  const stdout = await ctx.runCommand(process.execPath, ["--input-type=module", "-e", script], { env: { LLAMA_NAPI_BINARY: binary } });
  return ctx.lastJsonLine(stdout);
}

export default {
  name: "builds",
  description: "prebuilt runtime-dispatched CPU binary vs the -march=native source build (GPT-2 small Q8_0)",
  async run(ctx) {
    const { options } = ctx;
    const files = binaries();
    const models = await ctx.models();
    const model = models.q8_0;
    const settings = {
      threads: options.threads,
      promptTokens: 128,
      genTokens: options.quick ? 32 : 64,
      reps: options.reps,
      context: { contextSize: 256, batchSize: 512, threads: options.threads, flashAttention: "on", kvCacheType: "f16" },
    };
    const prompt = await ctx.prompt(settings.promptTokens);
    const builds = {
      source: { file: files.source, ...(await describe(ctx, files.source)) },
      prebuilt: { file: files.prebuilt, ...(await describe(ctx, files.prebuilt)) },
    };
    if (!builds.prebuilt.prebuilt) throw new Error(`${files.prebuilt} did not load as the prebuilt binary`);
    ctx.log(`source build: CPU ${builds.source.cpuVariant}; prebuilt: CPU variant ${builds.prebuilt.cpuVariant} (${builds.prebuilt.library})`);

    const samples = { source: new Samples(), prebuilt: new Samples() };
    const task = { mode: "speed", model: model.file, prompt, nGen: settings.genTokens, context: settings.context };
    for (let rep = 0; rep < options.reps; rep++) {
      ctx.progress(`builds: repetition ${rep + 1}/${options.reps}`);
      const order = rep % 2 === 0 ? ["prebuilt", "source"] : ["source", "prebuilt"];
      for (const which of order) {
        const r = await ctx.runWorker("ours-worker.mjs", task, { env: { LLAMA_NAPI_BINARY: builds[which].file } });
        if (r.promptTokens !== settings.promptTokens) throw new Error(`${which}: evaluated ${r.promptTokens} prompt tokens, expected ${settings.promptTokens}`);
        samples[which].add(r);
      }
    }
    const med = { source: samples.source.medians(), prebuilt: samples.prebuilt.medians() };
    const rows = METRICS.map(([key, label]) => [label, fmt(med.source[key]), fmt(med.prebuilt[key]), fmtRatio(ratio(med.prebuilt[key], med.source[key]))]);
    const within = (key) => ratio(med.prebuilt[key], med.source[key]) >= 0.95;
    return {
      results: {
        settings,
        model: { file: path.basename(model.file), type: model.type, bytes: model.bytes },
        builds,
        medians: med,
        samples: { source: samples.source.toJSON(), prebuilt: samples.prebuilt.toJSON() },
        ratios: Object.fromEntries(METRICS.map(([key]) => [key, ratio(med.prebuilt[key], med.source[key])])),
        withinTarget: { promptTokensPerS: within("promptTokensPerS"), genTokensPerS: within("genTokensPerS") },
      },
      tables: [
        {
          title: `builds: prebuilt (${builds.prebuilt.cpuVariant}) vs source (-march=native), ${model.type}, ${settings.threads} threads`,
          columns: ["metric", "source build", "prebuilt", "prebuilt / source"],
          rows,
          notes: [
            `prompt ${settings.promptTokens} tokens, ${settings.genTokens} generated, greedy; medians of ${options.reps} alternating repetitions, each in a fresh process`,
            `target: prebuilt tokens/s within 5% of the source build (ratio >= 0.95): prompt ${within("promptTokensPerS") ? "yes" : "no"}, generation ${within("genTokensPerS") ? "yes" : "no"}`,
            `prebuilt CPU module ${builds.prebuilt.library}; features ${builds.prebuilt.features.join(" ")}`,
          ],
        },
      ],
    };
  },
};
