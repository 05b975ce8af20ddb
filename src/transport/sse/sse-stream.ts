import { toRunnerError } from "../../errors/runner-error.js";
import type { RunEvent } from "../../events/run-event.js";
import type { StreamObserver } from "../../metrics/metrics.js";
import { StreamTally } from "../../metrics/stream-tally.js";
import { type AnyResponse, responseClosed, writeWithBackpressure } from "../http-types.js";
import { encodeSseComment, encodeSseFailure, encodeSseFrame } from "./sse-encoder.js";

/** Characters gathered before a write; bounds the memory of one write whatever the line sizes. */
const WRITE_CHUNK = 64 * 1024;

/** FermiLink's event-stream response headers (spec §1.1 step 5). */
export function writeSseHead(res: AnyResponse): void {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
  });
}

/**
 * Stream journal entries as SSE: frames with `id: <seq>`, `queued` as
 * `: queued N/M` comments, and keepalive comments on an idle stream so
 * proxies keep it open (FermiLink §10 item 25). Each write waits for the
 * socket to drain, so a slow client only slows its own cursor. Returns when
 * the events end or the client is gone. A runner failure while streaming (the
 * run deleted by retention under a read-back) ends the stream with a
 * `runner.exit` of reason `error` saying so (`encodeSseFailure`); so does an
 * internal one (a store read failing), with the generic message, and it is
 * then thrown for the route to log: a clean end would read as a complete run.
 */
export async function streamSse(
  res: AnyResponse,
  batches: AsyncIterable<readonly RunEvent[]>,
  opts: { heartbeatMs: number; observer: StreamObserver; arrivedAt: number | null },
): Promise<void> {
  let lastWrite = Date.now();
  const heartbeat =
    opts.heartbeatMs > 0
      ? setInterval(
          () => {
            if (Date.now() - lastWrite >= opts.heartbeatMs && !responseClosed(res)) {
              lastWrite = Date.now();
              res.write(encodeSseComment("keepalive"));
            }
          },
          Math.max(10, Math.floor(opts.heartbeatMs / 2)),
        )
      : undefined;
  const tally = new StreamTally(opts.observer, "sse");
  let first = true;
  const write = async (chunk: string): Promise<boolean> => {
    if (first && opts.arrivedAt !== null) {
      opts.observer.firstEventSent("sse", Date.now() - opts.arrivedAt);
    }
    first = false;
    lastWrite = Date.now();
    // Counted once the stream took the write, never before nor at the end: the frames of a
    // write that found the client gone were not streamed.
    if (!(await writeWithBackpressure(res, chunk))) return false;
    tally.addBytes(Buffer.byteLength(chunk, "utf8"));
    tally.report();
    return true;
  };
  let runId: string | null = null;
  let failure: string | null = null;
  let internal: { err: unknown } | null = null;
  try {
    stream: for await (const batch of batches) {
      // What is available goes out in few writes (up to WRITE_CHUNK each), not one per event.
      let chunk = "";
      runId ??= batch[0]?.runId ?? null;
      for (const event of batch) {
        const frame =
          event.body.type === "queued"
            ? encodeSseComment(`queued ${event.body.position}/${event.body.queueSize}`)
            : encodeSseFrame(event);
        if (frame === null) continue;
        // Bytes are counted per write, in UTF-8 (what goes on the wire), not per frame.
        tally.add(event.body.type, 0);
        chunk += frame;
        if (chunk.length >= WRITE_CHUNK) {
          if (!(await write(chunk))) break stream;
          chunk = "";
        }
      }
      if (chunk !== "" && !(await write(chunk))) break;
    }
  } catch (err) {
    const re = toRunnerError(err);
    if (re.code === "INTERNAL") internal = { err };
    failure = encodeSseFailure(runId, re.message);
  } finally {
    clearInterval(heartbeat);
  }
  if (!responseClosed(res)) {
    if (failure === null) res.end();
    else res.end(failure);
  }
  if (internal !== null) throw internal.err;
}
