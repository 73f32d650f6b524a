/**
 * resolveModelFile(), loadModel("hf:...") and `llama-napi pull` against a local server that acts
 * like the Hugging Face hub (tests/helpers/fake-hub.ts): redirects, Range, X-Linked-Etag, a
 * connection cut mid-file, a wrong checksum, 404. The hub endpoint is pointed at 127.0.0.1 with
 * LLAMA_NAPI_HF_ENDPOINT, so nothing outside loopback is contacted. Oracles: node:crypto's sha256
 * of the bytes the server holds, and the server's request log.
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";

import { LlamaError, loadModel, modelsDirectory, resolveModelFile, type DownloadProgress } from "../src/index.js";
import { startFakeHub, sha256, type FakeHub } from "./helpers/fake-hub.js";
import { repoRoot } from "./helpers/fixtures.js";

const run = promisify(execFile);
const MAIN = path.join(repoRoot, "dist", "cli", "main.js");
const STORIES = path.join(repoRoot, "models", "stories260K.gguf");

const DATA = Buffer.concat([Buffer.from("GGUF"), randomBytes(300_000 - 4)]); // the magic, then anything
const REF = "hf:acme/tiny-GGUF/tiny-Q8_0.gguf";

let hub: FakeHub;
let cache: string;
const saved = { ...process.env };

/** Every file under `dir`, relative. */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<LlamaError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LlamaError);
  expect((err as LlamaError).code).toBe(code);
  return err as LlamaError;
}

beforeAll(async () => {
  hub = await startFakeHub();
  hub.add("acme/tiny-GGUF/tiny-Q8_0.gguf", DATA);
  hub.add("acme/tiny-GGUF/sub/dir/nested.gguf", DATA.subarray(0, 1000));
  hub.add("acme/stories/stories260K.gguf", fs.readFileSync(STORIES));
  hub.add("acme/web/page.gguf", Buffer.from("<!doctype html><html><body>the file's page</body></html>"));
});
afterAll(async () => {
  await hub?.close();
});
beforeEach(() => {
  cache = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-pull-"));
  process.env.LLAMA_NAPI_MODELS = cache;
  process.env.LLAMA_NAPI_HF_ENDPOINT = hub.url;
  delete process.env.HF_TOKEN;
  hub.faults = {};
  hub.requests.length = 0;
});
afterEach(() => {
  for (const key of ["LLAMA_NAPI_MODELS", "LLAMA_NAPI_HF_ENDPOINT", "HF_TOKEN"]) {
    if (saved[key] === undefined) delete process.env[key];
    else process.env[key] = saved[key];
  }
  fs.rmSync(cache, { recursive: true, force: true });
});

