import { isPyBlank } from "../../admission/py-strip.js";
import { type Caller, callerUserId } from "../../auth/auth-tokens.js";
import { RunnerError, toRunnerError } from "../../errors/runner-error.js";
import { toHttpError } from "../../errors/status-table.js";
import type { RunRecord } from "../../journal/run-store.js";
import type { Logger } from "../../log/logger.js";
import type { StreamObserver } from "../../metrics/metrics.js";
import { listRunsPage } from "../../run/run-listing.js";
import type { RunPipeline, Viewer } from "../../run/run-pipeline.js";
import {
  type AnyRequest,
  type AnyResponse,
  firstHeader,
  onClientGone,
  sendJson,
} from "../http-types.js";
import { lastQueryValue } from "../request-path.js";
import { agentPolicyJson } from "./sse-encoder.js";
import { streamSse, writeSseHead } from "./sse-stream.js";

/** Header naming the caller's user id (the `user_id` query parameter works too). */
export const USER_ID_HEADER = "x-fermilink-user-id";

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** A run record in the JSON of FermiLink's routes (snake_case, like `meta`). */
export function runRecordJson(r: RunRecord): Record<string, unknown> {
  return {
    run_id: r.runId,
    user_id: r.userId,
    session_id: r.sessionId,
    agent: agentPolicyJson(r.policy),
    package_id: r.packageId,
    detached: r.detached,
    prompt_preview: r.promptPreview,
    status: r.status,
    created_at: iso(r.createdAtMs),
    started_at: iso(r.startedAtMs),
    ended_at: iso(r.endedAtMs),
    exit_reason: r.exitReason,
    return_code: r.returnCode,
    exit_message: r.exitMessage,
    succeeded: r.succeeded,
    last_seq: r.lastSeq,
  };
}

function viewerOf(req: AnyRequest, url: URL, caller: Caller | null): Viewer {
  // A blank `?user_id=` says nothing: the header is asked next.
  const userId =
    nonBlank(lastQueryValue(url, "user_id")) ?? nonBlank(firstHeader(req, USER_ID_HEADER));
  return { userId: callerUserId(caller, userId) };
}

/**
 * A non-negative integer query value or header; null when absent or blank. Blank is absent
 * (as `?user_id=` and a blank `Last-Event-ID` are): `?after=` and `?after=%20` say the same.
 */
function optionalNonNegativeInt(raw: string | null | undefined, what: string): number | null {
  const value = raw?.trim() ?? "";
  if (value === "") return null;
  if (!/^\d{1,15}$/.test(value)) {
    throw new RunnerError("REQUEST_INVALID", `${what} must be a non-negative integer.`);
  }
  return Number(value);
}

/** A query value or header; null when absent or blank (blank says nothing). */
function nonBlank(raw: string | undefined): string | null {
  return raw === undefined || isPyBlank(raw) ? null : raw;
}

/** Where a viewer resumes: `Last-Event-ID` (what EventSource sends on reconnect) beats `?after=`. */
function resumePoint(req: AnyRequest, url: URL): { after: number; from: string } {
  const last = optionalNonNegativeInt(firstHeader(req, "last-event-id"), "Last-Event-ID");
  if (last !== null) return { after: last, from: "Last-Event-ID" };
  return {
    after: optionalNonNegativeInt(lastQueryValue(url, "after"), "after") ?? 0,
    from: "after",
  };
}

/** `/runs...` paths this module answers, or null. */
export function matchRunsRoute(
  pathname: string,
): { kind: "list" } | { kind: "get" | "events" | "cancel"; runId: string } | null {
  if (pathname === "/runs" || pathname === "/runs/") return { kind: "list" };
  const m = /^\/runs\/([^/]+)(?:\/(events|cancel))?\/?$/.exec(pathname);
  if (!m?.[1]) return null;
  let runId: string;
  try {
    runId = decodeURIComponent(m[1]);
  } catch {
    return null;
  }
  if (m[2] === "events") return { kind: "events", runId };
  if (m[2] === "cancel") return { kind: "cancel", runId };
  return { kind: "get", runId };
}

