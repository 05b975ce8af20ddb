import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { AnyRequest, AnyResponse } from "./http-types.js";

/** The first bytes of every HTTP/2 connection with prior knowledge (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** A listener that speaks HTTP/1.1 and cleartext HTTP/2 (h2c) on one port. */
export interface DualProtocolServer {
  /** Resolves with the bound port. */
  listen(host: string, port: number): Promise<number>;
  /**
   * Tell every open HTTP/2 connection to take its next calls elsewhere (a graceful GOAWAY,
   * NO_ERROR): the calls already open on it run to their end, then it closes.
   */
  goAway(): void;
  /** Stop accepting; close idle keep-alive connections; destroy the rest after `forceAfterMs`. */
  close(forceAfterMs: number): Promise<void>;
  /** Open TCP connections (tests assert 0 after teardown). */
  readonly connectionCount: number;
}

/**
 * gRPC clients use h2c with prior knowledge while browsers, curl and
 * FermiLink's web app use HTTP/1.1; Node's http2 server falls back to HTTP/1
 * only under TLS (ALPN), so a TCP front sniffs the preface and hands each
 * connection to the matching Node server.
 */
/** How long a new connection may take to send its first bytes (an HTTP/2 preface or a request line). */
const SNIFF_TIMEOUT_MS = 10_000;
/** How long an HTTP/1.1 request may take to send its headers (node's default). */
const HEADERS_TIMEOUT_MS = 60_000;
/**
 * How long an HTTP/2 connection may stay open with no call on it before it is
 * closed (GOAWAY; a gRPC client reconnects for its next call). HTTP/1.1's
 * keep-alive ends after node's 5 s; an h2 connection had no limit, so clients
 * that connect and go quiet held a socket each for good. Pings are not calls.
 */
const H2_IDLE_TIMEOUT_MS = 180_000;

