/**
 * Distributed inference over ggml's RPC backend: two servers on loopback (separate processes),
 * the F32 GPT-2 fixture's layers split across them, logits compared with a local run; then one
 * server is killed mid-generation.
 */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { checkRpcServer, loadModel, startRpcServer, type RpcServer } from "../src/index.js";
import { loadGpt2Reference } from "./reference/gpt2.js";
import { fixturePath } from "./helpers/fixtures.js";
import { maxAbsDiff } from "./helpers/math.js";

/** A TCP server on loopback that answers every connection with `reply` and closes it. */
async function fakeServer(reply: Buffer): Promise<{ endpoint: string; close: () => void }> {
  const server = net.createServer((socket) => {
    socket.once("data", () => socket.end(reply));
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return { endpoint: `127.0.0.1:${port}`, close: () => server.close() };
}

describe("RPC backend", () => {
  const servers: RpcServer[] = [];
  const file = fixturePath("gpt2-tiny-f32");
  const prompt = "The pizza came out of the oven and it tasted";

  beforeAll(async () => {
    servers.push(await startRpcServer({ threads: 1 }), await startRpcServer({ threads: 1 }));
  });
  afterAll(async () => {
    for (const s of servers) await s.close();
  });

  it("splits the layers across two servers and matches the local logits", async () => {
    using local = await loadModel(file);
    using localCtx = await local.createContext({ contextSize: 64, threads: 1, kvCacheType: "f32", flashAttention: "off" });
    using localSession = localCtx.createSession();
    await localSession.prompt(prompt);
    const expected = localSession.logits().slice();

    using remote = await loadModel(file, { rpcServers: servers.map((s) => s.endpoint), tensorSplit: [1, 1] });
    using ctx = await remote.createContext({ contextSize: 64, threads: 1, kvCacheType: "f32", flashAttention: "off" });
    using session = ctx.createSession();
    await session.prompt(prompt);
    const logits = session.logits();
    expect(maxAbsDiff(logits, expected)).toBeLessThan(1e-3);
    const reference = await loadGpt2Reference(file);
    expect(maxAbsDiff(logits, reference.forward([...session.tokens]).logits.at(-1)!)).toBeLessThan(1e-3);
    // Generation over RPC gives the local greedy tokens.
    const over = await session.generate({ maxTokens: 8, temperature: 0 }).collect();
    const here = await localSession.generate({ maxTokens: 8, temperature: 0 }).collect();
    expect(over.tokens).toEqual(here.tokens);
  });

  it("stops on SIGTERM even when a preloaded module listens for it (the server thread never returns to JS)", async () => {
    // As npm run test:asan's preload does: a JS SIGTERM listener cancels the default action.
    const preload = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-rpc-")), "listen-sigterm.mjs");
    fs.writeFileSync(preload, 'process.on("SIGTERM", () => {});\n');
    const before = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = [before, `--import=${preload}`].filter(Boolean).join(" ");
    let server: RpcServer;
    try {
      server = await startRpcServer({ threads: 1 });
    } finally {
      if (before === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = before;
    }
    const closed = await Promise.race([server.close().then(() => true), new Promise<boolean>((r) => setTimeout(r, 5_000, false))]);
    if (!closed) process.kill(server.pid, "SIGKILL"); // leave no server behind when it fails
    fs.rmSync(path.dirname(preload), { recursive: true, force: true });
    expect(closed).toBe(true);
  });

  it("refuses unreachable servers and servers that speak something else with ERR_RPC", async () => {
    const closed = await fakeServer(Buffer.alloc(0));
    const endpoint = closed.endpoint;
    closed.close();
    const start = Date.now();
    await expect(loadModel(file, { rpcServers: [endpoint] })).rejects.toMatchObject({ code: "ERR_RPC" });
    expect(Date.now() - start).toBeLessThan(10_000);

    const http = await fakeServer(Buffer.from("HTTP/1.1 400 Bad Request\r\n\r\n"));
    await expect(checkRpcServer(http.endpoint, 2000)).rejects.toMatchObject({ code: "ERR_RPC", message: expect.stringMatching(/does not speak/) });
    http.close();

    // A well-formed HELLO reply from protocol version 99.
    const reply = Buffer.alloc(8 + 28);
    reply.writeBigUInt64LE(28n, 0);
    reply[8] = 99;
    const future = await fakeServer(reply);
    await expect(loadModel(file, { rpcServers: [future.endpoint] })).rejects.toMatchObject({
      code: "ERR_RPC",
      message: expect.stringMatching(/protocol 99\.0\.0/),
    });
    future.close();
    await expect(loadModel(file, { rpcServers: ["no-port"] })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });

  it("fails with ERR_RPC within a bounded time when a server dies mid-generation; the process stays usable", async () => {
    const a = await startRpcServer({ threads: 1 });
    const b = await startRpcServer({ threads: 1 });
    const model = await loadModel(file, { rpcServers: [a.endpoint, b.endpoint] });
    const ctx = await model.createContext({ contextSize: 128, threads: 1 });
    const session = ctx.createSession();
    await session.prompt(prompt);
    // The decode thread runs ahead of the consumer, so the server is killed from a logits
    // processor, which that thread waits for: the kill lands before the 4th token, whatever
    // the machine's load.
    let sampled = 0;
    let killedAt = 0;
    const logitsProcessor = () => {
      if (++sampled === 3) {
        killedAt = Date.now();
        process.kill(b.pid, "SIGKILL");
      }
    };
    const err = await session
      .generate({ maxTokens: 100, temperature: 0, logitsProcessor })
      .collect()
      .catch((e: unknown) => e);
    expect(sampled).toBeGreaterThanOrEqual(3);
    await b.close();
    expect(err).toMatchObject({ code: "ERR_RPC" });
    expect(Date.now() - killedAt).toBeLessThan(10_000);
    expect(() => session.logits()).toThrow(expect.objectContaining({ code: "ERR_RPC" }));
    expect(() => ctx.createSession()).toThrow(expect.objectContaining({ code: "ERR_RPC" }));
    model.dispose(); // must not hang on the lost connection
    await a.close();

    // The process is still fine: a local model loads and generates.
    using local = await loadModel(file);
    using localCtx = await local.createContext({ contextSize: 64, threads: 1 });
    using s = localCtx.createSession();
    await s.prompt(prompt);
    expect((await s.generate({ maxTokens: 4, temperature: 0 }).collect()).tokens).toHaveLength(4);
  });
});