/** The methods a `/runs...` route answers (checked by the caller, before the token). */
export function runsRouteMethods(
  route: NonNullable<ReturnType<typeof matchRunsRoute>>,
): "GET, HEAD" | "POST" {
  return route.kind === "cancel" ? "POST" : "GET, HEAD";
}

/**
 * The HTTP twins of Attach, Cancel, GetRun and ListRuns:
 * `GET /runs/{id}/events` streams a run in `POST /run`'s wire form and
 * resumes after `Last-Event-ID` (or `?after=`), so a browser EventSource
 * reconnects without losing or repeating a frame; once everything was sent
 * and the run has ended it answers 204, which tells EventSource to stop.
 * The caller has checked the method (`runsRouteMethods`).
 */
export async function handleRunsRoute(
  req: AnyRequest,
  res: AnyResponse,
  url: URL,
  route: NonNullable<ReturnType<typeof matchRunsRoute>>,
  deps: { pipeline: RunPipeline; logger: Logger; observer: StreamObserver; heartbeatMs: number },
  /** Who the bearer token named; null = auth off. */
  caller: Caller | null,
): Promise<void> {
  // Every GET route answers HEAD too: the same status and headers, no body (RFC 9110 §9.3.2).
  const head = req.method === "HEAD";
  try {
    const viewer = viewerOf(req, url, caller);
    switch (route.kind) {
      case "list": {
        const page = listRunsPage(deps.pipeline, {
          userId: viewer.userId,
          sessionId: nonBlank(lastQueryValue(url, "session_id")),
          pageSize: optionalNonNegativeInt(lastQueryValue(url, "page_size"), "page_size") ?? 0,
          pageToken: lastQueryValue(url, "page_token") ?? "",
        });
        sendJson(res, 200, {
          runs: page.runs.map(runRecordJson),
          next_page_token: page.nextPageToken || null,
        });
        return;
      }
      case "get":
        sendJson(res, 200, runRecordJson(deps.pipeline.getRun(route.runId, viewer)));
        return;
      case "cancel":
        sendJson(res, 200, runRecordJson(await deps.pipeline.cancel(route.runId, viewer)));
        return;
      case "events": {
        const at = resumePoint(req, url);
        const live = deps.pipeline.isLive(route.runId);
        const record = live ? null : deps.pipeline.getRun(route.runId, viewer);
        // lastSeq is the seq of the run's last stored event (compared, never counted: a run
        // closed after a crash has a gap in seq before its exit, and any cursor a viewer was
        // given by the crashed process is below that exit; recover-interrupted.ts). One past
        // it is refused by attach, live or not; one equal to a live run's is a resume at its
        // end: the stream stays open for more.
        if (record && at.after === record.lastSeq) {
          res.writeHead(204);
          res.end();
          return;
        }
        // HEAD looks the run up as GET does, through attach: a live run is found (and its
        // viewer checked) in memory, where the store may not have its row yet (a refused
        // first write). The follow it returns starts only when iterated: HEAD never does, so
        // it neither holds a subscriber nor waits for events.
        const gone = new AbortController();
        // Raw lines only (typedItems false): SSE never sends an agent line's items.
        const events = deps.pipeline.attach(
          route.runId,
          at.after,
          viewer,
          false,
          gone.signal,
          at.from,
        );
        if (head) {
          writeSseHead(res);
          res.end();
          return;
        }
        onClientGone(req, res, () => gone.abort());
        writeSseHead(res);
        // HTTP/1.1 holds a head until the first body write (HTTP/2's writeHead sends it): a viewer
        // resuming a quiet run would get its 200 (EventSource's `open`) only with the next event
        // or keepalive, up to 15 s on.
        if ("flushHeaders" in res) res.flushHeaders();
        await streamSse(res, events, {
          heartbeatMs: deps.heartbeatMs,
          observer: deps.observer,
          arrivedAt: null,
        });
        return;
      }
    }
  } catch (err) {
    const re = toRunnerError(err);
    if (re.code === "INTERNAL") deps.logger.error({ err }, `${req.method} ${url.pathname} failed`);
    if (!res.headersSent && !res.destroyed) {
      const { status, body } = toHttpError(re);
      sendJson(res, status, body);
    } else if (!res.writableEnded) res.end();
  }
}
