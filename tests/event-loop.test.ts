/** Evaluation runs off the event loop: timers keep firing while a long prompt is decoded. */
import { monitorEventLoopDelay } from "node:perf_hooks";

import { describe, expect, it } from "vitest";

import { loadModel } from "../src/index.js";
import { fixturePath } from "./helpers/fixtures.js";

describe("event loop", () => {
  it("keeps running while a long prompt is evaluated", async () => {
    using model = await loadModel(fixturePath("gpt2-wide-f16"));
    using context = await model.createContext({ contextSize: 1024, batchSize: 1024, threads: 2 });
    using session = context.createSession();
    const tokens = Array.from({ length: 1000 }, (_, i) => 100 + ((i * 37) % 5000));

    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const histogram = monitorEventLoopDelay({ resolution: 1 });
    histogram.enable();
    const start = performance.now();
    await session.prompt(tokens);
    const elapsed = performance.now() - start;
    histogram.disable();
    clearInterval(timer);

    // The decode itself is long (one 1000-token batch), yet the loop stays responsive.
    expect(elapsed).toBeGreaterThan(50);
    const maxLagMs = histogram.max / 1e6;
    // Under npm run test:asan the decode takes about 2 s, and the vitest worker's histogram has
    // shown single pauses of about 100 ms there (a 5 ms timer beside it saw none; not seen in the
    // plain build, whose bound stays 50 ms): the loop still runs through the decode.
    expect(maxLagMs).toBeLessThan(process.env.LLAMA_NAPI_SANITIZER === undefined ? 50 : 250);
    expect(ticks).toBeGreaterThan(elapsed / 5 / 4);
    console.log(`prompt of 1000 tokens: ${elapsed.toFixed(0)} ms; event-loop lag p99 ${(histogram.percentile(99) / 1e6).toFixed(2)} ms, max ${maxLagMs.toFixed(2)} ms; ${ticks} timer ticks`);
  });
});
