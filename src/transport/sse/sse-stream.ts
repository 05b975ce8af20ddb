import type { RunEvent } from "../../events/run-event.js";
import type { StreamObserver } from "../../metrics/metrics.js";
import { type AnyResponse, writeWithBackpressure } from "../http-types.js";
import { encodeSseComment, encodeSseFrame } from "./sse-encoder.js";

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
 * the events end or the client is gone.
 */
export async function streamSse(
  res: AnyResponse,
  events: AsyncIterable<RunEvent>,
  opts: { heartbeatMs: number; observer: StreamObserver; arrivedAt: number | null },
): Promise<void> {
  let lastWrite = Date.now();
  const heartbeat =
    opts.heartbeatMs > 0
      ? setInterval(
          () => {
            if (Date.now() - lastWrite >= opts.heartbeatMs && !res.writableEnded) {
              lastWrite = Date.now();
              res.write(encodeSseComment("keepalive"));
            }
          },
          Math.max(10, Math.floor(opts.heartbeatMs / 2)),
        )
      : undefined;
  let first = true;
  try {
    for await (const event of events) {
      const chunk =
        event.body.type === "queued"
          ? encodeSseComment(`queued ${event.body.position}/${event.body.queueSize}`)
          : encodeSseFrame(event);
      if (chunk === null) continue;
      if (first && opts.arrivedAt !== null) {
        opts.observer.firstEventSent("sse", Date.now() - opts.arrivedAt);
      }
      first = false;
      opts.observer.eventStreamed("sse", event.body.type, chunk.length);
      lastWrite = Date.now();
      if (!(await writeWithBackpressure(res, chunk))) break;
    }
  } finally {
    clearInterval(heartbeat);
  }
  if (!res.writableEnded) res.end();
}
