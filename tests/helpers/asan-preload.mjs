/**
 * Preloaded into every Node process of `npm run test:asan` (scripts/test-asan.mjs puts
 * `--import` of this file in NODE_OPTIONS; plain `npm test` does not load it). vitest stops its
 * worker processes with SIGTERM, which ends a process without running LeakSanitizer; exiting
 * normally on SIGTERM instead lets LeakSanitizer check every process that loaded the addon.
 * (`llama-napi rpc-server` drops this listener before it enters ggml's server loop, where JS
 * never runs again: SIGTERM ends those processes without a leak check.)
 */
import { isMainThread } from "node:worker_threads";

if (isMainThread) process.once("SIGTERM", () => process.exit(0));
