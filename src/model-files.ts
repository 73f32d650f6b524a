/**
 * Model files by reference: a local path, an `http(s)://` URL or `hf:OWNER/REPO/FILE.gguf` (a file
 * of a Hugging Face repository, at `main`). A remote file is downloaded once into a cache folder
 * and found there afterwards:
 *
 * - the transfer resumes where an interrupted one stopped (an HTTP Range request on the
 *   `.partial` file), within a call (`retries`) and across calls;
 * - redirects are followed (the hub redirects to its CDN);
 * - the size is checked against Content-Length / Content-Range (and the hub's X-Linked-Size), and
 *   the sha256 against the hub's X-Linked-Etag or an ETag that is a sha256 (64 hex digits);
 *   a mismatch deletes the download and throws ERR_CHECKSUM;
 * - a `.gguf` file must start with the GGUF magic (a web page saved as a model is refused);
 * - the file appears under its name only when complete and checked (a rename).
 *
 * The hub is https://huggingface.co, or `LLAMA_NAPI_HF_ENDPOINT` / `HF_ENDPOINT`; `HF_TOKEN`
 * (for gated repositories) is sent to the hub only, never to the hosts it redirects to.
 */
import { createHash, type Hash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { AbortError, LlamaError, invalidArgument } from "./errors.js";
import { DOWNLOAD_OPTIONS, type DownloadProgress, type ResolveModelFileOptions } from "./options/download.js";
import { readOptions } from "./options/spec.js";

export type { DownloadProgress, ResolveModelFileOptions };

const MAX_REDIRECTS = 10;

/** The cache folder for downloaded models: `LLAMA_NAPI_MODELS`, else `~/.cache/llama-napi/models`. */
export function modelsDirectory(): string {
  const fromEnv = process.env.LLAMA_NAPI_MODELS;
  if (fromEnv) return path.resolve(fromEnv);
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(cache, "llama-napi", "models");
}

/** The Hugging Face hub's base URL: `LLAMA_NAPI_HF_ENDPOINT`, `HF_ENDPOINT` or https://huggingface.co. */
function hubEndpoint(): string {
  return (process.env.LLAMA_NAPI_HF_ENDPOINT || process.env.HF_ENDPOINT || "https://huggingface.co").replace(/\/+$/, "");
}

/** Whether `ref` names a remote file (`hf:` or an http(s) URL) rather than a local path. */
export function isRemoteModelRef(ref: string): boolean {
  return /^hf:/i.test(ref) || /^https?:\/\//i.test(ref);
}

interface RemoteRef {
  url: string;
  /** Path of the file under the cache folder, as segments. */
  cachePath: string[];
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function safeSegments(segments: string[], ref: string, what: string): string[] {
  for (const s of segments) {
    if (s === "" || s === "." || s === ".." || /[\\\0:]/.test(s)) {
      throw new LlamaError("ERR_INVALID_ARGUMENT", `${ref}: the ${what} has an empty, "." or ".." part or a \\ : or NUL character; give the file's path in the repository, e.g. hf:OWNER/REPO/FILE.gguf`);
    }
  }
  return segments;
}

function parseRemote(ref: string): RemoteRef {
  if (/^hf:/i.test(ref)) {
    const parts = ref.slice(3).replace(/^\/\//, "").split("/");
    const [owner, repo, ...file] = parts;
    if (owner === undefined || repo === undefined || file.length === 0 || !NAME.test(owner) || !NAME.test(repo)) {
      throw new LlamaError("ERR_INVALID_ARGUMENT", `"${ref}" is not a Hugging Face reference: write hf:OWNER/REPO/FILE.gguf (e.g. hf:ggml-org/models/tinyllamas/stories260K.gguf)`);
    }
    safeSegments(file, ref, "file path");
    const encoded = file.map(encodeURIComponent).join("/");
    return { url: `${hubEndpoint()}/${owner}/${repo}/resolve/main/${encoded}`, cachePath: [owner, repo, ...file] };
  }
  let url: URL;
  try {
    url = new URL(ref);
  } catch {
    throw new LlamaError("ERR_INVALID_ARGUMENT", `"${ref}" is not a valid URL`);
  }
  const segments = url.pathname.split("/").filter((s) => s !== "").map((s) => decodeURIComponent(s));
  if (segments.length === 0) throw new LlamaError("ERR_INVALID_ARGUMENT", `${ref} names no file: give the URL of the .gguf file itself`);
  return { url: url.href, cachePath: [url.host.replace(/:/g, "_"), ...safeSegments(segments, ref, "URL path")] };
}

/** Where `ref` is (or will be, once downloaded): the local path, or its place in `directory` or the cache. */
export function modelFilePath(ref: string, directory?: string): string {
  if (typeof ref !== "string" || ref === "") invalidArgument("ref", "a non-empty string", ref);
  if (!isRemoteModelRef(ref)) return path.resolve(ref);
  const { cachePath } = parseRemote(ref);
  return directory === undefined ? path.join(modelsDirectory(), ...cachePath) : path.resolve(directory, cachePath[cachePath.length - 1]!);
}

/**
 * The local path of a model file: `ref` itself when it is a path (which must exist), else the
 * downloaded file, downloading it first unless it is in `directory` or the cache already (then no
 * request is made). Throws ERR_DOWNLOAD (HTTP error, transfer failed after the retries, wrong
 * size), ERR_CHECKSUM (sha256 differs from the server's), ERR_ABORTED, ERR_FILE_NOT_FOUND.
 *
 * ```ts
 * const file = await resolveModelFile("hf:ggml-org/models/tinyllamas/stories260K.gguf", {
 *   onProgress: ({ downloadedBytes, totalBytes }) => console.log(downloadedBytes, totalBytes),
 * });
 * ```
 */
export async function resolveModelFile(ref: string, options: ResolveModelFileOptions = {}): Promise<string> {
  const { directory, force, retries, onProgress, signal } = readOptions(DOWNLOAD_OPTIONS, options, "resolveModelFile options", { defaults: true });
  const target = modelFilePath(ref, directory);
  if (!isRemoteModelRef(ref)) {
    if (!fs.existsSync(target)) throw new LlamaError("ERR_FILE_NOT_FOUND", `Model file not found: ${target}. Give the path of a .gguf file, an http(s) URL or hf:OWNER/REPO/FILE.gguf`);
    return target;
  }
  if (!force && fs.existsSync(target)) return target;
  if (signal?.aborted) throw new AbortError("The download was aborted before it started", { cause: signal.reason });
  // Calls of this process for the same file share one download (the first call's options apply).
  const running = downloads.get(target);
  if (running) return running;
  const job = (async () => {
    try {
      await fs.promises.mkdir(path.dirname(target), { recursive: true });
      const unlock = await lockDownload(target);
      try {
        await download(parseRemote(ref).url, target, { retries: retries ?? 3, onProgress, signal });
      } finally {
        await unlock();
      }
      return target;
    } catch (err) {
      if (err instanceof LlamaError) throw err;
      // The file system: the folder cannot be made or written (permissions, disk full, ...).
      throw new LlamaError("ERR_DOWNLOAD", `Could not download into ${path.dirname(target)}: ${(err as Error).message}; check that the folder is writable and has room, or choose another with LLAMA_NAPI_MODELS or -o/directory`, { cause: err });
    }
  })();
  downloads.set(target, job);
  try {
    return await job;
  } finally {
    downloads.delete(target);
  }
}

const downloads = new Map<string, Promise<string>>();

/**
 * Takes `FILE.lock` (holding this process's id) so that another process does not append to the
 * same `.partial`; a lock whose process has ended is taken over.
 */
async function lockDownload(target: string): Promise<() => Promise<void>> {
  const lock = `${target}.lock`;
  for (let tries = 0; ; tries++) {
    try {
      await fs.promises.writeFile(lock, String(process.pid), { flag: "wx" });
      return () => fs.promises.rm(lock, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      if (tries > 0) throw new LlamaError("ERR_BUSY", `${target} is being downloaded by another process; wait for it to finish`);
      const pid = Number(await fs.promises.readFile(lock, "utf8").catch(() => ""));
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new LlamaError("ERR_BUSY", `${target} is being downloaded by another process (pid ${pid}); wait for it to finish, or delete ${lock} if that process is not downloading`);
      }
      await fs.promises.rm(lock, { force: true }); // left by a process that ended
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

interface DownloadSettings {
  retries: number;
  onProgress: ((p: DownloadProgress) => void) | undefined;
  signal: AbortSignal | undefined;
}

/** What the server said about the file, gathered over the redirects. */
interface Expected {
  size: number | undefined;
  sha256: string | undefined;
}

/** A failure worth another try with a Range request (the connection broke, the server hiccuped). */
class Transient extends Error {}

function sha256Of(value: string | null): string | undefined {
  if (!value) return undefined;
  const m = /^(?:W\/)?"?([0-9a-fA-F]{64})"?$/.exec(value.trim());
  return m ? m[1]!.toLowerCase() : undefined;
}

function hashFile(file: string, hash: Hash): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.createReadStream(file)
      .on("data", (chunk) => hash.update(chunk))
      .on("end", () => resolve())
      .on("error", reject);
  });
}

async function download(url: string, target: string, settings: DownloadSettings): Promise<void> {
  const partial = `${target}.partial`;
  let offset = 0;
  let hash = createHash("sha256");
  try {
    offset = (await fs.promises.stat(partial)).size;
    if (offset > 0) await hashFile(partial, hash);
  } catch {
    offset = 0;
  }
  const resumedFrom = offset;
  let oversize = false;
  const expected: Expected = { size: undefined, sha256: undefined };
  let lastReport = 0;
  const report = (final: boolean) => {
    const now = Date.now();
    if (!settings.onProgress || (!final && now - lastReport < 100)) return;
    lastReport = now;
    try {
      settings.onProgress({ downloadedBytes: offset, totalBytes: expected.size, resumedFromBytes: resumedFrom });
    } catch {
      // A throwing listener must not break the download.
    }
  };

  for (let attempt = 0; ; attempt++) {
    try {
      const response = await request(url, offset, expected, settings.signal);
      if (response.status === 416) {
        // The partial file may be complete already, or longer than the file now is.
        const total = /^bytes \*\/(\d+)$/.exec(response.headers.get("content-range") ?? "");
        await response.body?.cancel();
        if (total && Number(total[1]) === offset) {
          expected.size ??= offset;
          break;
        }
        offset = 0;
        hash = createHash("sha256");
        await fs.promises.rm(partial, { force: true });
        continue;
      }
      let start = 0;
      if (response.status === 206) {
        const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers.get("content-range") ?? "");
        if (!range) throw new LlamaError("ERR_DOWNLOAD", `${url}: the server answered a Range request with a Content-Range it does not state (${response.headers.get("content-range")}); delete ${partial} and try again`);
        start = Number(range[1]);
        if (range[3] !== "*") checkSize(expected, Number(range[3]), url);
      } else {
        const length = response.headers.get("content-length");
        if (length !== null && /^\d+$/.test(length)) checkSize(expected, Number(length), url);
      }
      if (start !== offset) {
        // A 200 to a Range request (the server does not do ranges), or another range: start over.
        offset = 0;
        hash = createHash("sha256");
        if (start !== 0) {
          await response.body?.cancel();
          await fs.promises.rm(partial, { force: true });
          continue;
        }
      }
      const file = await fs.promises.open(partial, offset === 0 ? "w" : "a");
      try {
        if (!response.body) throw new Transient("the response has no body");
        const reader = response.body.getReader();
        for (;;) {
          let chunk: Awaited<ReturnType<typeof reader.read>>;
          try {
            chunk = await reader.read();
          } catch (err) {
            if (settings.signal?.aborted) throw err;
            throw new Transient(`the connection broke after ${offset} bytes (${(err as Error).message})`);
          }
          if (chunk.done) break;
          if (expected.size !== undefined && offset + chunk.value.length > expected.size) {
            oversize = true;
            throw new LlamaError("ERR_DOWNLOAD", `${url}: the server sent more than the ${expected.size} bytes it announced; the download was deleted, try again`);
          }
          await file.write(chunk.value);
          hash.update(chunk.value);
          offset += chunk.value.length;
          report(false);
        }
      } finally {
        await file.close();
      }
      if (expected.size !== undefined && offset < expected.size) throw new Transient(`the transfer ended after ${offset} of ${expected.size} bytes`);
      break;
    } catch (err) {
      if (settings.signal?.aborted) {
        throw new AbortError(`The download of ${url} was aborted; ${partial} is kept and the next download resumes it`, { cause: settings.signal.reason });
      }
      if (err instanceof Transient) {
        if (attempt < settings.retries) {
          await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** attempt, 2000)));
          continue;
        }
        throw new LlamaError(
          "ERR_DOWNLOAD",
          `Downloading ${url} failed after ${attempt + 1} attempt${attempt === 0 ? "" : "s"}: ${err.message}. ` +
            `The ${offset} bytes received are kept in ${partial}; run the same download again to resume it.`,
          { cause: err },
        );
      }
      if (oversize) await fs.promises.rm(partial, { force: true });
      throw err;
    }
  }
  report(true);
  if (expected.size !== undefined && offset !== expected.size) {
    await fs.promises.rm(partial, { force: true });
    throw new LlamaError("ERR_DOWNLOAD", `${url}: got ${offset} bytes, the server announced ${expected.size}; the download was deleted, try again`);
  }
  if (target.toLowerCase().endsWith(".gguf") && !(await startsWithGguf(partial))) {
    // Typically a web page: the hub's /blob/ URL of a file instead of its /resolve/ URL.
    await fs.promises.rm(partial, { force: true });
    throw new LlamaError(
      "ERR_DOWNLOAD",
      `${url} is not a GGUF file (it does not start with "GGUF"; a web page?); the download was deleted. ` +
        "Give the file's download URL (on the hub: .../resolve/main/FILE.gguf, not .../blob/main/...) or hf:OWNER/REPO/FILE.gguf",
    );
  }
  const actual = hash.digest("hex");
  if (expected.sha256 !== undefined && actual !== expected.sha256) {
    await fs.promises.rm(partial, { force: true });
    throw new LlamaError(
      "ERR_CHECKSUM",
      `${url}: the downloaded file's sha256 is ${actual}, the server's is ${expected.sha256}; the download was deleted. ` +
        "Try again; if it persists the file changed on the server during the download or the server is wrong.",
    );
  }
  await fs.promises.rename(partial, target);
}