describe("resolveModelFile", () => {
  it("downloads hf:OWNER/REPO/FILE through the hub's redirect into the cache, checked, and uses the cache afterwards", async () => {
    const progress: DownloadProgress[] = [];
    const file = await resolveModelFile(REF, { onProgress: (p) => progress.push(p) });
    expect(modelsDirectory()).toBe(cache);
    expect(file).toBe(path.join(cache, "acme", "tiny-GGUF", "tiny-Q8_0.gguf"));
    expect(sha256(fs.readFileSync(file))).toBe(sha256(DATA));
    expect(filesUnder(cache)).toEqual([path.join("acme", "tiny-GGUF", "tiny-Q8_0.gguf")]);
    expect(hub.requests.map((r) => [r.server, r.path])).toEqual([
      ["hub", "/acme/tiny-GGUF/resolve/main/tiny-Q8_0.gguf"],
      ["cdn", `/cdn/${encodeURIComponent("acme/tiny-GGUF/tiny-Q8_0.gguf")}?X-Amz-Signature=abc`],
    ]);
    expect(hub.requests.every((r) => r.range === undefined)).toBe(true);
    expect(progress.at(-1)).toEqual({ downloadedBytes: DATA.length, totalBytes: DATA.length, resumedFromBytes: 0 });

    hub.requests.length = 0;
    expect(await resolveModelFile(REF)).toBe(file);
    expect(hub.requests).toEqual([]); // found in the cache: no request

    // A file in a folder of the repository, and a plain URL.
    const nested = await resolveModelFile("hf:acme/tiny-GGUF/sub/dir/nested.gguf");
    expect(nested).toBe(path.join(cache, "acme", "tiny-GGUF", "sub", "dir", "nested.gguf"));
    expect(sha256(fs.readFileSync(nested))).toBe(sha256(DATA.subarray(0, 1000)));
    const port = new URL(hub.url).port;
    const plain = await resolveModelFile(`${hub.url}/files/tiny-Q8_0.gguf`);
    expect(plain).toBe(path.join(cache, `127.0.0.1_${port}`, "files", "tiny-Q8_0.gguf"));
    expect(sha256(fs.readFileSync(plain))).toBe(sha256(DATA));
  });

  it("resumes with a Range request when the connection is cut mid-file", async () => {
    hub.faults = { cutAfter: { bytes: 100_000, times: 1 } };
    const file = await resolveModelFile(REF);
    expect(sha256(fs.readFileSync(file))).toBe(sha256(DATA));
    const ranged = hub.requests.filter((r) => r.path.startsWith("/cdn/"));
    expect(ranged).toHaveLength(2);
    expect(ranged[0]!.range).toBeUndefined();
    const from = Number(/^bytes=(\d+)-$/.exec(ranged[1]!.range ?? "")?.[1]);
    expect(from).toBeGreaterThan(0);
    expect(from).toBeLessThanOrEqual(100_000);
    expect(filesUnder(cache)).toEqual([path.join("acme", "tiny-GGUF", "tiny-Q8_0.gguf")]);
  });

  it("keeps the partial file when the retries run out, and the next call resumes it", async () => {
    hub.faults = { cutAfter: { bytes: 120_000, times: 1 } };
    const err = await expectCode(resolveModelFile(REF, { retries: 0 }), "ERR_DOWNLOAD");
    expect(err.message).toMatch(/run the same download again to resume/);
    const partial = path.join(cache, "acme", "tiny-GGUF", "tiny-Q8_0.gguf.partial");
    expect(filesUnder(cache)).toEqual([path.relative(cache, partial)]);
    const kept = fs.statSync(partial).size;
    expect(kept).toBeGreaterThan(0);
    expect(fs.readFileSync(partial).equals(DATA.subarray(0, kept))).toBe(true);

    hub.requests.length = 0;
    const progress: DownloadProgress[] = [];
    const file = await resolveModelFile(REF, { onProgress: (p) => progress.push(p) });
    expect(hub.requests.find((r) => r.path.startsWith("/cdn/"))?.range).toBe(`bytes=${kept}-`);
    expect(sha256(fs.readFileSync(file))).toBe(sha256(DATA));
    expect(progress.at(-1)).toEqual({ downloadedBytes: DATA.length, totalBytes: DATA.length, resumedFromBytes: kept });
    expect(filesUnder(cache)).toEqual([path.relative(cache, file)]);
  });

  it("stops on its signal with ERR_ABORTED, keeping the partial file for the next call", async () => {
    const controller = new AbortController();
    const err = await expectCode(resolveModelFile(REF, { signal: controller.signal, onProgress: () => controller.abort() }), "ERR_ABORTED");
    expect(err.message).toMatch(/aborted/);
    const partial = path.join(cache, "acme", "tiny-GGUF", "tiny-Q8_0.gguf.partial");
    const kept = fs.statSync(partial).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(DATA.length);
    expect(filesUnder(cache)).toEqual([path.relative(cache, partial)]); // no lock left either
    hub.requests.length = 0;
    expect(sha256(fs.readFileSync(await resolveModelFile(REF)))).toBe(sha256(DATA));
    expect(hub.requests.find((r) => r.server === "cdn")?.range).toBe(`bytes=${kept}-`);
  });

  it("starts over when the server answers a Range request with the whole file", async () => {
    const partial = path.join(cache, "acme", "tiny-GGUF", "tiny-Q8_0.gguf.partial");
    fs.mkdirSync(path.dirname(partial), { recursive: true });
    fs.writeFileSync(partial, Buffer.alloc(5000, 7)); // wrong bytes: must not survive
    hub.faults = { ignoreRange: true };
    const file = await resolveModelFile(REF);
    expect(hub.requests.find((r) => r.path.startsWith("/cdn/"))?.range).toBe("bytes=5000-");
    expect(sha256(fs.readFileSync(file))).toBe(sha256(DATA));
  });

  it("refuses a file whose sha256 is not the one the hub announces, and leaves nothing in the cache", async () => {
    const wrong = sha256(Buffer.from("something else"));
    hub.faults = { wrongSha256: wrong };
    const err = await expectCode(resolveModelFile(REF), "ERR_CHECKSUM");
    expect(err.message).toContain(wrong);
    expect(err.message).toContain(sha256(DATA));
    expect(filesUnder(cache)).toEqual([]);
    // The same with the sha256 as the ETag of a file served without a redirect.
    hub.faults = { direct: true, wrongSha256: wrong };
    expect((await expectCode(resolveModelFile(REF), "ERR_CHECKSUM")).message).toContain(wrong);
    expect(filesUnder(cache)).toEqual([]);
    hub.faults = { direct: true };
    hub.requests.length = 0;
    expect(sha256(fs.readFileSync(await resolveModelFile(REF, { force: true })))).toBe(sha256(DATA));
    expect(hub.requests.map((r) => r.server)).toEqual(["hub"]);
    fs.rmSync(path.join(cache, "acme"), { recursive: true });
    // Without an announced sha256 the same bytes are accepted (the size is still checked).
    hub.faults = { noEtag: true };
    expect(sha256(fs.readFileSync(await resolveModelFile(REF)))).toBe(sha256(DATA));
  });

  it("gives ERR_DOWNLOAD for a file the hub does not have (404), and ERR_INVALID_ARGUMENT for a malformed reference", async () => {
    const err = await expectCode(resolveModelFile("hf:acme/tiny-GGUF/missing.gguf"), "ERR_DOWNLOAD");
    expect(err.message).toMatch(/HTTP 404/);
    expect(err.message).toMatch(/owner, repository and file name/);
    expect(filesUnder(cache)).toEqual([]);
    await expectCode(resolveModelFile("hf:acme/tiny-GGUF"), "ERR_INVALID_ARGUMENT");
    await expectCode(resolveModelFile("hf:acme/tiny-GGUF/../../etc/passwd"), "ERR_INVALID_ARGUMENT");
    await expectCode(resolveModelFile(path.join(cache, "nope.gguf")), "ERR_FILE_NOT_FOUND");
    expect((await expectCode(resolveModelFile(REF, { retries: -1 }), "ERR_INVALID_ARGUMENT")).message).toMatch(/retries must be an integer from 0 to 100; got -1/);
    expect((await expectCode(resolveModelFile(REF, { retrys: 1 } as never), "ERR_INVALID_ARGUMENT")).message).toMatch(/did you mean "retries"/);
    await expectCode(resolveModelFile(REF, { onProgress: 1 } as never), "ERR_INVALID_ARGUMENT");
    expect(hub.requests.map((r) => r.path)).toEqual(["/acme/tiny-GGUF/resolve/main/missing.gguf"]);
  });

  it("sends HF_TOKEN to the hub only, not to the CDN it redirects to", async () => {
    process.env.HF_TOKEN = "hf_secret";
    await resolveModelFile(REF);
    expect(hub.requests.map((r) => [r.server, r.authorization])).toEqual([
      ["hub", "Bearer hf_secret"],
      ["cdn", undefined],
    ]);
  });

  it("shares one download between calls of a process, refuses a file another live process is downloading, and takes over a stale lock", async () => {
    const [a, b] = await Promise.all([resolveModelFile(REF), resolveModelFile(REF)]);
    expect(a).toBe(b);
    expect(hub.requests.filter((r) => r.server === "cdn")).toHaveLength(1);
    expect(sha256(fs.readFileSync(a))).toBe(sha256(DATA));

    const target = path.join(cache, "acme", "tiny-GGUF", "sub", "dir", "nested.gguf");
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(`${target}.lock`, String(process.ppid)); // the test runner: alive
    const err = await expectCode(resolveModelFile("hf:acme/tiny-GGUF/sub/dir/nested.gguf"), "ERR_BUSY");
    expect(err.message).toContain(`pid ${process.ppid}`);
    expect(fs.existsSync(target)).toBe(false);

    const ended = spawn(process.execPath, ["-e", ""]);
    await new Promise((r) => ended.on("exit", r));
    fs.writeFileSync(`${target}.lock`, String(ended.pid));
    expect(await resolveModelFile("hf:acme/tiny-GGUF/sub/dir/nested.gguf")).toBe(target);
    expect(filesUnder(path.dirname(target))).toEqual(["nested.gguf"]); // lock removed
  });

  it("refuses a .gguf that is not one (a web page), leaving nothing", async () => {
    const err = await expectCode(resolveModelFile(`${hub.url}/files/page.gguf`), "ERR_DOWNLOAD");
    expect(err.message).toMatch(/is not a GGUF file.*resolve\/main/);
    expect(filesUnder(cache)).toEqual([]);
  });

  it("gives ERR_DOWNLOAD when the cache folder cannot be made", async () => {
    const notAFolder = path.join(cache, "file");
    fs.writeFileSync(notAFolder, "");
    process.env.LLAMA_NAPI_MODELS = notAFolder; // a file where the folder should be (fails for root too)
    const err = await expectCode(resolveModelFile(REF), "ERR_DOWNLOAD");
    expect(err.message).toMatch(/check that the folder is writable/);
    expect(hub.requests).toEqual([]);
  });

  it("loadModel accepts hf:OWNER/REPO/FILE.gguf and loads the downloaded model", async () => {
    using model = await loadModel("hf:acme/stories/stories260K.gguf");
    expect(model.path).toBe(path.join(cache, "acme", "stories", "stories260K.gguf"));
    using local = await loadModel(STORIES, { vocabOnly: true });
    expect(model.info.parameters).toBeGreaterThan(0);
    expect([...model.tokenize("Once upon a time")]).toEqual([...local.tokenize("Once upon a time")]);
    expect(sha256(fs.readFileSync(model.path))).toBe(sha256(fs.readFileSync(STORIES)));
  });
});

