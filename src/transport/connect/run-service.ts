import { create } from "@bufbuild/protobuf";
import { ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type AttachRequest,
  ListRunsResponseSchema,
  type RunEvent as ProtoRunEvent,
  type RunRequest,
  type RunService,
} from "../../../gen/fermilink/runner/v1/run_pb.js";
import { isPyBlank } from "../../admission/py-strip.js";
import { type Caller, callerUserId } from "../../auth/auth-tokens.js";
import { toRunnerError } from "../../errors/runner-error.js";
import { toConnectError } from "../../errors/status-table.js";
import type { RunEvent } from "../../events/run-event.js";
import { runEventToBinaryProto } from "../../events/run-event-wire.js";
import { runEventToProto, runInfoToProto } from "../../events/to-proto.js";
import type { StreamObserver } from "../../metrics/metrics.js";
import { StreamTally } from "../../metrics/stream-tally.js";
import { listRunsPage } from "../../run/run-listing.js";
import type { RunPipeline, Viewer } from "../../run/run-pipeline.js";
import { AUTH_CALLER } from "../token-guard.js";

const blankToNull = (s: string) => (isPyBlank(s) ? null : s);

/** The viewer a call's `user_id` names, as the call's token allows (auth-tokens.ts). */
const viewerOf = (caller: Caller | null, userId: string): Viewer => ({
  userId: callerUserId(caller, blankToNull(userId)),
});

/**
 * Why connect-node ended the call (its deadline, the client leaving), when it
 * did. A run or a follow ends quietly when the call's signal aborts, and
 * connect-node reports a handler that returns as OK: without this, a call cut
 * by its deadline ended `ok` with no `exit` event, and one that arrived
 * already past its deadline (`grpc-timeout: 0n`) was `internal`.
 */
function callEnded(signal: AbortSignal | undefined): ConnectError | null {
  return signal?.aborted ? ConnectError.from(signal.reason) : null;
}

/** Run a handler body, turning runner failures into Connect errors with their mapped code. */
async function guarded<T>(fn: () => T | Promise<T>, signal?: AbortSignal): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw callEnded(signal) ?? toConnectError(toRunnerError(err));
  }
}

/** Start the run a `RunRequest` asks for; its events from seq 1. */
export async function openRun(
  pipeline: RunPipeline,
  req: RunRequest,
  callerSignal: AbortSignal,
  caller: Caller | null,
): Promise<AsyncIterable<readonly RunEvent[]>> {
  const started = await pipeline.start(
    {
      session_id: req.sessionId,
      user_id: req.userId,
      user_prompt: req.userPrompt,
      package_id: req.packageId,
      sandbox: req.sandbox,
      provider: req.provider,
      detach: req.detach,
    },
    { callerSignal, caller },
  );
  return started.events;
}

/** The events an `AttachRequest` asks for. */
export function openAttach(
  pipeline: RunPipeline,
  req: AttachRequest,
  caller: Caller | null,
  viewerGone?: AbortSignal,
): AsyncIterable<readonly RunEvent[]> {
  return pipeline.attach(req.runId, req.afterSeq, viewerOf(caller, req.userId), true, viewerGone);
}

/** A protobuf codec (not JSON): the call's events can be written from precomputed bytes. */
function isBinaryCall(contentType: string | null): boolean {
  return !/json/i.test(contentType ?? "");
}

async function* toProtoStream(
  batches: AsyncIterable<readonly RunEvent[]>,
  observer: StreamObserver,
  arrivedAt: number | null,
  binary: boolean,
  signal: AbortSignal,
): AsyncGenerator<ProtoRunEvent> {
  const toProto = binary ? runEventToBinaryProto : runEventToProto;
  let first = true;
  let sawExit = false;
  const tally = new StreamTally(observer, "connect");
  try {
    for await (const batch of batches) {
      for (const event of batch) {
        if (first && arrivedAt !== null) observer.firstEventSent("connect", Date.now() - arrivedAt);
        first = false;
        yield toProto(event);
        if (event.body.type === "exit") sawExit = true;
        // Counted once connect-node asks for the next message, which it does only after the
        // write of this one was taken: a client that reset the stream while that write waited
        // (and the generator is ended at this yield) never got the event.
        tally.addEvent(event.body);
      }
      tally.report();
    }
  } catch (err) {
    // A failure after the first event (the run deleted by retention while it was read back)
    // ends the call with its own code, as on the direct path, not connect-node's `unknown`.
    throw (
      callEnded(signal) ?? (err instanceof ConnectError ? err : toConnectError(toRunnerError(err)))
    );
  } finally {
    tally.report();
  }
  // A stream that reached its `exit` is complete, whatever ended the call just after.
  if (!sawExit) {
    const ended = callEnded(signal);
    if (ended) throw ended;
  }
}

/**
 * RunService over Connect, gRPC and gRPC-Web. Failures before the first event
 * become Connect errors (codes from `errors/status-table.ts`); after that the
 * run's own `exit` event says how it ended. A cancelled call aborts
 * `ctx.signal`, which ends the run with reason `client_gone` unless the
 * request set `detach`.
 */
export function createRunService(
  pipeline: RunPipeline,
  observer: StreamObserver,
): ServiceImpl<typeof RunService> {
  return {
    async *run(req, ctx) {
      const arrivedAt = Date.now();
      const events = await guarded(
        () => openRun(pipeline, req, ctx.signal, ctx.values.get(AUTH_CALLER)),
        ctx.signal,
      );
      yield* toProtoStream(
        events,
        observer,
        arrivedAt,
        isBinaryCall(ctx.requestHeader.get("content-type")),
        ctx.signal,
      );
    },
    async *attach(req, ctx) {
      const events = await guarded(
        () => openAttach(pipeline, req, ctx.values.get(AUTH_CALLER), ctx.signal),
        ctx.signal,
      );
      yield* toProtoStream(
        events,
        observer,
        null,
        isBinaryCall(ctx.requestHeader.get("content-type")),
        ctx.signal,
      );
    },
    async cancel(req, ctx) {
      const record = await guarded(() =>
        pipeline.cancel(req.runId, viewerOf(ctx.values.get(AUTH_CALLER), req.userId)),
      );
      return runInfoToProto(record);
    },
    async getRun(req, ctx) {
      const record = await guarded(() =>
        pipeline.getRun(req.runId, viewerOf(ctx.values.get(AUTH_CALLER), req.userId)),
      );
      return runInfoToProto(record);
    },
    async listRuns(req, ctx) {
      const page = await guarded(() =>
        listRunsPage(pipeline, {
          userId: viewerOf(ctx.values.get(AUTH_CALLER), req.userId).userId,
          sessionId: blankToNull(req.sessionId),
          pageSize: req.pageSize,
          pageToken: req.pageToken,
        }),
      );
      return create(ListRunsResponseSchema, {
        runs: page.runs.map(runInfoToProto),
        nextPageToken: page.nextPageToken,
      });
    },
  };
}
