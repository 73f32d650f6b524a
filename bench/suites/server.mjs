/**
 * server: `llama-napi serve` against llama.cpp's llama-server (built from the vendored tree with
 * the same options) under the same concurrent streamed load (bench/lib/load.mjs): same model
 * (GPT-2 small Q8_0), threads, parallel sequences, context (`-c`: the whole context, divided
 * among `-np`, in both), batch size, flash attention and KV type, same request bodies.
 *
 * Scenarios, each at 4 and 8 parallel sequences with as many clients:
 *   distinct: streamed /v1/completions with short distinct prompts;
 *   system:   streamed /v1/chat/completions, every request the same long system prompt and a
 *             distinct short question;
 *   chat:     multi-turn chats: each client continues its own conversation over several turns.
 * Both servers are started fresh per scenario and parallelism and warmed up with one request;
 * their rounds then alternate, each starting once the server before it has used no CPU for 200 ms; each one's peak RSS (VmHWM) is read before it is stopped. Every reply is `genTokens`
 * tokens: llama-server reads `ignore_eos: true`; llama-napi has no such field, so the bodies also
 * carry `logit_bias` -100 (a ban) on the model's end-of-generation tokens, which both honour.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

import { ROOT } from "../lib/env.mjs";
import { runRound, streamRequest, waitHealthy } from "../lib/load.mjs";
import { Samples, fmt, fmtRatio, median, ratio } from "../lib/stats.mjs";
import { rng } from "../lib/text.mjs";

const PARALLEL = [4, 8];
// GPT-2 has 1024 learned positions: a sequence must stay within them, so each gets 1024 tokens
// (-c 1024 × np) and the shared system prompt is 800 tokens (+ chat markup, question and reply).
const CONTEXT_PER_SEQUENCE = 1024;
const SYSTEM_TOKENS = 800;
const CHAT_TURNS = 4;
const MAX_REPS = 3;

const WORDS = "a river crossed the quiet valley where old engines slept under snow and every lamp remembered summer while distant bells answered the patient harbour".split(" ");

function phrase(seed, words) {
  const r = rng(seed);
  return Array.from({ length: words }, () => WORDS[Math.floor(r() * WORDS.length)]).join(" ");
}

export default {
  name: "server",
  description: "llama-napi serve vs llama-server under concurrent streamed load: tokens/s, TTFT, inter-token latency, RSS",
  async run(ctx) {
    const { options } = ctx;
    const model = (await ctx.models()).q8_0;
    const tools = await ctx.tools();
    const vocab = await ctx.vocabModel();
    const special = vocab.specialTokens;
    const banned = [...new Set([special.eos, special.eot].filter((t) => Number.isInteger(t)))];
    const reps = options.quick ? 1 : Math.min(options.reps, MAX_REPS);
    const settings = {
      threads: options.threads,
      parallel: PARALLEL,
      contextPerSequence: CONTEXT_PER_SEQUENCE,
      batchSize: 512,
      ubatchSize: 512,
      flashAttention: "on",
      kvCacheType: "f16",
      unifiedKvCache: false,
      chatTemplate: "chatml",
      genTokens: options.quick ? 32 : 64,
      requestsPerClient: 4, // distinct and system: 4 × np requests per round; chat: np conversations of 4 turns
      systemPromptTokens: SYSTEM_TOKENS,
      chatTurns: CHAT_TURNS,
      sampling: "temperature 0 (greedy)",
      ignoreEos: `ignore_eos: true and logit_bias { ${banned.map((t) => `${t}: -100`).join(", ")} } (EOS banned) in every body`,
      reps,
      warmup: "one 8-token completion after /health answers 200",
    };
    const base = {
      max_tokens: settings.genTokens,
      temperature: 0,
      ignore_eos: true,
      logit_bias: Object.fromEntries(banned.map((t) => [String(t), -100])),
      stream_options: { include_usage: true },
    };
    const systemPrompt = await ctx.prompt(SYSTEM_TOKENS);

    const scenarios = [
      {
        name: "distinct",
        label: "distinct short prompts (/v1/completions)",
        plan: (np, rep) => ({
          kind: "queue",
          path: "/v1/completions",
          bodies: Array.from({ length: settings.requestsPerClient * np }, (_, i) => ({ ...base, prompt: `Story ${rep}.${i + 1}: ${phrase(1000 * rep + i, 14)}` })),
        }),
      },
      {
        name: "system",
        label: `shared ${SYSTEM_TOKENS}-token system prompt + distinct question (chat)`,
        plan: (np, rep) => ({
          kind: "queue",
          path: "/v1/chat/completions",
          bodies: Array.from({ length: settings.requestsPerClient * np }, (_, i) => ({
            ...base,
            messages: [
              { role: "system", content: systemPrompt },
              { role: "user", content: `Question ${rep}.${i + 1}: why does ${phrase(2000 + 1000 * rep + i, 8)}?` },
            ],
          })),
        }),
      },
      {
        name: "chat",
        label: `multi-turn chat, ${CHAT_TURNS} turns per client (chat)`,
        plan: (np, rep) => ({
          kind: "conversations",
          body: base,
          conversations: Array.from({ length: np }, (_, c) => ({
            turns: Array.from({ length: CHAT_TURNS }, (_, t) => `Turn ${t + 1} of chat ${rep}.${c + 1}: tell me about ${phrase(3000 + 1000 * rep + 10 * c + t, 8)}.`),
          })),
        }),
      },
    ];

    const impls = {
      "llama-napi": (np, port) => ({
        command: process.execPath,
        args: [
          path.join(ROOT, "dist", "cli", "main.js"), "serve", "-m", model.file, "--host", "127.0.0.1", "--port", `${port}`,
          "-np", `${np}`, "-c", `${CONTEXT_PER_SEQUENCE * np}`, "-t", `${settings.threads}`, "-tb", `${settings.threads}`,
          "-b", `${settings.batchSize}`, "-fa", settings.flashAttention, "-ctk", settings.kvCacheType,
          "--chat-template", settings.chatTemplate, "--quiet",
        ],
      }),
      "llama-server": (np, port) => ({
        command: tools["llama-server"],
        args: [
          "-m", model.file, "--host", "127.0.0.1", "--port", `${port}`,
          "-np", `${np}`, "-c", `${CONTEXT_PER_SEQUENCE * np}`, "-t", `${settings.threads}`, "-tb", `${settings.threads}`,
          "-b", `${settings.batchSize}`, "-ub", `${settings.ubatchSize}`, "-fa", settings.flashAttention,
          "-ctk", settings.kvCacheType, "-ctv", settings.kvCacheType, "--chat-template", settings.chatTemplate, "--no-webui",
        ],
      }),
    };
    const names = Object.keys(impls);

    const samples = {};
    const extra = {};
    const commands = {};
    let runIndex = 0;
    for (const scenario of scenarios) {
      for (const np of PARALLEL) {
        const key = `${scenario.name}/${np}`;
        samples[key] = Object.fromEntries(names.map((n) => [n, new Samples()]));
        extra[key] = Object.fromEntries(names.map((n) => [n, { errors: 0, short: 0, reconnects: 0, errorSamples: [], peakRssMb: NaN }]));
        const fail = (name, err) => {
          // Recorded and shown in the table's notes; the other configurations still run.
          ctx.progress(`server: ${key} ${name} failed: ${err.message}`);
          extra[key][name].errors += 1;
          extra[key][name].errorSamples.push(`failed: ${err.message.split("\n")[0]}`);
        };
        // Both servers start fresh for each configuration and are warmed up; then their rounds
        // alternate (A B, B A, A B, ...), so that both see the same background load on this
        // shared machine. The idle one waits on its sockets meanwhile.
        const servers = {};
        for (const name of names) {
          const port = await freePort();
          const { command, args } = impls[name](np, port);
          commands[name] ??= [path.basename(command), ...args.map((a) => (a === model.file ? "MODEL" : a === `${port}` ? "PORT" : a))].join(" ");
          ctx.progress(`server: ${key} ${name}: starting`);
          try {
            servers[name] = await startProcess(command, args, `http://127.0.0.1:${port}`);
            const warm = await streamRequest(servers[name].url, "/v1/completions", { ...base, prompt: "Warm-up:", max_tokens: 8 });
            if (!warm.ok) throw new Error(`the warm-up request failed: ${warm.error}`);
            await settle(servers[name].pid);
          } catch (err) {
            fail(name, err);
            await servers[name]?.stop();
            delete servers[name];
          }
        }
        try {
          for (let rep = 0; rep < reps; rep++) {
            const order = (runIndex + rep) % 2 === 0 ? names : [...names].reverse();
            for (const name of order.filter((n) => servers[n])) {
              const round = await runRound(servers[name].url, scenario.plan(np, rep), { clients: np, expectTokens: settings.genTokens, timeoutMs: 300_000 });
              ctx.progress(
                `server: ${key} ${name} round ${rep + 1}/${reps}: ${fmt(round.tokensPerS)} tok/s, TTFT p50 ${fmt(round.ttftP50)} ms, ` +
                  `ITL p50 ${fmt(round.itlP50)} ms, ${round.errors} errors, ${round.reconnects} reconnects, ${fmt(100 * round.cachedFraction)}% prompt cached`,
              );
              samples[key][name].add(round);
              // The next round (the other server's, or this one's) starts once this server is
              // quiet: llama-server's threads keep polling for work after its last decode (about
              // 0.12 s of CPU in the next 0.3 s, measured), which on 2 cores slowed the other
              // server's first decode 2.5-fold and its TTFT p99 with it.
              await settle(servers[name].pid);
              const e = extra[key][name];
              e.errors += round.errors;
              e.short += round.short;
              e.reconnects += round.reconnects;
              e.errorSamples.push(...round.errorSamples);
            }
          }
          for (const [name, server] of Object.entries(servers)) {
            if (server.exited) fail(name, new Error(server.exited));
            else extra[key][name].peakRssMb = peakRssMb(server.pid);
          }
        } finally {
          for (const server of Object.values(servers)) await server.stop();
        }
        runIndex++;
      }
    }

    // Tables: one per scenario; rows per metric, columns per parallelism.
    const metrics = [
      ["generated tokens/s", "tokensPerS", 1],
      ["TTFT p50 (ms)", "ttftP50", 0],
      ["TTFT p99 (ms)", "ttftP99", 0],
      ["ITL p50 (ms)", "itlP50", 1],
      ["ITL p99 (ms)", "itlP99", 1],
      ["prompt tokens cached (%)", "cachedFraction", 0],
    ];
    const perKey = {};
    const tables = [];
    for (const scenario of scenarios) {
      const rows = [];
      for (const np of PARALLEL) {
        const key = `${scenario.name}/${np}`;
        const m = Object.fromEntries(names.map((n) => [n, samples[key][n].medians()]));
        perKey[key] = { samples: samples[key], medians: m, ...extra[key] };
        for (const [label, field, digits] of metrics) {
          const scale = field === "cachedFraction" ? 100 : 1;
          const a = m["llama-napi"][field] * scale;
          const b = m["llama-server"][field] * scale;
          rows.push([`np ${np}: ${label}`, fmt(a, digits), fmt(b, digits), field === "cachedFraction" ? "" : fmtRatio(ratio(a, b))]);
        }
        const e = extra[key];
        rows.push([`np ${np}: errors (reconnects)`, ...names.map((n) => `${e[n].errors} (${e[n].reconnects})`), ""]);
        rows.push([`np ${np}: peak RSS (MB)`, fmt(e["llama-napi"].peakRssMb), fmt(e["llama-server"].peakRssMb), fmtRatio(ratio(e["llama-napi"].peakRssMb, e["llama-server"].peakRssMb))]);
      }
      const notes = names.flatMap((n) =>
        PARALLEL.flatMap((np) => (extra[`${scenario.name}/${np}`][n].errorSamples.length ? [`${n} np ${np} errors: ${[...new Set(extra[`${scenario.name}/${np}`][n].errorSamples)].slice(0, 2).join(" | ")}`] : [])),
      );
      tables.push({
        title: `server, ${scenario.label}: GPT-2 small ${model.type}, ${settings.threads} threads, ${settings.genTokens} tokens per reply, median of ${reps} rounds`,
        columns: ["metric", "llama-napi", "llama-server", "ratio"],
        rows,
        notes,
      });
    }
    const summaryRows = [];
    for (const scenario of scenarios) {
      for (const np of PARALLEL) {
        const m = perKey[`${scenario.name}/${np}`].medians;
        const e = perKey[`${scenario.name}/${np}`];
        summaryRows.push([
          `${scenario.name}, np ${np}`,
          fmtRatio(ratio(m["llama-napi"].tokensPerS, m["llama-server"].tokensPerS)),
          fmtRatio(ratio(m["llama-napi"].ttftP50, m["llama-server"].ttftP50)),
          fmtRatio(ratio(m["llama-napi"].ttftP99, m["llama-server"].ttftP99)),
          fmtRatio(ratio(m["llama-napi"].itlP50, m["llama-server"].itlP50)),
          fmtRatio(ratio(m["llama-napi"].itlP99, m["llama-server"].itlP99)),
          fmtRatio(ratio(e["llama-napi"].peakRssMb, e["llama-server"].peakRssMb)),
        ]);
      }
    }
    tables.push({
      title: "server: ratios llama-napi / llama-server (tokens/s: higher is better; latencies and RSS: lower is better)",
      columns: ["scenario", "tok/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "peak RSS"],
      rows: summaryRows,
      notes: [
        `settings: -np 4|8 with as many clients, -c ${CONTEXT_PER_SEQUENCE} × np, -t/-tb ${settings.threads}, -b ${settings.batchSize}, -fa ${settings.flashAttention}, KV ${settings.kvCacheType}, not unified, --chat-template ${settings.chatTemplate}; ${settings.sampling}; ${settings.ignoreEos}`,
        `rounds: distinct and system ${settings.requestsPerClient} × np streamed requests from np clients in a closed loop; chat np conversations of ${CHAT_TURNS} turns; the two servers run side by side, idle in turn, their rounds alternating, each once the server before it is quiet (no CPU for 200 ms); p50/p99 over the round's requests (TTFT) or token gaps (ITL), then the median over rounds`,
        "errors: requests that failed or replied short, over every round; reconnects: requests retried once on a fresh connection after the server had closed a kept-alive one under them (llama-server closes the connection after a streamed reply while announcing Keep-Alive; curl and the OpenAI SDKs retry the same way)",
        `llama-napi: ${commands["llama-napi"]}`,
        `llama-server: ${commands["llama-server"]}`,
      ],
    });
    const ratios = Object.fromEntries(Object.entries(perKey).map(([k, v]) => [k, { tokensPerSRatio: ratio(v.medians["llama-napi"].tokensPerS, v.medians["llama-server"].tokensPerS) }]));
    return { results: { settings, model, commands, scenarios: perKey, ratios, medianTokensPerSRatio: median(Object.values(ratios).map((r) => r.tokensPerSRatio)) }, tables };
  },
};

/** A free TCP port on loopback (closed again before the server binds it). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** CPU time (user + system) a live process has used, in clock ticks. */
function cpuTicks(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** Waits until the process has used no CPU for 200 ms (at most 5 s); where /proc is missing, not at all. */
async function settle(pid) {
  const start = performance.now();
  if (!fs.existsSync(`/proc/${pid}/stat`)) return;
  let last = cpuTicks(pid);
  while (performance.now() - start < 5000) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    const now = cpuTicks(pid);
    if (now === last) break;
    last = now;
  }
}

/** Peak resident set (VmHWM) of a live process, in MB (10^6 bytes). */
function peakRssMb(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/^VmHWM:\s+(\d+)\s+kB/m.exec(status)?.[1]);
  return (kb * 1024) / 1e6;
}

/** Spawns a server, waits for /health; resolves to { url, pid, stop() }. */
async function startProcess(command, args, url) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  let tail = "";
  const keep = (d) => (tail = (tail + d).slice(-4000));
  child.stdout.setEncoding("utf8").on("data", keep);
  child.stderr.setEncoding("utf8").on("data", keep);
  let exit = null;
  const exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      exit = `${path.basename(command)} exited with ${code ?? signal}:\n${tail}`;
      resolve();
    });
    child.on("error", (err) => {
      exit = `${path.basename(command)}: ${err.message}`;
      resolve();
    });
  });
  const stop = async () => {
    if (exit) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await waitHealthy(url, { timeoutMs: 120_000, exited: () => exit });
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    pid: child.pid,
    stop,
    get exited() {
      return exit;
    },
  };
}
