/**
 * A local HTTP server (127.0.0.1 only) that serves files the way the Hugging Face hub does:
 * `/OWNER/REPO/resolve/main/FILE` answers 302 to a CDN (another origin: a second server on another
 * port) with `X-Linked-Etag` (the file's
 * sha256, quoted), `X-Linked-Size` and a git-style ETag; the CDN path serves the bytes with
 * Range support and an ETag that is not a sha256 (as S3's MD5 is not). Faults on demand: cut the
 * connection after some bytes, announce a wrong sha256, ignore Range requests. Every request is
 * recorded.
 */
import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface HubRequest {
  /** "hub" or "cdn": which of the two servers got it. */
  server: "hub" | "cdn";
  method: string;
  path: string;
  range: string | undefined;
  authorization: string | undefined;
}

export interface HubFaults {
  /** Cut the connection after this many body bytes, on the next `times` CDN responses. */
  cutAfter?: { bytes: number; times: number };
  /** Announce this sha256 instead of the real one. */
  wrongSha256?: string;
  /** Answer Range requests with the whole file (200). */
  ignoreRange?: boolean;
  /** Leave out X-Linked-Etag (then nothing announces a sha256). */
  noEtag?: boolean;
  /** Serve the file from the hub path itself, no redirect, with its sha256 (or wrongSha256) as the ETag (as the hub does for some files). */
  direct?: boolean;
}

export interface FakeHub {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  /** The CDN server's http://127.0.0.1:PORT (another port: another origin). */
  readonly cdnUrl: string;
  readonly requests: HubRequest[];
  faults: HubFaults;
  /** Serves `data` as OWNER/REPO's FILE (and at /files/FILE as a plain URL). */
  add(repoFile: string, data: Buffer): void;
  close(): Promise<void>;
}

export const sha256 = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex");

export async function startFakeHub(): Promise<FakeHub> {
  const files = new Map<string, Buffer>();
  const requests: HubRequest[] = [];
  const hub: { faults: HubFaults } = { faults: {} };

  const serveBytes = (req: http.IncomingMessage, res: http.ServerResponse, data: Buffer, etag = `"${createHash("md5").update(data).digest("hex")}"`) => {
    const faults = hub.faults;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    let start = 0;
    const headers: http.OutgoingHttpHeaders = { "content-type": "application/octet-stream", etag, "accept-ranges": "bytes" };
    if (range && !faults.ignoreRange) {
      start = Number(range[1]);
      if (start >= data.length) {
        res.writeHead(416, { "content-range": `bytes */${data.length}` }).end();
        return;
      }
      res.writeHead(206, { ...headers, "content-length": data.length - start, "content-range": `bytes ${start}-${data.length - 1}/${data.length}` });
    } else {
      res.writeHead(200, { ...headers, "content-length": data.length });
    }
    const body = data.subarray(start);
    const cut = faults.cutAfter;
    if (cut && cut.times > 0 && body.length > cut.bytes) {
      cut.times--;
      res.flushHeaders();
      res.write(body.subarray(0, cut.bytes), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(body);
  };

  let cdnUrl = "";
  const handler = (which: "hub" | "cdn") => (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    requests.push({ server: which, method: req.method ?? "", path: url.pathname + url.search, range: req.headers.range, authorization: req.headers.authorization });
    const hubMatch = /^\/([^/]+)\/([^/]+)\/resolve\/main\/(.+)$/.exec(url.pathname);
    if (hubMatch) {
      const key = `${hubMatch[1]}/${hubMatch[2]}/${decodeURIComponent(hubMatch[3]!)}`;
      const data = files.get(key);
      if (!data) {
        res.writeHead(404, { "content-type": "text/plain", "x-error-code": "EntryNotFound" }).end("Entry not found");
        return;
      }
      const sha = hub.faults.wrongSha256 ?? sha256(data);
      if (hub.faults.direct) {
        serveBytes(req, res, data, `"${sha}"`);
        return;
      }
      res
        .writeHead(302, {
          location: `${cdnUrl}/cdn/${encodeURIComponent(key)}?X-Amz-Signature=abc`,
          "x-linked-size": data.length,
          ...(hub.faults.noEtag ? {} : { "x-linked-etag": `"${sha}"` }),
          etag: `"${createHash("sha1").update(data).digest("hex")}"`,
        })
        .end();
      return;
    }
    const cdn = /^\/cdn\/(.+)$/.exec(url.pathname);
    const plain = /^\/files\/(.+)$/.exec(url.pathname);
    const data = cdn ? files.get(decodeURIComponent(cdn[1]!)) : plain ? [...files.entries()].find(([k]) => k.endsWith(`/${plain[1]}`))?.[1] : undefined;
    if (!data) {
      res.writeHead(404).end("not found");
      return;
    }
    serveBytes(req, res, data);
  };
  const server = http.createServer(handler("hub"));
  const cdn = http.createServer(handler("cdn"));
  const listen = async (s: http.Server) => {
    await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  };
  const url = await listen(server);
  cdnUrl = await listen(cdn);
  return {
    url,
    cdnUrl,
    requests,
    get faults() {
      return hub.faults;
    },
    set faults(f: HubFaults) {
      hub.faults = f;
    },
    add(repoFile, data) {
      files.set(repoFile, data);
    },
    async close() {
      for (const s of [server, cdn]) {
        s.closeAllConnections();
        await new Promise<void>((resolve) => s.close(() => resolve()));
      }
    },
  };
}
