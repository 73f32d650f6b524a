/**
 * Distributed inference over ggml's RPC backend: `llama-napi rpc-server` (or startRpcServer())
 * runs a server; `loadModel(path, { rpcServers })` places the model's layers on servers.
 *
 * The RPC protocol has no authentication and no encryption: anyone who can reach the port can
 * run computations and read or write the server's memory. Servers listen on 127.0.0.1 unless
 * asked otherwise; only open them on networks you trust.
 */
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import path from "node:path";

import { LlamaError, checkOptions, invalidArgument } from "./errors.js";
import { binding, packageRoot } from "./native.js";
import { optionKeys, rejectUnknownKeys } from "./options/suggest.js";


/** Options of {@link startRpcServer}. */
export interface RpcServerOptions {
  /** Address to listen on (default 127.0.0.1; anything else exposes the server: see above). */
  host?: string;
  /** Port (default: a free port chosen for you). */
  port?: number;
  /** CPU threads the server computes with. */
  threads?: number;
  /** Memory the server offers to clients, in MiB (default: what the machine has). */
  memoryMiB?: number;
  /** How long to wait for the server to accept connections (default 10 s). */
  startTimeoutMs?: number;
}

/** An RPC server started by {@link startRpcServer}: its endpoint for `loadModel({ rpcServers })`, and how to stop it. */
export interface RpcServer {
  /** host:port, as loadModel({ rpcServers }) takes it. */
  readonly endpoint: string;
  readonly pid: number;
  /** Stops the server process. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const listeners = new Set<(error: LlamaError) => void>();
let handlerInstalled = false;

/** @internal Calls `listener` when an RPC server in use fails; returns the unsubscribe function. */
export function onRpcFailure(listener: (error: LlamaError) => void): () => void {
  if (!handlerInstalled) {
    handlerInstalled = true;
    binding().setRpcFailureHandler((message) => {
      const error = new LlamaError(
        "ERR_RPC",
        `An RPC server failed (${message.trim()}). The contexts of models on RPC servers stopped; ` +
          "load the model again once the servers are back.",
      );
      for (const l of [...listeners]) l(error);
    });
  }
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Checks that an RPC server answers the handshake in time and speaks this protocol version. */
export function checkRpcServer(endpoint: string, timeoutMs = 5000): Promise<void> {
  if (typeof endpoint !== "string") invalidArgument("endpoint", "a host:port string", endpoint);
  return binding().rpcProbe(endpoint, timeoutMs);
}

async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/**
 * Starts an RPC server in a child process (the `llama-napi rpc-server` command of this package)
 * and resolves once it accepts connections.
 */
export async function startRpcServer(options: RpcServerOptions = {}): Promise<RpcServer> {
  checkOptions("rpc server options", options);
  rejectUnknownKeys("rpc server options", options, optionKeys<RpcServerOptions>({ host: true, port: true, threads: true, memoryMiB: true, startTimeoutMs: true }));
  const host = options.host ?? "127.0.0.1";
  if (typeof host !== "string" || host === "") invalidArgument("host", "a host name or address", host);
  const port = options.port ?? (await freePort(host));
  if (!Number.isInteger(port) || port < 1 || port > 65535) invalidArgument("port", "an integer from 1 to 65535", port);
  const args = [path.join(packageRoot, "dist", "cli", "main.js"), "rpc-server", "--host", host, "--port", String(port)];
  if (options.threads !== undefined) args.push("--threads", String(options.threads));
  if (options.memoryMiB !== undefined) args.push("--mem", String(options.memoryMiB));
  const child: ChildProcess = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-2000)));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const endpoint = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
  for (;;) {
    if (child.exitCode !== null) {
      throw new LlamaError("ERR_RPC", `The RPC server exited (code ${child.exitCode}) before accepting connections: ${stderr.trim()}`);
    }
    try {
      await checkRpcServer(endpoint, 1000);
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new LlamaError("ERR_RPC", `The RPC server on ${endpoint} did not start in time: ${(err as Error).message}`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  return { endpoint, pid: child.pid ?? -1, close, [Symbol.asyncDispose]: close };
}
