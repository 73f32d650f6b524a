/**
 * rpc: generation over ggml's RPC backend on loopback against the same model run locally. One
 * RPC server (a child process started with startRpcServer) holds every layer; the client and the
 * server share this machine's cores, so the figure shows the protocol's overhead, not a speed-up.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";

import { ROOT } from "../lib/env.mjs";
import { Samples, fmt, fmtRatio, ratio } from "../lib/stats.mjs";

export default {
  name: "rpc",
  description: "generation tokens/s with the layers on an RPC server on loopback vs local",
  async run(ctx) {
    const { options } = ctx;
    const model = (await ctx.models()).q8_0;
    const settings = {
      threads: options.threads,
      promptTokens: 128,
      genTokens: options.quick ? 32 : 64,
      context: { contextSize: 256, batchSize: 512, threads: options.threads, flashAttention: "on", kvCacheType: "f16" },
    };
    const prompt = await ctx.prompt(settings.promptTokens);
    const lib = await import(pathToFileURL(path.join(ROOT, "dist", "index.js")).href);
    const server = await lib.startRpcServer({ threads: options.threads });
    const samples = { local: new Samples(), rpc: new Samples() };
    try {
      for (let rep = 0; rep < options.reps; rep++) {
        ctx.progress(`rpc: repetition ${rep + 1}/${options.reps}`);
        const order = rep % 2 === 0 ? ["local", "rpc"] : ["rpc", "local"];
        for (const where of order) {
          const task = { mode: "rpc", model: model.file, prompt, nGen: settings.genTokens, context: settings.context };
          if (where === "rpc") task.rpcServers = [server.endpoint];
          samples[where].add(await ctx.runWorker("ours-worker.mjs", task));
        }
      }
    } finally {
      await server.close();
    }
    const local = samples.local.medians();
    const rpc = samples.rpc.medians();
    const table = {
      title: `rpc: GPT-2 small ${model.type}, ${settings.threads} threads, every layer on one RPC server on loopback, median of ${options.reps}`,
      columns: ["metric", "local", "RPC (loopback)", "RPC / local"],
      rows: [
        ["prompt tokens/s", fmt(local.promptTokensPerS), fmt(rpc.promptTokensPerS), fmtRatio(ratio(rpc.promptTokensPerS, local.promptTokensPerS))],
        ["generation tokens/s", fmt(local.genTokensPerS), fmt(rpc.genTokensPerS), fmtRatio(ratio(rpc.genTokensPerS, local.genTokensPerS))],
        ["model load (ms)", fmt(local.loadMs), fmt(rpc.loadMs), fmtRatio(ratio(rpc.loadMs, local.loadMs))],
      ],
      notes: [],
    };
    return { results: { settings, model, samples, medians: { local, rpc } }, tables: [table] };
  },
};