describe("llama-napi pull (CLI)", () => {
  const env = () => ({ ...process.env, LLAMA_NAPI_MODELS: cache, LLAMA_NAPI_HF_ENDPOINT: hub.url });

  it("prints the downloaded file's path, quietly when stderr is not a terminal; -o picks the folder", async () => {
    const { stdout, stderr } = await run(process.execPath, [MAIN, "pull", REF], { env: env(), encoding: "utf8" });
    const file = path.join(cache, "acme", "tiny-GGUF", "tiny-Q8_0.gguf");
    expect(stdout).toBe(`${file}\n`);
    expect(stderr).toBe("");
    expect(sha256(fs.readFileSync(file))).toBe(sha256(DATA));

    const out = path.join(cache, "elsewhere");
    const second = await run(process.execPath, [MAIN, "pull", REF, "-o", out], { env: env(), encoding: "utf8" });
    expect(second.stdout).toBe(`${path.join(out, "tiny-Q8_0.gguf")}\n`);
    expect(sha256(fs.readFileSync(path.join(out, "tiny-Q8_0.gguf")))).toBe(sha256(DATA));
  });

  it("exits 1 with the error code for a missing file and 2 for a usage error", async () => {
    const failed = await run(process.execPath, [MAIN, "pull", "hf:acme/tiny-GGUF/missing.gguf"], { env: env(), encoding: "utf8" }).catch((e: unknown) => e as { code: number; stderr: string });
    expect((failed as { code: number }).code).toBe(1);
    expect((failed as { stderr: string }).stderr).toMatch(/HTTP 404.*\[ERR_DOWNLOAD\]/);
    const usage = await run(process.execPath, [MAIN, "pull"], { env: env(), encoding: "utf8" }).catch((e: unknown) => e as { code: number; stderr: string });
    expect((usage as { code: number }).code).toBe(2);
    // The flags come from the option table, with its check.
    const badFlag = await run(process.execPath, [MAIN, "pull", REF, "--retries", "101"], { env: env(), encoding: "utf8" }).catch((e: unknown) => e as { code: number; stderr: string });
    expect((badFlag as { code: number }).code).toBe(2);
    expect((badFlag as { stderr: string }).stderr).toMatch(/--retries must be an integer from 0 to 100; got 101/);
    expect(hub.requests.filter((r) => r.path.includes("tiny-Q8_0"))).toEqual([]);
  });

  it("chat -m hf:... downloads the model and chats with it as with the local file", async () => {
    const chat = (model: string) =>
      new Promise<{ stdout: string; code: number | null }>((resolve, reject) => {
        const child = spawn(process.execPath, [MAIN, "chat", "-m", model, "-n", "16", "--temp", "0", "-c", "128", "-t", "1"], { env: env(), stdio: ["pipe", "pipe", "inherit"] });
        let stdout = "";
        child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
        child.on("error", reject).on("close", (code) => resolve({ stdout, code }));
        child.stdin.end("Hello there\n");
      });
    const remote = await chat("hf:acme/stories/stories260K.gguf");
    const local = await chat(STORIES);
    expect(remote.code).toBe(0);
    expect(local.stdout.length).toBeGreaterThan(10);
    expect(remote.stdout).toBe(local.stdout);
    expect(sha256(fs.readFileSync(path.join(cache, "acme", "stories", "stories260K.gguf")))).toBe(sha256(fs.readFileSync(STORIES)));
  });

  it("draws a progress bar when stderr is a terminal (tmux)", async (ctx) => {
    try {
      execFileSync("tmux", ["-V"]);
    } catch {
      ctx.skip("tmux is not installed (apt-get install tmux)");
    }
    const socket = `llama-napi-pull-${process.pid}`;
    const done = path.join(cache, "done");
    const command = `${process.execPath} ${MAIN} pull ${REF}; echo "exit=$?" > ${done}; sleep 30`;
    const envArgs = Object.entries({ LLAMA_NAPI_MODELS: cache, LLAMA_NAPI_HF_ENDPOINT: hub.url }).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
    execFileSync("tmux", ["-L", socket, "new-session", "-d", "-x", "120", "-y", "10", ...envArgs, command]);
    try {
      const deadline = Date.now() + 15_000;
      while (!fs.existsSync(done) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(fs.readFileSync(done, "utf8").trim()).toBe("exit=0");
      const screen = execFileSync("tmux", ["-L", socket, "capture-pane", "-p", "-J"], { encoding: "utf8" });
      expect(screen).toMatch(/tiny-Q8_0\.gguf █+ 100% 300\.0 kB \/ 300\.0 kB done/);
      expect(screen).toContain(path.join(cache, "acme", "tiny-GGUF", "tiny-Q8_0.gguf"));
    } finally {
      execFileSync("tmux", ["-L", socket, "kill-server"]);
    }
  });
});
