/**
 * The time a request may take to send its whole body. Long-lived streams are
 * the point of this service, so node's per-request timeout is off
 * (http-server.ts), and an HTTP/2 call never idles out: a client that sent
 * its headers and part of a body, then nothing, held its connection (and a
 * descriptor) for good. Every body this service reads is one small message
 * (≤ 1 MiB; no method streams its requests but reflection's), so it must
 * have ended this long after the request arrived; what the call streams
 * back afterwards is not bounded by this. Reflection's bidi stream sends its
 * messages when it likes, so there the bound is between messages instead: a
 * client quiet that long (none since the stream began or since its last one)
 * has its stream ended.
 */
import type { ConnectError } from "@connectrpc/connect";
import { RunnerError } from "../errors/runner-error.js";
import { toConnectError } from "../errors/status-table.js";
import type { AnyRequest } from "./http-types.js";

/** As long as a request's headers may take (http-server.ts). */
export const BODY_TIMEOUT_MS = 60_000;

/** The failure of a request whose body had not ended `ms` after it arrived. */
export function bodyTimedOut(ms: number): RunnerError {
  return new RunnerError(
    "BODY_TIMEOUT",
    `The request body did not arrive within ${ms / 1000} s: send the whole request message at once.`,
  );
}

/** The failure of a bidi stream on which no request message came for `ms`. */
export function streamIdled(ms: number): RunnerError {
  return new RunnerError(
    "BODY_TIMEOUT",
    `No request message arrived on this stream within ${ms / 1000} s: open a new stream when there is more to ask.`,
  );
}

/**
 * Call `expired` once, `ms` from now, unless the returned disarm is called
 * first (the body ended, or the request closed). One timer per request,
 * cleared as soon as its body is in: a stream that goes on for hours after
 * holds nothing.
 */
export function armBodyDeadline(ms: number, expired: (err: RunnerError) => void): () => void {
  const timer = setTimeout(() => expired(bodyTimedOut(ms)), ms);
  return () => clearTimeout(timer);
}

/**
 * `body` (the request's, as connect-node reads it) failing with BODY_TIMEOUT
 * (`deadline_exceeded`) when it has not ended `ms` after now: connect-node
 * answers that in the call's protocol. `onExpire` runs first, while the
 * answer is still to be written. With `idle`, the `ms` start again at each
 * chunk read: `body` must then yield whole messages (request-guard.ts), so
 * that half of one does not count as one.
 */
export function bodyWithDeadline(
  req: AnyRequest,
  body: AsyncIterable<Uint8Array>,
  ms: number,
  onExpire: () => void,
  idle = false,
): AsyncIterable<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  let timedOut: ConnectError | null = null;
  let failWaiting: ((err: ConnectError) => void) | null = null;
  const expired = (err: RunnerError) => {
    req.off("close", disarm);
    // connect-node answers any other error `internal`.
    timedOut = toConnectError(idle ? streamIdled(ms) : err);
    onExpire();
    failWaiting?.(timedOut);
  };
  let stop = armBodyDeadline(ms, expired);
  // A body connect-node never reads (a call it refuses by its headers) ends with its request.
  const disarm = () => {
    stop();
    req.off("close", disarm);
  };
  req.once("close", disarm);
  const next = (): Promise<IteratorResult<Uint8Array>> => {
    if (timedOut !== null) return Promise.reject(timedOut);
    return new Promise((resolve, reject) => {
      failWaiting = reject;
      // The read left waiting at expiry settles when the stream closes: its outcome is dropped.
      it.next().then(
        (r) => {
          failWaiting = null;
          if (r.done) disarm();
          else if (idle && timedOut === null) {
            stop();
            stop = armBodyDeadline(ms, expired);
          }
          resolve(r);
        },
        (err: unknown) => {
          failWaiting = null;
          disarm();
          reject(err);
        },
      );
    });
  };
  return {
    [Symbol.asyncIterator]: () => ({
      next,
      return: (value?: unknown) => {
        disarm();
        return it.return?.(value) ?? Promise.resolve({ done: true, value: undefined });
      },
    }),
  };
}