export function createDualProtocolServer(
  handler: (req: AnyRequest, res: AnyResponse) => void,
  limits: { sniffTimeoutMs?: number; headersTimeoutMs?: number; h2IdleTimeoutMs?: number } = {},
): DualProtocolServer {
  const sniffTimeoutMs = limits.sniffTimeoutMs ?? SNIFF_TIMEOUT_MS;
  const headersTimeoutMs = limits.headersTimeoutMs ?? HEADERS_TIMEOUT_MS;
  const h2IdleTimeoutMs = limits.h2IdleTimeoutMs ?? H2_IDLE_TIMEOUT_MS;
  // HTTP/1.1 requests in flight per socket: an idle keep-alive socket can be
  // closed at once on shutdown, a busy one right after its response.
  const inFlight = new Map<net.Socket, number>();
  let closing = false;
  // Node checks headersTimeout on a timer it starts when the server listens; this one never
  // does (the TCP front accepts), so it is started by hand below, and stopped on close.
  const h1 = http.createServer(
    {
      headersTimeout: headersTimeoutMs,
      connectionsCheckingInterval: Math.max(10, Math.min(30_000, headersTimeoutMs / 2)),
    },
    (req, res) => {
      const socket = req.socket;
      inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1);
      res.once("close", () => {
        const n = (inFlight.get(socket) ?? 1) - 1;
        inFlight.set(socket, n);
        if (closing && n === 0) socket.destroy();
      });
      if (closing) res.setHeader("connection", "close");
      handler(req, res);
    },
  );
  // Long-lived streams are the point of this service: no per-request timeout.
  h1.requestTimeout = 0;
  const h2 = http2.createServer({}, handler);
  for (const server of [h1, h2] as const) {
    server.on("checkContinue", (req: AnyRequest, res: AnyResponse) => {
      continueOnFirstRead(req, res);
      server.emit("request", req, res);
    });
  }
  const sockets = new Set<net.Socket>();
  const isH2Socket = new WeakSet<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  h2.on("session", (s) => {
    sessions.add(s);
    closeWhenIdle(s, h2IdleTimeoutMs);
    s.once("close", () => sessions.delete(s));
  });

  // Node's HTTP servers turn Nagle's algorithm off on each connection (`noDelay`, their default;
  // its http2 does it for its sessions), a plain net.Server does not: HTTP/1.1 answers went out
  // with it on, so a small write (an SSE frame, a Connect message) that followed one not yet
  // acknowledged waited for the ACK, which a client may delay by 40-200 ms.
  const tcp = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      inFlight.delete(socket);
    });
    socket.on("error", () => socket.destroy());
    // A connection that never says which protocol it speaks would be held for good.
    socket.setTimeout(sniffTimeoutMs, () => socket.destroy());
    let head = Buffer.alloc(0);
    const onReadable = () => {
      let chunk: Buffer | null;
      // biome-ignore lint/suspicious/noAssignInExpressions: the standard read loop
      while ((chunk = socket.read() as Buffer | null) !== null) head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, H2_PREFACE.length);
      const isH2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isH2 && head.length < H2_PREFACE.length) return; // need more bytes to decide
      socket.off("readable", onReadable);
      socket.setTimeout(0);
      socket.unshift(head);
      if (isH2) isH2Socket.add(socket);
      (isH2 ? h2 : h1).emit("connection", socket);
    };
    socket.on("readable", onReadable);
  });

  return {
    listen(host, port) {
      return new Promise((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen(port, host, () => {
          tcp.off("error", reject);
          h1.emit("listening");
          const addr = tcp.address();
          resolve(typeof addr === "object" && addr ? addr.port : port);
        });
      });
    },
    goAway() {
      // Node's close() sends GOAWAY with the last stream it processed, so no open call is cut.
      for (const s of sessions) s.close();
    },
    async close(forceAfterMs) {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      // Stops node's headers-timeout timer (h1 itself never listened: its error is expected).
      h1.close(() => {});
      closing = true;
      for (const s of sockets) if ((inFlight.get(s) ?? 0) === 0 && !isH2Socket.has(s)) s.destroy();
      for (const s of sessions) s.close();
      const force = setTimeout(() => {
        for (const s of sockets) s.destroy();
      }, forceAfterMs);
      await closed;
      clearTimeout(force);
      // Sockets report 'close' after the server does; let them settle so counts are exact.
      while (sockets.size > 0) await new Promise((r) => setTimeout(r, 5));
    },
    get connectionCount() {
      return sockets.size;
    },
  };
}

/**
 * Tell a request that asks `Expect: 100-continue` to send its body once its
 * handler starts reading it, and only then, as Go's net/http does. Node's
 * default invites every body at once, so a client uploaded what was never
 * read: to a 404, 405 or 307, a CORS preflight, a call connect-node refuses
 * by its headers (grpc-web-text, an unknown encoding), a body declared over
 * its limit. Without a 100 Continue the client sends no body (RFC 9110
 * §10.1.1), and node closes the HTTP/1.1 connection after the answer, as the
 * body may still come. Every handler here reads a body before it answers
 * (connect-node writes its headers only once the call's first answer is
 * ready); one that answered first would get no 100, and a client waiting for
 * it would send its body only after its own timeout (~1 s for curl).
 */
function continueOnFirstRead(req: AnyRequest, res: AnyResponse): void {
  const read = req._read;
  // Readable calls _read only when a consumer asks for data; node's own
  // discard of an unread body comes after the response, when headersSent.
  req._read = function (this: AnyRequest, size: number) {
    req._read = read;
    if (!res.headersSent) res.writeContinue();
    read.call(this, size);
  };
}

/**
 * Close `session` gracefully once it has had no open stream for `idleMs`: a
 * long call, however quiet, keeps it open (node's own session timeout counts
 * bytes, and would cut a run waiting on its agent).
 */
function closeWhenIdle(session: http2.Http2Session, idleMs: number): void {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => session.close(), idleMs);
    timer.unref();
  };
  session.on("stream", (stream: http2.ServerHttp2Stream) => {
    open++;
    clearTimeout(timer);
    stream.once("close", () => {
      if (--open === 0 && !session.closed) arm();
    });
  });
  session.once("close", () => clearTimeout(timer));
  arm();
}
