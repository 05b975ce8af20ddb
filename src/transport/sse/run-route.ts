import { toRunnerError } from "../../errors/runner-error.js";
import { toHttpError } from "../../errors/status-table.js";
import type { Logger } from "../../log/logger.js";
import type { StreamObserver } from "../../metrics/metrics.js";
import type { RunPipeline } from "../../run/run-pipeline.js";
import {
  type AnyRequest,
  type AnyResponse,
  readBody,
  sendJson,
  writeWithBackpressure,
} from "../http-types.js";
import { parseRunBody } from "./parse-run-body.js";
import { encodeSseComment, encodeSseFrame } from "./sse-encoder.js";

/** A run request body is a prompt of at most 10,000 code points plus a few ids. */
const MAX_BODY_BYTES = 1024 * 1024;

/**
 * FermiLink's `POST /run` (spec §1.1, §2): errors before the first event are
 * HTTP statuses with `{"detail": ...}`; then a `text/event-stream` of `meta`,
 * `agent`, `log` and a final `runner.exit`, each frame with `id: <seq>`. A
 * waiting caller gets its 200 at once and `: queued N/M` comments. A client
 * that goes away ends its run (reason `client_gone`).
 */
export async function handleRunRoute(
  req: AnyRequest,
  res: AnyResponse,
  pipeline: RunPipeline,
  logger: Logger,
  observer: StreamObserver,
  heartbeatMs: number,
): Promise<void> {
  const arrivedAt = Date.now();
  const caller = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) caller.abort();
  });
  let started: Awaited<ReturnType<RunPipeline["start"]>>;
  try {
    const body = await readBody(req, MAX_BODY_BYTES);
    if (body === null) {
      res.setHeader("connection", "close");
      sendJson(res, 413, { detail: "Request body too large." });
      return;
    }
    started = await pipeline.start(parseRunBody(body), { callerSignal: caller.signal });
  } catch (err) {
    const re = toRunnerError(err);
    if (re.code === "INTERNAL") logger.error({ err }, "POST /run failed before streaming");
    if (!res.headersSent && !res.destroyed) {
      const { status, body } = toHttpError(re);
      sendJson(res, status, body);
    }
    return;
  }
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
  });
  // Idle agents must not trip proxy timeouts (FermiLink §10 item 25): a comment
  // line is invisible to SSE parsers but is traffic.
  let lastWrite = Date.now();
  const heartbeat =
    heartbeatMs > 0
      ? setInterval(
          () => {
            if (Date.now() - lastWrite >= heartbeatMs && !res.writableEnded) {
              lastWrite = Date.now();
              res.write(encodeSseComment("keepalive"));
            }
          },
          Math.max(10, Math.floor(heartbeatMs / 2)),
        )
      : undefined;
  try {
    await streamEvents();
  } finally {
    clearInterval(heartbeat);
  }
  if (!res.writableEnded) res.end();

  async function streamEvents(): Promise<void> {
    for await (const event of started.events) {
      const chunk =
        event.body.type === "queued"
          ? encodeSseComment(`queued ${event.body.position}/${event.body.queueSize}`)
          : encodeSseFrame(event);
      if (chunk === null) continue;
      if (event.seq === 1) observer.firstEventSent("sse", Date.now() - arrivedAt);
      observer.eventStreamed("sse", event.body.type, chunk.length);
      lastWrite = Date.now();
      if (!(await writeWithBackpressure(res, chunk))) break;
    }
  }
}
