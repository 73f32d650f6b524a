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
 * shows both.
 *
 * Speculative decoding with a draft model (generate's `speculative` option) against plain
 * generation and against llama.cpp's `llama-speculative-simple` (examples/speculative-simple,
 * `--spec-type draft-simple`), the same files, threads, context (512, the draft's too), draft
 * length (8) and minimum probability (0) on both sides, greedy, end of generation banned. The
 * target is GPT-2 small with random weights (bench/lib/models.mjs); a second table, three cases:
 *
 *   a. Q8_0 drafting for itself (loaded twice, as llama-speculative-simple does): every draft token
 *      should be kept (the issue's bar), so its speed against plain is what the machinery costs;
 *   b. F16 target, Q4_0 draft of the same weights;
 *   c. Q8_0 target, a tiny GPT-2 (writeRandomGpt2's "tiny" shape with 1024 positions, so that it
 *      reaches as far as the target, F16) with other random weights: it rarely agrees, and
 *      drafting must then cost little (the issue's bar: at least 0.85x plain).
 *
 * Acceptance is counted alike on both sides: drafted = draft tokens decoded in the target's batch,
 * accepted = those the target's sampling confirmed. Ours shortens its drafts after misses (and
 * pauses drafting when one-token drafts miss); llama-speculative-simple always drafts its maximum
 * (with --spec-draft-p-min 0), so its drafted counts are higher where drafts miss.
 *
 * llama-speculative-simple runs twice per repetition: as given, and with --poll 0. It gives only
 * the target context a thread pool; the draft model's graphs run on threads ggml starts for each
 * graph while the target pool's workers spin, which on a machine with few cores slows it several
 * times over. Ours runs the draft model on the target context's pools.
 */
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { ROOT } from "../lib/env.mjs";
import { MODELS_DIR } from "../lib/models.mjs";
import { fmt, fmtRatio, median, ratio } from "../lib/stats.mjs";

const STORIES = path.join(ROOT, "..", "shared", "models", "stories260K.gguf");
const N_GEN = 256;
const LOOKUP = { ngramSize: 3, maxDraft: 8 };
const SPECULATIVE = { maxDraft: 8, minProbability: 0 };
/** Case c's draft: writeRandomGpt2's tiny shape, other weights than the target's (seed 42). */
const TINY_DRAFT_SEED = 7;
const TINY_DRAFT_CTX = 1024;

/**
 * Runs llama-lookup or llama-speculative-simple (their logs end alike: "decoded N tokens in S
 * seconds, speed: T t/s", n_drafted, n_accept) and reads tokens/s and the draft counts.
 */
async function runDraftingTool(ctx, tool, args) {
  const name = path.basename(tool);
  const out = await ctx.runCommand("sh", ["-c", `"$0" "$@" 2>&1`, tool, ...args, "--temp", "0", "--ignore-eos", "--seed", "1", "--log-colors", "off"]);
  const speed = /decoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s+([\d.]+) t\/s/.exec(out);
  const drafted = /n_drafted\s*=\s*(\d+)/.exec(out);
  const accepted = /n_accept\s*=\s*(\d+)/.exec(out);
  if (!speed || !drafted || !accepted) throw new Error(`unexpected ${name} output:\n${out.slice(-2000)}`);
  return { tokensPerS: Number(speed[3]), tokens: Number(speed[1]), drafted: Number(drafted[1]), accepted: Number(accepted[1]) };
}

/** llama-lookup's tokens/s and draft counts, from its log. */
async function llamaLookup(ctx, tool, model, prompt, threads) {
  const args = ["-m", model, "-p", prompt, "-n", String(N_GEN), "--spec-draft-n-max", String(LOOKUP.maxDraft), "-t", String(threads), "-c", "512"];
  return runDraftingTool(ctx, tool, args);
}

/**
 * llama-speculative-simple's tokens/s and draft counts, from its log (the draft context inherits
 * -c and -t). `extra`: more flags (["--poll", "0"]: its thread pools sleep instead of spinning).
 */
async function llamaSpeculative(ctx, tool, model, draft, prompt, threads, extra = []) {
  const args = ["-m", model, "-md", draft, "--spec-type", "draft-simple", "-p", prompt, "-n", String(N_GEN)];
  args.push("--spec-draft-n-max", String(SPECULATIVE.maxDraft), "--spec-draft-p-min", String(SPECULATIVE.minProbability), "-t", String(threads), "-c", "512", ...extra);
  return runDraftingTool(ctx, tool, args);
}

/** Case c's draft: a tiny GPT-2 with random weights other than the target's, made once into bench/.work/models. */
async function ensureTinyDraft(ctx) {
  const { GPT2_PRESETS, writeRandomGpt2 } = await import(pathToFileURL(path.join(ROOT, "dist", "fixtures", "gpt2.js")).href);
  const options = { ...GPT2_PRESETS.tiny, nCtx: TINY_DRAFT_CTX, seed: TINY_DRAFT_SEED, type: "f16" };
  const file = path.join(MODELS_DIR, `gpt2-tiny-ctx${TINY_DRAFT_CTX}-random-seed${TINY_DRAFT_SEED}-f16.gguf`);
  if (!fs.existsSync(file)) {
    ctx.log(`writing ${path.relative(ROOT, file)} (tiny GPT-2, random weights, F16: case c's draft)`);
    fs.mkdirSync(MODELS_DIR, { recursive: true });
    const temp = `${file}.${process.pid}.tmp`;
    await writeRandomGpt2(temp, options);
    fs.renameSync(temp, file);
  }
  return { file, type: "F16", bytes: fs.statSync(file).size, madeWith: `writeRandomGpt2(${JSON.stringify(options)})` };
}

const percent = (accepted, drafted) => `${((100 * accepted) / Math.max(1, drafted)).toFixed(0)}% (${accepted}/${drafted})`;

/** The draft-model cases: ours (bench/lib/ours-worker.mjs, mode "draft") and llama-speculative-simple, medians of `rounds`. */
async function draftModelCases(ctx, tools, rounds, context) {
  const { options } = ctx;
  const models = await ctx.models();
  const tiny = await ensureTinyDraft(ctx);
  const prompt = await ctx.prompt(32);
  const cases = [
    {
      name: "a. Q8_0 drafting for itself",
      model: models.q8_0.file,
      draft: models.q8_0.file,
      bar: "kept 100%",
      meets: (m) => m.acceptance === 1,
    },
    {
      // The same with an F32 KV cache and flash attention off: with F16 K/V and flash attention
      // the draft's one-token decodes and the target's batched check round differently, and a
      // near-tie can go the other way (a few drafts in a thousand here).
      name: "a. the same, F32 KV cache, flash attention off",
      model: models.q8_0.file,
      draft: models.q8_0.file,
      context: { kvCacheType: "f32", flashAttention: "off" },
      llamaFlags: ["-ctk", "f32", "-ctv", "f32", "-ctkd", "f32", "-ctvd", "f32", "-fa", "off"],
      bar: "kept 100%",
      meets: (m) => m.acceptance === 1,
    },
    { name: "b. F16 target, Q4_0 draft (same weights)", model: models.f16.file, draft: models.q4_0.file, bar: "", meets: null },
    {
      name: "c. Q8_0 target, tiny random draft",
      model: models.q8_0.file,
      draft: tiny.file,
      bar: ">= 0.85x plain",
      meets: (m) => ratio(m.draft, m.plain) >= 0.85,
    },
  ];
  const rows = [];
  const results = [];
  for (const c of cases) {
    ctx.progress(`speculative: draft model, ${c.name}`);
    const measured = await ctx.attempt(`speculative: ${c.name}`, async () => {
      const ours = await ctx.runWorker("ours-worker.mjs", { mode: "draft", model: c.model, draft: c.draft, prompt, nGen: N_GEN, rounds, speculative: SPECULATIVE, context: { ...context, ...c.context } });
      const flags = c.llamaFlags ?? [];
      const raw = [];
      const rawNoPoll = [];
      const tool = tools["llama-speculative-simple"];
      for (let r = 0; r < rounds; r++) {
        raw.push(await llamaSpeculative(ctx, tool, c.model, c.draft, prompt, options.threads, flags));
        rawNoPoll.push(await llamaSpeculative(ctx, tool, c.model, c.draft, prompt, options.threads, [...flags, "--poll", "0"]));
      }
      return { ours, raw, rawNoPoll };
    });
    if (!measured) {
      rows.push([c.name, ...Array(11).fill("failed")]);
      results.push({ case: c.name, model: c.model, draft: c.draft, error: true });
      continue;
    }
    const { ours, raw, rawNoPoll } = measured;
    const rawDrafted = raw.reduce((a, x) => a + x.drafted, 0);
    const rawAccepted = raw.reduce((a, x) => a + x.accepted, 0);
    const m = {
      plain: median(ours.plainTokensPerS),
      draft: median(ours.draftTokensPerS),
      rawDraft: median(raw.map((x) => x.tokensPerS)),
      rawDraftNoPoll: median(rawNoPoll.map((x) => x.tokensPerS)),
      acceptance: ours.accepted / Math.max(1, ours.drafted),
      rawAcceptance: rawAccepted / Math.max(1, rawDrafted),
    };
    const meets = c.meets ? (c.meets(m) ? "yes" : "NO") : "";
    results.push({ case: c.name, model: c.model, draft: c.draft, bar: c.bar, meetsBar: c.meets ? c.meets(m) : null, ours, raw, rawNoPoll, medians: m });
    rows.push([
      c.name,
      fmt(m.plain),
      fmt(m.draft),
      fmtRatio(ratio(m.draft, m.plain)),
      percent(ours.accepted, ours.drafted),
      fmt(m.rawDraft),
      percent(rawAccepted, rawDrafted),
      fmtRatio(ratio(m.draft, m.rawDraft)),
      fmt(m.rawDraftNoPoll),
      fmtRatio(ratio(m.draft, m.rawDraftNoPoll)),
      ours.sameText ? "yes" : "NO",
      c.bar ? `${c.bar}: ${meets}` : "",
    ]);
  }
  const table = {
    title: `speculative, draft model: greedy, ${N_GEN} tokens, ${options.threads} threads, context 512, ${JSON.stringify(SPECULATIVE)} (llama-speculative-simple --spec-draft-n-max ${SPECULATIVE.maxDraft} --spec-draft-p-min ${SPECULATIVE.minProbability}), median of ${rounds} (tokens/s)`,
    columns: ["case", "plain", "with draft", "draft / plain", "kept (ours)", "llama-spec-simple", "kept (llama)", "ours / llama", "llama --poll 0", "ours / llama --poll 0", "same text as plain", "issue's bar"],
    rows,
    notes: [
      "kept: draft tokens the target confirmed / draft tokens decoded with the target, summed over the timed runs; ours shortens drafts after misses, llama-speculative-simple always drafts 8",
      "llama --poll 0: the same with --poll 0. llama-speculative-simple gives only its target context a thread pool, whose workers spin (--poll 50) while the draft model runs on threads of its own, so on few cores they share them; ours runs the draft model on the target's pools",
      "llama-speculative-simple's tokens/s counts from its first draft after the prompt (its decode of the prompt's last token included); ours from the first generated token to the last",
      `c's draft: ${tiny.madeWith}`,
    ],
  };
  return { results: { settings: { nGen: N_GEN, speculative: SPECULATIVE, rounds, context, tinyDraft: tiny }, cases: results }, table };
}

export default {
  name: "speculative",
  description: "n-gram lookup and draft-model speculative decoding vs plain generation, llama-lookup and llama-speculative-simple (greedy)",
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
    const draftModel = await draftModelCases(ctx, tools, rounds, context);
    return {
      results: { settings: { nGen: N_GEN, lookup: LOOKUP, rounds, context }, cases: results, draftModel: draftModel.results },
      tables: [table, draftModel.table],
    };
  },
};
