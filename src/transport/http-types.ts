import http2 from "node:http2";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import { armBodyDeadline } from "./body-deadline.js";

type NodeHandlerFn = ReturnType<typeof connectNodeAdapter>;
/** A request on either protocol the main port speaks (HTTP/1.1 or h2c), as connect-node types it. */
export type AnyRequest = Parameters<NodeHandlerFn>[0];
/** A response on either protocol; connect-node narrows `write` because the two classes' overloads differ. */
export type AnyResponse = Parameters<NodeHandlerFn>[1];

/** The body size the request's Content-Length declares, or null when it declares none (or junk). */
export function declaredBodyBytes(req: AnyRequest): number | null {
  const declared = req.headers["content-length"];
  return typeof declared === "string" && /^\d+$/.test(declared) ? Number(declared) : null;
}

/** Send a JSON body with a status (FermiLink's error shape is `{"detail": ...}`). */
export function sendJson(res: AnyResponse, status: number, body: unknown): void {
  sendJsonText(res, status, JSON.stringify(body));
}

/** JSON already written as text (where `JSON.stringify` cannot write what FermiLink does). */
export function sendJsonText(res: AnyResponse, status: number, text: string): void {
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

/**
 * True when the request's method is one `allow` names (a GET route answers
 * HEAD too); otherwise answers 405 with the `Allow` header, as FastAPI does.
 */
export function methodAllowed(
  req: AnyRequest,
  res: AnyResponse,
  allow: "GET, HEAD" | "POST",
): boolean {
  const m = req.method;
  if (allow === "POST" ? m === "POST" : m === "GET" || m === "HEAD") return true;
  res.setHeader("allow", allow);
  sendJson(res, 405, { detail: "Method Not Allowed" });
  return false;
}

/**
 * The first value of a request header, as Starlette (FermiLink) reads a
 * repeated header; node's `req.headers` joins most repeats with ", ", so two
 * copies of a token header would never match. `name` in lower case; works on
 * either protocol's request (both keep `rawHeaders`).
 */
export function firstHeader(
  req: { readonly rawHeaders: readonly string[] },
  name: string,
): string | undefined {
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const key = raw[i] as string;
    if (key.length === name.length && key.toLowerCase() === name) return raw[i + 1];
  }
  return undefined;
}

/**
 * True once nothing more can be written: this side ended the response, or the
 * client went away. An HTTP/2 response whose stream the client reset is
 * neither ended nor destroyed, only finished (and a write to it never drains).
 */
export function responseClosed(res: AnyResponse): boolean {
  return res.destroyed || res.writableEnded || res.writableFinished;
}

/**
 * Calls `gone` once if the client goes away before this side ended the
 * response: HTTP/1.1 says so by closing the response early; HTTP/2 on the
 * request, as a reset stream (its response then looks finished, so the
 * response's own state cannot tell).
 */
export function onClientGone(req: AnyRequest, res: AnyResponse, gone: () => void): void {
  if ("stream" in req) {
    req.once("close", () => {
      if (!res.writableEnded || (req.stream.rstCode ?? 0) !== 0) gone();
    });
  } else {
    res.once("close", () => {
      if (!res.writableFinished) gone();
    });
  }
}

/**
 * Write and wait until the socket drained when the kernel buffer is full, so
 * a slow reader slows the producer instead of growing server memory. Resolves
 * false when the response closed first. `onWritten` runs once the chunk has
 * been handed to the socket (not after a failed write): its memory is free
 * to reuse then.
 */
export function writeWithBackpressure(
  res: AnyResponse,
  chunk: string | Uint8Array,
  onWritten?: () => void,
): Promise<boolean> {
  if (responseClosed(res)) return Promise.resolve(false);
  const ok = onWritten
    ? res.write(chunk, (err?: Error | null) => {
        if (!err) onWritten();
      })
    : res.write(chunk);
  if (ok) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (drained: boolean) => {
      res.off("drain", onDrain);
      res.off("close", onClose);
      resolve(drained);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    res.on("drain", onDrain);
    res.on("close", onClose);
  });
}

/**
 * Call before answering a request whose body is left unread (larger than its limit).
 * HTTP/1.1: the unread bytes would be parsed as the next request, so the
 * connection closes after the response (`connection: close`). HTTP/2 has no
 * hop-by-hop headers (node warns and drops them); there the stream is reset
 * with NO_ERROR once the response is complete, which asks the client to stop
 * sending without failing the response (RFC 9113 §8.1). Without it the
 * stream stays half-open for good: the server no longer reads, so the
 * client's flow-control window never reopens and its upload never ends.
 *
 * The response must carry a body or trailers. Node's compat layer asks for
 * trailers once the last DATA frame is out and sends them (or the empty frame
 * that ends the stream) on the next turn of the loop (setImmediate); the
 * reset is queued right behind them. A reset submitted any earlier goes out
 * first (nghttp2 sends control frames before DATA) and cuts the response:
 * curl then reports error 92 and shows no status. Not on the response's
 * `finish` either: on HTTP/2 that event comes only once the stream closed.
 */
export function stopReadingBody(req: AnyRequest, res: AnyResponse): void {
  if (!("stream" in req)) {
    if (!res.headersSent) res.setHeader("connection", "close");
    return;
  }
  resetAfterResponse(req, false);
}

/**
 * For a handler that may stop reading early without knowing it beforehand
 * (connect-node refusing a message over its readMaxBytes): on HTTP/2, once
 * the response is complete and the body was not read to its end, reset the
 * stream with NO_ERROR as stopReadingBody does. A body read to its end
 * changes nothing. HTTP/1.1 needs nothing: node discards or closes there.
 */
export function stopReadingBodyIfUnread(req: AnyRequest): void {
  if ("stream" in req) resetAfterResponse(req, true);
}

function resetAfterResponse(req: http2.Http2ServerRequest, ifUnread: boolean): void {
  const stream = req.stream;
  stream.once("wantTrailers", () => {
    setImmediate(() => {
      if (ifUnread && req.readableEnded) return;
      if (!stream.closed && !stream.destroyed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
  });
}

/**
 * Read a request body up to `limit` bytes; null when it is larger. Plain
 * listeners, not `for await`: an async iterator per request is a measurable
 * share of a refusal's cost when a flood of callers is answered 429. Rejects
 * with BODY_TIMEOUT when the body has not ended `timeoutMs` after the call
 * (body-deadline.ts); the caller answers it and calls stopReadingBody.
 */
export function readBody(
  req: AnyRequest,
  limit: number,
  timeoutMs: number,
): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const disarm = armBodyDeadline(timeoutMs, (err) => {
      cleanup();
      req.pause();
      reject(err);
    });
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        // Stop buffering; the caller answers 413 and calls stopReadingBody.
        req.pause();
        resolve(null);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onClose = () => {
      cleanup();
      reject(new Error("request closed before its body ended"));
    };
    const cleanup = () => {
      disarm();
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onClose);
  });
}
