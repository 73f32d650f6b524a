/**
 * Images and audio in /v1/chat/completions, as OpenAI's content parts and as llama-server reads
 * them (tools/server/server-common.cpp, handle_media):
 *
 * - `{ type: "image_url", image_url: { url } }`: a `data:image/...;base64,...` URI; an http(s) URL
 *   only when the server is started with `allowImageUrls` (fetched, at most 20 MiB, 10 s).
 * - `{ type: "input_audio", input_audio: { data, format } }`: base64 (or a `data:audio/` URI),
 *   format "wav", "mp3" or "flac".
 *
 * Each becomes an image or audio part of its message (libmtmd's marker in the rendered prompt,
 * src/chat.ts), its bytes in the order of the markers. A bad part is a 400 naming it
 * (`messages[0].content[1].image_url`), and so is a media part sent to a server without a
 * projector (llama-server answers that with a 500, but the request is what cannot be served).
 */
import type { ChatContentPart, RenderedMedia } from "../chat.js";
import { LlamaError } from "../errors.js";
import { readPromptParts } from "../media.js";
import { HttpError, anySignal, badField } from "./http.js";

type Body = Record<string, unknown>;

/** The largest image or audio item, decoded or fetched (bytes). */
export const MAX_MEDIA_BYTES = 20 << 20;
/** How long fetching an image URL may take (llama-server's: 10 s). */
export const MEDIA_FETCH_TIMEOUT_MS = 10_000;
/** The formats input_audio.format may name (what libmtmd's miniaudio decodes). */
const AUDIO_FORMATS = new Set(["wav", "mp3", "flac"]);

/** What a request's media parts may be. */
export interface MediaParams {
  /** What the model's projector takes; null: the model has none, and media parts are refused. */
  accepts: { readonly image: boolean; readonly audio: boolean } | null;
  /** Whether image_url may be an http(s) URL, which the server fetches. */
  allowUrls: boolean;
}

/** A media part of a request: the part (its data filled in when it is a URL still to fetch), its field, its URL. */
export interface RequestMedia {
  part: { type: "image" | "audio"; data: Uint8Array };
  /** The request field, for errors: "messages[0].content[1].image_url". */
  field: string;
  /** Where the message and the part are (the indexes a render reports). */
  message: number;
  index: number;
  /** An http(s) URL to fetch (image_url); undefined when the data came with the request. */
  url?: string;
}

function unsupported(field: string, what: string): HttpError {
  return new HttpError(
    400,
    `${field}: ${what} input is not supported by this server: it was started without a projector (mmproj) that takes ${what} (the \`projector\` option, --mmproj)`,
    "invalid_request_error",
    "media_not_supported",
    field,
  );
}

/** Base64 (standard or URL-safe alphabet, whitespace ignored) to bytes; 400s name `field`. */
function decodeBase64(text: string, field: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  if (clean === "") throw badField(field, `${field} holds no data`);
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(clean) || clean.length % 4 === 1) throw badField(field, `${field} is not valid base64`);
  if (Math.floor((clean.length * 3) / 4) > MAX_MEDIA_BYTES + 2) {
    throw badField(field, `${field} is too large: images and audio of at most ${MAX_MEDIA_BYTES >> 20} MiB are accepted`);
  }
  return Buffer.from(clean, "base64");
}

/** A `data:<mime>;base64,<data>` URI whose type starts with `prefix` ("image/", "audio/"). */
function decodeDataUri(uri: string, prefix: string, field: string): Uint8Array {
  const comma = uri.indexOf(",");
  const header = comma < 0 ? uri : uri.slice(0, comma);
  if (comma < 0 || !/;base64$/i.test(header)) throw badField(field, `${field} must be a base64 data URI (data:${prefix}...;base64,...)`);
  const mime = header.slice(5).split(";")[0]!.toLowerCase();
  if (!mime.startsWith(prefix)) throw badField(field, `${field} is a data URI of type "${mime}"; ${prefix === "image/" ? "an image" : "audio"} (data:${prefix}...) is expected`);
  return decodeBase64(uri.slice(comma + 1), field);
}

/**
 * A request message's content part that is not text: an image or audio part of the message, its
 * data decoded (an image URL's is fetched later, by {@link resolveMedia}). `media` collects it.
 */
