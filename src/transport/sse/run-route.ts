import type { Caller } from "../../auth/auth-tokens.js";
import { RunnerError, toRunnerError } from "../../errors/runner-error.js";
import { toHttpError } from "../../errors/status-table.js";
import type { Logger } from "../../log/logger.js";
import type { StreamObserver } from "../../metrics/metrics.js";
import { RunAborted } from "../../run/run-abort.js";
import type { RunPipeline } from "../../run/run-pipeline.js";
import {
  type AnyRequest,
  type AnyResponse,
  declaredBodyBytes,
  onClientGone,
  readBody,
  sendJson,
  stopReadingBody,
} from "../http-types.js";
import { parseRunBody } from "./parse-run-body.js";
import { streamSse, writeSseHead } from "./sse-stream.js";

/** A run request body is a prompt of at most 10,000 code points plus a few ids. */
const MAX_BODY_BYTES = 1024 * 1024;

/**
 * True when the request's Content-Length already says its body is over the
 * limit: it is answered 413 unread, so one that asks `Expect: 100-continue`
 * is never told to send it (http-server.ts).
 */
function declaresRunBodyTooLarge(req: AnyRequest): boolean {
  return (declaredBodyBytes(req) ?? 0) > MAX_BODY_BYTES;
}

/**
 * FermiLink's `POST /run` (spec §1.1, §2): errors before the first event are
 * HTTP statuses with `{"detail": ...}`; then a `text/event-stream` of `meta`,
 * `agent`, `log` and a final `runner.exit`, each frame with `id: <seq>`. A
 * waiting caller gets its 200 at once and `: queued N/M` comments. A client
 * that goes away ends its run (reason `client_gone`) unless the body set
 * `"detach": true`.
 */
export async function handleRunRoute(
  req: AnyRequest,
  res: AnyResponse,
  pipeline: RunPipeline,
  logger: Logger,
  observer: StreamObserver,
  heartbeatMs: number,
  /** Who the bearer token named; null = auth off. */
  authCaller: Caller | null,
  /** How long the body may take to arrive (body-deadline.ts). */
  bodyTimeoutMs: number,
): Promise<void> {
  const arrivedAt = Date.now();
  const caller = new AbortController();
  onClientGone(req, res, () => caller.abort());
  let body: Buffer | null = null;
  // A body declared too large is refused before a byte of it is read (or, with
  // `Expect: 100-continue`, sent); a chunked one only once it passed the limit.
  if (!declaresRunBodyTooLarge(req)) {
    try {
      body = await readBody(req, MAX_BODY_BYTES, bodyTimeoutMs);
    } catch (err) {
      // The client went away mid-upload: nobody to answer, and nothing went wrong here.
      if (!(err instanceof RunnerError)) return;
      // Its body stalled: 408, and the connection (HTTP/2: the stream) closes, the rest unread.
      stopReadingBody(req, res);
      const { status, body } = toHttpError(err);
      sendJson(res, status, body);
      return;
    }
  }
  if (body === null) {
    stopReadingBody(req, res);
    sendJson(res, 413, { detail: "Request body too large." });
    return;
  }
  let started: Awaited<ReturnType<RunPipeline["start"]>>;
  try {
    // SSE sends each agent line raw: no typed items to re-derive for events read back.
    started = await pipeline.start(parseRunBody(body, req.headers["content-type"]), {
      callerSignal: caller.signal,
      typedItems: false,
      caller: authCaller,
    });
  } catch (err) {
    const re = toRunnerError(err);
    // A RunAborted here is the caller leaving before the run's first event: nothing went wrong.
    if (re.code === "INTERNAL" && !(err instanceof RunAborted)) {
      logger.error({ err }, "POST /run failed before streaming");
    }
    if (!res.headersSent && !res.destroyed) {
      const { status, body } = toHttpError(re);
      sendJson(res, status, body);
    }
    return;
  }
  writeSseHead(res);
  await streamSse(res, started.events, { heartbeatMs, observer, arrivedAt });
}
