import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    globalSetup: ["tests/helpers/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Native work is CPU-bound and the CI machine has 2 cores: one file at a time keeps timings
    // (event-loop lag, abort latency) meaningful.
    fileParallelism: false,
  },
});