export function mediaPart(p: Body, field: string, at: { message: number; index: number }, params: MediaParams, media: RequestMedia[]): ChatContentPart {
  if (p.type === "image_url") {
    const where = `${field}.image_url`;
    if (params.accepts === null || !params.accepts.image) throw unsupported(where, "image");
    const value = p.image_url ?? undefined;
    const url = typeof value === "string" ? value : value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Body).url : undefined;
    if (typeof url !== "string" || url === "") throw badField(where, `${where} must be { url } with a data:image/...;base64 URI`);
    const part: RequestMedia["part"] = { type: "image", data: new Uint8Array(0) };
    const item: RequestMedia = { part, field: where, ...at };
    if (/^data:/i.test(url)) {
      part.data = decodeDataUri(url, "image/", where);
    } else if (/^https?:\/\//i.test(url)) {
      if (!params.allowUrls) {
        throw badField(where, `${where}: image URLs are not fetched by this server (start it with allowImageUrls / --allow-image-urls); send the image as a data:image/...;base64 URI`);
      }
      try {
        new URL(url);
      } catch {
        throw badField(where, `${where} is not a valid URL`);
      }
      item.url = url;
    } else {
      throw badField(where, `${where} must be a data:image/...;base64 URI${params.allowUrls ? " or an http(s) URL" : ""}`);
    }
    media.push(item);
    return part;
  }
  if (p.type === "input_audio") {
    const where = `${field}.input_audio`;
    if (params.accepts === null || !params.accepts.audio) throw unsupported(where, "audio");
    const value = p.input_audio ?? undefined;
    if (value === undefined || typeof value !== "object" || Array.isArray(value)) throw badField(where, `${where} must be { data, format } with base64 data`);
    const { data, format } = value as Body;
    if (format !== undefined && format !== null && (typeof format !== "string" || !AUDIO_FORMATS.has(format.toLowerCase()))) {
      throw badField(`${where}.format`, `${where}.format must be one of ${[...AUDIO_FORMATS].join(", ")}`);
    }
    if (typeof data !== "string") throw badField(`${where}.data`, `${where}.data must be a base64 string`);
    const part: RequestMedia["part"] = { type: "audio", data: /^data:/i.test(data) ? decodeDataUri(data, "audio/", `${where}.data`) : decodeBase64(data, `${where}.data`) };
    media.push({ part, field: where, ...at });
    return part;
  }
  throw badField(`${field}.type`, `${field}.type must be "text", "image_url" or "input_audio"; got ${JSON.stringify(p.type)}`);
}

/**
 * Fetches the image URLs, then checks every item as a session would before decoding it (not
 * empty, an image not too large to decode): 400s name the part.
 */
export async function resolveMedia(media: readonly RequestMedia[], accepts: NonNullable<MediaParams["accepts"]>, signal: AbortSignal): Promise<void> {
  await Promise.all(media.filter((m) => m.url !== undefined).map(async (m) => (m.part.data = await fetchMedia(m.url!, m.field, signal))));
  for (const m of media) {
    try {
      await readPromptParts([m.part.type === "image" ? { image: m.part.data } : { audio: m.part.data }], accepts);
    } catch (err) {
      if (err instanceof LlamaError) throw badField(m.field, err.message.replace(/^prompt\[0\](\.(image|audio))?/, m.field));
      throw err;
    }
  }
}

/**
 * An error of evaluating the prompt that names a media item ("Media item 2 could not be
 * decoded..."), as a 400 naming its request field; undefined for other errors.
 */
export function mediaError(err: unknown, rendered: readonly RenderedMedia[], media: readonly RequestMedia[]): HttpError | undefined {
  if (!(err instanceof LlamaError) || (err.code !== "ERR_MEDIA_INVALID" && err.code !== "ERR_UNSUPPORTED")) return undefined;
  const match = /^Media item (\d+)/.exec(err.message);
  const item = match ? rendered[Number(match[1])] : undefined;
  const field = item ? media.find((m) => m.message === item.message && m.index === item.part)?.field : undefined;
  if (field === undefined) return err.code === "ERR_MEDIA_INVALID" ? badField("messages", err.message) : undefined;
  return badField(field, `${field}${err.message.replace(/^Media item \d+/, "")}`);
}

/** An image URL's bytes: 2xx only, at most MAX_MEDIA_BYTES, within MEDIA_FETCH_TIMEOUT_MS; 400s name the part. */
async function fetchMedia(url: string, field: string, signal: AbortSignal): Promise<Uint8Array> {
  const timeout = AbortSignal.timeout(MEDIA_FETCH_TIMEOUT_MS);
  const failed = (why: string) => badField(field, `${field}: could not fetch ${url}: ${why}`);
  const reason = (err: unknown) => (timeout.aborted ? `no complete answer within ${MEDIA_FETCH_TIMEOUT_MS / 1000} s` : err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err));
  let res: Response;
  try {
    res = await fetch(url, { signal: anySignal(signal, timeout), redirect: "follow" });
  } catch (err) {
    // The request's time limit (its reason a 503) or its client going away.
    if (signal.aborted) throw signal.reason instanceof HttpError ? signal.reason : err;
    throw failed(reason(err));
  }
  const tooLarge = () => failed(`larger than ${MAX_MEDIA_BYTES >> 20} MiB`);
  try {
    if (!res.ok) throw failed(`HTTP ${res.status}`);
    const declared = Number(res.headers.get("content-length") ?? Number.NaN);
    if (declared > MAX_MEDIA_BYTES) throw tooLarge();
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (res.body) {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        size += chunk.byteLength;
        if (size > MAX_MEDIA_BYTES) throw tooLarge();
        chunks.push(chunk);
      }
    }
    if (size === 0) throw failed("the answer is empty");
    return Buffer.concat(chunks, size);
  } catch (err) {
    await res.body?.cancel().catch(() => {});
    if (err instanceof HttpError) throw err;
    if (signal.aborted) throw signal.reason instanceof HttpError ? signal.reason : err;
    throw failed(reason(err));
  }
}
