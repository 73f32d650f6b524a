/**
 * tokenize: model.tokenize (llama-napi, GPT-2 vocabulary loaded vocab-only) against llama.cpp's
 * own llama_tokenize (bench/llama-tools/tokenize-bench.cpp) on the same varied text, in MB/s.
 * Both must produce the same number of tokens.
 */
import fs from "node:fs";
import path from "node:path";

import { Samples, fmt, fmtRatio, ratio } from "../lib/stats.mjs";
import { variedText } from "../lib/text.mjs";

export default {
  name: "tokenize",
  description: "model.tokenize MB/s vs llama.cpp's llama_tokenize on 1 MB of varied text",
  async run(ctx) {
    const { options } = ctx;
    const models = await ctx.models();
    const tools = await ctx.tools();
    const bytes = options.quick ? 256 * 1024 : 1024 * 1024;
    const seed = 2024;
    const text = variedText(bytes, seed);
    const textFile = path.join(ctx.workDir, `tokenize-${bytes}-seed${seed}.txt`);
    fs.writeFileSync(textFile, text);
    // Each process tokenizes once to warm up, then `inner` timed times; the median of all is quoted.
    const inner = options.quick ? 1 : 2;
    const samples = { ours: new Samples(), llama: new Samples() };
    const tokenCounts = { ours: new Set(), llama: new Set() };
    for (let rep = 0; rep < options.reps; rep++) {
      ctx.progress(`tokenize: repetition ${rep + 1}/${options.reps}`);
      const ours = await ctx.runWorker("ours-worker.mjs", { mode: "tokenize", vocab: models.vocab.file, textFile, reps: inner });
      for (const ms of ours.timesMs) samples.ours.add({ ms, mbPerS: ours.bytes / 1e6 / (ms / 1e3) });
      tokenCounts.ours.add(ours.tokens);

      // tokenize-bench's first run is its warm-up.
      const raw = ctx.lastJsonLine(await ctx.runCommand(tools["tokenize-bench"], [models.vocab.file, textFile, `${inner + 1}`]));
      for (const ms of raw.times_ms.slice(1)) samples.llama.add({ ms, mbPerS: raw.bytes / 1e6 / (ms / 1e3) });
      tokenCounts.llama.add(raw.tokens);
    }
    const medians = { ours: samples.ours.medians(), llama: samples.llama.medians() };
    const counts = { ours: [...tokenCounts.ours], llama: [...tokenCounts.llama] };
    const sameTokens = counts.ours.length === 1 && counts.llama.length === 1 && counts.ours[0] === counts.llama[0];
    const mbRatio = ratio(medians.ours.mbPerS, medians.llama.mbPerS);
    const results = { text: { file: textFile, bytes: Buffer.byteLength(text), seed }, samples, medians, tokenCounts: counts, sameTokens, ratio: mbRatio };
    const table = {
      title: `tokenize: ${fmt(Buffer.byteLength(text) / 1e6, 2)} MB of varied text, GPT-2 vocabulary, median of ${samples.ours.get("ms").length}`,
      columns: ["implementation", "MB/s", "ms", "tokens", "vs llama.cpp"],
      rows: [
        ["llama-napi model.tokenize", fmt(medians.ours.mbPerS), fmt(medians.ours.ms), counts.ours.join("/"), fmtRatio(mbRatio)],
        ["llama.cpp llama_tokenize", fmt(medians.llama.mbPerS), fmt(medians.llama.ms), counts.llama.join("/"), fmtRatio(1)],
      ],
      notes: [
        sameTokens ? "same token count: yes" : "WARNING: the token counts differ",
        "text: English, code, numbers, multilingual and emoji from a seeded generator; addSpecial on, parseSpecial off",
      ],
    };
    return { results, tables: [table] };
  },
};
