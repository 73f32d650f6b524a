/**
 * Preloaded into every Node process of `npm run test:asan` (scripts/test-asan.mjs puts
 * `--import` of this file in NODE_OPTIONS; plain `npm test` does not load it). vitest stops its
 * worker processes with SIGTERM, which ends a process without running LeakSanitizer; exiting
 * normally on SIGTERM instead lets LeakSanitizer check every process that loaded the addon.
 *
 * Not in `llama-napi rpc-server` processes: their main thread stays inside ggml's server loop
 * (ggml_backend_rpc_start_server has no stop call), so a JS handler would never run and the
 * server would ignore SIGTERM for good. They keep the default action (SIGTERM ends them; ASan
 * and UBSan check them while they run, LeakSanitizer does not).
 */
import { isMainThread } from "node:worker_threads";

const isRpcServer = process.argv.slice(2).includes("rpc-server");
if (isMainThread && !isRpcServer) process.once("SIGTERM", () => process.exit(0));
