import { parseArgs } from "node:util";

import { binding } from "../native.js";
import { defaultThreads } from "../context.js";
import { UsageError, intOption } from "./args.js";

export const rpcServerUsage = `llama-napi rpc-server [--host 127.0.0.1] [--port 50052] [--threads N] [--mem MB]

Runs a ggml RPC server: other machines can put model layers on this one with
loadModel(path, { rpcServers: ["host:port"] }).

WARNING: the RPC protocol has no authentication and no encryption. Anyone who can reach the
port can run computations and read or write this server's memory. It listens on 127.0.0.1
unless --host says otherwise; only listen more widely on a network you trust.

      --host HOST       address to listen on (default 127.0.0.1)
      --port N          port (default 50052)
  -t, --threads N       CPU threads (default: all available)
      --mem MB          memory to offer clients, in MiB (default: what the machine has)`;

export async function runRpcServer(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      threads: { type: "string", short: "t" },
      mem: { type: "string" },
    },
    strict: true,
  });
  const host = values.host ?? "127.0.0.1";
  const port = intOption(values.port, "--port") ?? 50052;
  if (port < 1 || port > 65535) throw new UsageError("--port must be from 1 to 65535");
  const threads = intOption(values.threads, "--threads") ?? defaultThreads();
  const mem = intOption(values.mem, "--mem") ?? 0;
  if (threads < 1) throw new UsageError("--threads must be at least 1");
  if (mem < 0) throw new UsageError("--mem must not be negative");
  const loopback = host === "127.0.0.1" || host === "localhost" || host === "::1";
  if (!loopback) {
    process.stderr.write(
      `WARNING: listening on ${host}, not 127.0.0.1. The RPC protocol has no authentication: ` +
        "never expose this server to a network you do not trust.\n",
    );
  }
  const endpoint = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  process.stderr.write(`llama-napi rpc-server listening on ${endpoint} (${threads} threads)\n`);
  // rpcServe never returns: this thread stays in ggml's server loop, which has no stop call, so
  // a JS signal listener (a host's, or an --import preload's) could never run and would only
  // cancel the signal's default action, leaving a server that ignores SIGTERM. Drop them.
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.removeAllListeners(signal);
  binding().rpcServe(endpoint, threads, mem); // serves until the process is stopped
  return 0;
}
