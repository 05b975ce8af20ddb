import net from "node:net";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { createDualProtocolServer } from "./http-server.js";
import type { AnyRequest, AnyResponse } from "./http-types.js";

/** Connections a warm-up keeps open at once: callers arriving together, as in a burst. */
const CONCURRENCY = 50;
/** However loaded the box, start-up waits no longer than this for its warm-up. */
const MAX_WARM_UP_MS = 2000;

export interface WarmUpResult {
  /** Requests sent (fewer than asked when the time bound or an abort ended the warm-up). */
  requests: number;
  ms: number;
  /** How many answers had each HTTP status; 0 counts connections closed with no answer. */
  statuses: Record<string, number>;
  /** Requests still unanswered when the time bound ended the warm-up (a loaded box). */
  unfinished: number;
  /** Answers that were a 5xx or a 401, or a connection closed unanswered: a fault. */
  failed: number;
}

/**
 * Send `requests` requests through `handler` on a private loopback listener,
 * before the runner listens on its port. V8 compiles optimized code for a
 * function only once it has run often, on helper threads: a fresh runner hit
 * by a flood spent its first floods compiling node's HTTP, stream and socket
 * code and its own run route on the cores that answer the flood, and took
 * ≈ 40 % more CPU per refused caller than once warm (README, Performance).
 *
 * Each request comes on its own connection, as a flood's callers do, and is
 * answered by a check before admission: a health check, a run request whose
 * prompt is not text and one whose session id is not allowed (both 422). So
 * nothing is admitted, stored, counted in a metric or logged. With auth on,
 * the requests carry `token`, so they reach the same checks.
 */
export async function warmUp(
  handler: (req: AnyRequest, res: AnyResponse) => void,
  opts: { requests: number; token?: string; signal?: AbortSignal; maxMs?: number },
): Promise<WarmUpResult> {
  const started = performance.now();
  const deadline = started + (opts.maxMs ?? MAX_WARM_UP_MS);
  const kinds = requestsToSend(opts.token);
  const server = createDualProtocolServer(handler);
  const port = await server.listen("127.0.0.1", 0);
  const statuses: Record<string, number> = {};
  let sent = 0;
  let unfinished = 0;
  const more = () =>
    sent < opts.requests && performance.now() < deadline && opts.signal?.aborted !== true;
  const sender = async () => {
    while (more()) {
      const request = kinds[sent % kinds.length] as Buffer;
      sent++;
      const status = await exchange(port, request, deadline - performance.now());
      if (status === null) unfinished++;
      else statuses[status] = (statuses[status] ?? 0) + 1;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, opts.requests) }, sender));
  } finally {
    await server.close(0);
  }
  collectGarbage();
  let failed = 0;
  for (const [status, n] of Object.entries(statuses)) {
    const s = Number(status);
    if (s === 0 || s === 401 || s >= 500) failed += n;
  }
  const ms = Math.round(performance.now() - started);
  return { requests: sent, ms, statuses, unfinished, failed };
}

/**
 * A full garbage collection, so that what the warm-up allocated does not wait
 * in the old generation for the first run's: left there (≈ 6 MB of heap), a
 * fresh runner's first big run grew its RSS by 2-4 MB more, over the 8 MB a
 * paused client may cost (README, Performance). `gc` is only given to
 * contexts made after the flag is set.
 */
function collectGarbage(): void {
  setFlagsFromString("--expose-gc");
  const gc: unknown = runInNewContext("gc");
  if (typeof gc === "function") gc();
}

function requestsToSend(token: string | undefined): Buffer[] {
  const auth = token === undefined ? "" : `Authorization: Bearer ${token}\r\n`;
  const run = (body: Record<string, unknown>) => {
    const json = JSON.stringify(body);
    return `POST /run HTTP/1.1\r\nHost: runner\r\n${auth}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n\r\n${json}`;
  };
  return [
    "GET /healthz HTTP/1.1\r\nHost: runner\r\nConnection: close\r\n\r\n",
    run({ session_id: "warm-up", user_prompt: 0 }),
    run({ session_id: "../warm-up", user_prompt: "warm-up" }),
  ].map((r) => Buffer.from(r));
}

/**
 * One request on a new connection: the answer's status, 0 when the
 * connection closed without one, null when none came in `timeoutMs`.
 */
function exchange(port: number, request: Buffer, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let head = "";
    let timedOut = false;
    socket.setTimeout(Math.max(1, timeoutMs), () => {
      timedOut = true;
      socket.destroy();
    });
    socket.on("data", (chunk: Buffer) => {
      if (head.length < 12) head += chunk.toString("latin1", 0, 12);
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1];
      resolve(status !== undefined ? Number(status) : timedOut ? null : 0);
    });
    // The server closes the connection after its answer (`Connection: close`).
    socket.write(request);
  });
}