async function startsWithGguf(file: string): Promise<boolean> {
  const handle = await fs.promises.open(file, "r");
  try {
    const { bytesRead, buffer } = await handle.read(Buffer.alloc(4), 0, 4, 0);
    return bytesRead === 4 && buffer.toString("latin1") === "GGUF";
  } finally {
    await handle.close();
  }
}

function checkSize(expected: Expected, size: number, url: string): void {
  if (expected.size !== undefined && expected.size !== size) {
    throw new LlamaError("ERR_DOWNLOAD", `${url}: the server announced ${expected.size} bytes, then ${size}; try again later`);
  }
  expected.size = size;
}

/** GETs `url` from `offset` on, following redirects and noting the size and sha256 they announce. */
async function request(url: string, offset: number, expected: Expected, signal: AbortSignal | undefined): Promise<Response> {
  const hub = new URL(hubEndpoint()).origin;
  const token = process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN;
  let current = new URL(url);
  for (let hop = 0; ; hop++) {
    const headers: Record<string, string> = { "user-agent": "llama-napi", "accept-encoding": "identity" };
    if (offset > 0) headers.range = `bytes=${offset}-`;
    if (token && current.origin === hub) headers.authorization = `Bearer ${token}`;
    let response: Response;
    try {
      response = await fetch(current, { headers, redirect: "manual", signal });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new Transient(`${current.href}: ${(err as Error).message}${(err as { cause?: Error }).cause ? ` (${(err as { cause: Error }).cause.message})` : ""}`);
    }
    expected.sha256 ??= sha256Of(response.headers.get("x-linked-etag")) ?? sha256Of(response.headers.get("etag"));
    const linkedSize = response.headers.get("x-linked-size");
    if (linkedSize !== null && /^\d+$/.test(linkedSize)) checkSize(expected, Number(linkedSize), url);
    const location = response.headers.get("location");
    if ([301, 302, 303, 307, 308].includes(response.status) && location) {
      await response.body?.cancel();
      if (hop >= MAX_REDIRECTS) throw new LlamaError("ERR_DOWNLOAD", `${url}: more than ${MAX_REDIRECTS} redirects`);
      current = new URL(location, current);
      continue;
    }
    if (response.status === 200 || response.status === 206 || response.status === 416) return response;
    await response.body?.cancel();
    if (response.status >= 500 || response.status === 429) throw new Transient(`${current.href}: HTTP ${response.status}`);
    const hint =
      response.status === 401 || response.status === 403
        ? "the file may be gated or private: accept its terms on the hub and set HF_TOKEN"
        : response.status === 404
          ? "check the owner, repository and file name (hf:OWNER/REPO/FILE.gguf, the file's path in the repository)"
          : "check the URL";
    throw new LlamaError("ERR_DOWNLOAD", `${url}: HTTP ${response.status} ${response.statusText}; ${hint}`);
  }
}
