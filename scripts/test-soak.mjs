#!/usr/bin/env node
/**
 * npm run test:soak [-- --minutes N] [--concurrency N] [--seed N]: the server under mixed traffic
 * for N minutes (default 10) on loopback, started in this process on the llama-tiny-f32 fixture
 * (2 sessions, a queue of 4, a 64 KiB body limit): completions and chats, streamed or not,
 * tool-call requests, clients that abort mid-stream, malformed JSON, oversized bodies, clients
 * that trickle their body, wrong keys; 8 clients at once by default, so that the queue fills.
 * At the end it prints the requests by kind and status, the RSS figures, and the pool's state,
 * and fails (exit 1) on a request not answered as its kind allows, an RSS drift of 10 % or more
 * between the first and last quarter of the samples, or a pool not back to 0 busy / 0 queued.
 * The driver is tests/helpers/soak.ts (tests/server-lifecycle.test.ts runs it for 20 s).
 */
import { register } from "node:module";
import { parseArgs } from "node:util";

register("../tests/helpers/ts-cached-loader.mjs", import.meta.url);

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    concurrency: { type: "string", default: "8" },
    seed: { type: "string", default: "1" },
  },
  strict: true,
});
const minutes = Number(values.minutes);
const concurrency = Number(values.concurrency);
const seed = Number(values.seed);
if (!(minutes > 0) || !Number.isInteger(concurrency) || concurrency < 1 || !Number.isInteger(seed)) {
  console.error("usage: npm run test:soak -- [--minutes N (> 0)] [--concurrency N] [--seed N]");
  process.exit(2);
}

const { ensureFixtures, fixturePath } = await import("../tests/helpers/fixtures.ts");
const { runSoak, formatReport, soakProblems, startSoakServer, SOAK_SERVER } = await import("../tests/helpers/soak.ts");

await ensureFixtures();
const server = await startSoakServer(fixturePath("llama-tiny-f32"));
let crashed = false;
process.on("uncaughtException", (err) => {
  crashed = true;
  console.error("uncaught exception:", err);
});
console.log(`soak: ${minutes} min against ${server.url} (parallel ${SOAK_SERVER.parallel}, maxQueue ${SOAK_SERVER.maxQueue}, ${concurrency} clients, seed ${seed})`);
const report = await runSoak({
  url: server.url,
  apiKey: SOAK_SERVER.apiKey,
  maxBodyBytes: SOAK_SERVER.maxBodyBytes,
  durationMs: Math.round(minutes * 60_000),
  concurrency,
  sampleEveryMs: 2000,
  seed,
  log: (line) => console.log(`  ${line}`),
});
await server.close({ drain: 5000 });
console.log(formatReport(report));
const problems = soakProblems(report);
if (crashed) problems.push("an uncaught exception happened");
if (problems.length > 0) {
  console.error(`soak FAILED: ${problems.join("; ")}`);
  process.exit(1);
}
console.log("soak passed");
