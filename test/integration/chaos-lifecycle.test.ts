/**
 * Randomized lifecycle ("chaos") test: many callers over every face (SSE,
 * Connect, gRPC, gRPC-Web), each doing something a real client does (read to
 * the end, leave early, leave before the first event, detach and come back
 * later from a cursor, cancel, stall), against a server with tight admission
 * limits. Whatever the mix, no slot, process, file descriptor or subscriber
 * may be left over, and no event may be lost or repeated.
 *
 * Deterministic choices from a seed: CHAOS_SEED=<n> CHAOS_RUNS=<n> replay or
 * explore other mixes (the seed is in every failure message). Timing is not
 * deterministic, so only invariants that hold for every interleaving are
 * asserted.
 */
import { createHash } from "node:crypto";
import { readdirSync } from "node:fs";
import http from "node:http";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  ExitReason,
  type RunEvent,
  RunService,
  RunStatus,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import type { RunRecord } from "../../src/journal/run-store.js";
import { Prng } from "../helpers/prng.js";
import { killQuietly } from "../helpers/process-census.js";
import { processesWithRunIds } from "../helpers/run-id-census.js";
import { parseSse } from "../helpers/sse-client.js";
import { type GatedTestServer, startGatedTestServer } from "../helpers/start-server.js";

// `||`, not `??`: an empty CHAOS_SEED= means the default, not seed 0.
const SEED = Number(process.env.CHAOS_SEED || 20_240_611);
const RUNS = Number(process.env.CHAOS_RUNS || 56);
/** Callers in flight at once: well above the server's limits, so some wait and some are refused. */
const CONCURRENCY = 14;
const SETTLE_MS = 15_000;
/**
 * A run whose caller left ends `client_gone` unless its own end came first;
 * its exit then follows the departure by at most the kill grace (1 s) plus the
 * server's delay in noticing the departure (this much covers a loaded box).
 */
const LEFT_CALLER_SLACK_MS = 4000;

type Reason = "completed" | "timeout" | "cancelled" | "client_gone";

/**
 * Each scenario's weight in the mix and the exit reasons it may end with when
 * nobody interferes (limits below: idle 3 s, runtime 6 s: a node CLI can take a second to start on
 * a loaded 2-core box). The floods may hit
 * the runtime limit on a loaded box; `gate` completes only if the gate opens
 * before its idle timeout.
 */
const SCENARIOS: Record<string, { weight: number; natural: readonly Reason[] }> = {
  quick: { weight: 5, natural: ["completed"] },
  "sleep-1s": { weight: 2, natural: ["completed"] },
  "stderr-and-exit-3": { weight: 1, natural: ["completed"] },
  "huge-line": { weight: 1, natural: ["completed"] },
  "lines-5000": { weight: 2, natural: ["completed", "timeout"] },
  "flood-small": { weight: 1, natural: ["completed", "timeout"] },
  gate: { weight: 2, natural: ["completed", "timeout"] },
  hold: { weight: 2, natural: ["timeout"] },
  slow: { weight: 1, natural: ["timeout"] },
  grandchild: { weight: 1, natural: ["timeout"] },
  "ignore-sigterm": { weight: 1, natural: ["timeout"] },
  orphan: { weight: 1, natural: ["completed"] },
  "escapee-daemon": { weight: 1, natural: ["completed"] },
  "escapee-holding-output": { weight: 1, natural: ["timeout"] },
  "done-leaving-stubborn-grandchild": { weight: 1, natural: ["completed"] },
};

type Face = "sse" | "connect" | "connect-json" | "grpc" | "grpc-web";
type ConnectFace = Exclude<Face, "sse">;
type Action =
  | "read"
  | "pause-then-read"
  | "abort-after-k"
  | "abort-before-first"
  | "detach-leave-attach"
  | "cancel-after-k";

/** Everything a caller will do, drawn up front so a seed gives the same mix however runs interleave. */
interface Plan {
  idx: number;
  tag: string;
  user: string | null;
  session: string | null;
  scenario: string;
  face: Face;
  action: Action;
  /** Events (other than `queued`) to read before the action. */
  k: number;
  pauseMs: number;
  /** abort-before-first: when the caller goes, from the request. */
  leaveAfterMs: number;
  cancelVia: "connect" | "http";
  /** detach-leave-attach: cancel the run between leaving and coming back. */
  cancelWhileAway: boolean;
  attachFace: Face;
  /** Where the re-attach resumes, as a fraction of the last seq the caller saw. */
  cursorFrac: number;
  /** SSE re-attach: resume with Last-Event-ID rather than `?after=`. */
  lastEventIdHeader: boolean;
  /** The first re-attach leaves after this many events and a second one resumes (0: no). */
  attachLeaveAfter: number;
  secondAttachFace: Face;
  /** abort-after-k: stop reading for `pauseMs` first (the server then waits on a full socket). */
  pauseBeforeLeave: boolean;
  /** Connect faces: a call deadline (ms), 0 for none; it ends the call as leaving does. */
  deadlineMs: number;
  jitterMs: number;
}

function makePlan(rng: Prng, idx: number): Plan {
  const user = rng.chance(0.2) ? null : `u${rng.int(0, 3)}`;
  const sessionNo = rng.int(0, 2);
  const session = rng.chance(0.1) ? null : `chaos-${user ?? "anon"}-s${sessionNo}`;
  let scenario = rng.weighted(
    Object.fromEntries(Object.entries(SCENARIOS).map(([name, s]) => [name, s.weight])),
  );
  const face = rng.weighted<Face>({
    sse: 3,
    connect: 2,
    "connect-json": 1,
    grpc: 2,
    "grpc-web": 1,
  });
  const action = rng.weighted<Action>({
    read: 3,
    "pause-then-read": 1,
    "abort-after-k": 2,
    "abort-before-first": 1,
    "detach-leave-attach": 3,
    "cancel-after-k": 2,
  });
  // On Connect every event names its run, `queued` included; on SSE only `meta` and the exit do.
  const minK = action === "cancel-after-k" && face !== "sse" ? 0 : 1;
  // A detached caller reads further at times, so it comes back from cursors deep in a stream.
  let maxK = action === "detach-leave-attach" && rng.chance(0.5) ? 40 : 6;
  let minKQuiet = 0;
  // Detaching is for long runs: half the detached callers leave one that has gone quiet (after
  // meta and its first line), where a viewer that left but still waits would show: no event
  // wakes it before the idle timeout.
  if (action === "detach-leave-attach" && rng.chance(0.5)) {
    scenario = rng.pick(["hold", "escapee-holding-output"]);
    maxK = 2;
    minKQuiet = 2;
  }
  return {
    idx,
    tag: `[chaos ${SEED}/${idx}]`,
    user,
    session,
    scenario,
    face,
    action,
    k: rng.int(Math.max(minK, minKQuiet), maxK),
    pauseMs: rng.int(200, 1500),
    leaveAfterMs: rng.int(0, 40),
    cancelVia: rng.pick(["connect", "http"] as const),
    cancelWhileAway: rng.chance(0.3),
    attachFace: rng.pick(["sse", "connect", "connect-json", "grpc", "grpc-web"] as const),
    cursorFrac: rng.next(),
    lastEventIdHeader: rng.chance(0.5),
    attachLeaveAfter: rng.chance(0.35) ? rng.int(1, 5) : 0,
    secondAttachFace: rng.pick(["sse", "connect", "connect-json", "grpc", "grpc-web"] as const),
    pauseBeforeLeave: rng.chance(0.4),
    deadlineMs: face !== "sse" && action === "read" && rng.chance(0.3) ? rng.int(50, 2500) : 0,
    jitterMs: rng.int(0, 80),
  };
}

function promptOf(p: Plan): string {
  return p.scenario === "quick" ? `hello ${p.tag}` : `#scenario=${p.scenario} ${p.tag}`;
}

/** One journal entry as a caller saw it, the same on every face. */
interface Seen {
  seq: number;
  type: string;
  /** What identifies its content: a digest of the line, the queue position, the exit reason. */
  print: string;
  runId: string | null;
}

const digest = (s: string) => createHash("sha1").update(s).digest("base64");
const reasonName = (r: ExitReason) => (ExitReason[r] ?? String(r)).toLowerCase();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function fromProto(ev: RunEvent): Seen {
  const base = { seq: Number(ev.seq), runId: ev.runId };
  const e = ev.event;
  switch (e.case) {
    case "queued":
      return { ...base, type: "queued", print: `${e.value.position}/${e.value.queueSize}` };
    case "meta":
      return { ...base, type: "meta", print: e.value.sessionId };
    case "agent":
      return { ...base, type: "agent", print: digest(e.value.raw) };
    case "log":
      return { ...base, type: "log", print: digest(e.value.text) };
    case "exit":
      return { ...base, type: "exit", print: reasonName(e.value.reason) };
    default:
      return { ...base, type: `unknown:${String(e.case)}`, print: "" };
  }
}

/**
 * An SSE stream as `Seen` entries. `queued` journal entries are `: queued N/M`
 * comments without an id: each takes the next seq, so a queued caller's
 * frames still count from 1 (and a lost or extra comment shows as a gap).
 */
async function* sseSeen(body: ReadableStream<Uint8Array>, after: number): AsyncGenerator<Seen> {
  const comments: string[] = [];
  let last = after;
  function* queued(): Generator<Seen> {
    for (const c of comments.splice(0)) {
      const m = /^queued (\d+\/\d+)$/.exec(c);
      if (m?.[1]) yield { seq: ++last, type: "queued", print: m[1], runId: null };
    }
  }
  for await (const f of parseSse(body, (c) => comments.push(c))) {
    yield* queued();
    // A frame without an id (a failure's exit) is not one of the run's events: NaN breaks the count.
    last = f.id === null ? Number.NaN : Number(f.id);
    const data = (): Record<string, unknown> => JSON.parse(f.data);
    switch (f.event) {
      case "meta":
        yield {
          seq: last,
          type: "meta",
          print: String(data().session_id),
          runId: String(data().run_id),
        };
        break;
      case "agent":
        yield { seq: last, type: "agent", print: digest(f.data), runId: null };
        break;
      case "log":
        yield { seq: last, type: "log", print: digest(String(data().text)), runId: null };
        break;
      case "runner.exit": {
        const d = data();
        yield { seq: last, type: "exit", print: String(d.reason), runId: String(d.run_id) };
        break;
      }
      default:
        yield { seq: last, type: `unknown:${f.event}`, print: f.data, runId: null };
    }
  }
  yield* queued();
}

/** Reads a stream step by step, keeping what it saw and how it ended. */
class Reader {
  readonly seen: Seen[] = [];
  /** The stream ended by itself (not by the caller leaving). */
  ended = false;
  error: string | null = null;

  constructor(private readonly it: AsyncIterator<Seen>) {}

  get done(): boolean {
    return this.ended || this.error !== null;
  }

  get nonQueued(): number {
    return this.seen.filter((s) => s.type !== "queued").length;
  }

  get runId(): string | null {
    return this.seen.find((s) => s.runId !== null)?.runId ?? null;
  }

  get lastSeq(): number {
    return this.seen.at(-1)?.seq ?? 0;
  }

  async step(): Promise<void> {
    try {
      const n = await this.it.next();
      if (n.done) this.ended = true;
      else this.seen.push(n.value);
    } catch (err) {
      this.error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    }
  }

  async readUntil(k: number): Promise<void> {
    while (!this.done && this.nonQueued < k) await this.step();
  }

  async drain(): Promise<void> {
    while (!this.done) await this.step();
  }

  /** The caller leaves: release the iterator (its request was aborted just before). */
  async close(): Promise<void> {
    await this.it.return?.().catch(() => undefined);
  }
}

interface Outcome {
  plan: Plan;
  /** Answered with an error status or code before any event. */
  refused: { status: number | string; detail: string } | null;
  caller: Reader | null;
  /** The caller went away before its stream ended. */
  left: boolean;
  /** When it went (Date.now(), the server's clock too). */
  leftAt: number;
  cancelIssued: boolean;
  cancelResult: { status: string; reason: string } | null;
  attaches: { cursor: number; reader: Reader | null; noContent: boolean; left: boolean }[];
  problems: string[];
}

describe("chaos: random callers over every face", () => {
  let server: GatedTestServer | undefined;
  let h2: Http2SessionManager | undefined;
  /** Every run the test made: whatever of them a failure left alive is killed after it. */
  const runIds = new Set<string>();
  afterEach(async () => {
    h2?.abort();
    try {
      await server?.stop();
    } finally {
      server = undefined;
      for (const { pid } of processesWithRunIds(runIds)) killQuietly(pid);
    }
  });

  it(`leaks nothing and loses no event (CHAOS_SEED=${SEED}, CHAOS_RUNS=${RUNS})`, async () => {
    server = await startGatedTestServer({
      FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "5",
      FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS: "2",
      FERMILINK_RUNNER_MAX_QUEUE_SIZE: "8",
      FERMILINK_RUNNER_MAX_PENDING_PER_USER: "3",
      // A quick run prints nothing until it ends: its node start must fit the idle limit even on a
      // loaded 2-core box (at 3 s, an escapee-daemon run once ended `timeout` under load).
      FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "8",
      FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS: "5",
      FERMILINK_RUNNER_KILL_GRACE_SECONDS: "1",
      FERMILINK_RUNNER_ORPHAN_SWEEP_SECONDS: "0.5",
    });
    const s = server;
    const { app, baseUrl } = s;
    // No keep-alive on the HTTP/1.1 transports, and an h2 session closed at the end: the fd
    // count then comes back to its baseline without waiting for client pools to time out.
    const agent = new http.Agent({ keepAlive: false });
    h2 = new Http2SessionManager(baseUrl, { idleConnectionTimeoutMs: 500 });
    const clients: Record<ConnectFace, Client<typeof RunService>> = {
      connect: createClient(
        RunService,
        createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } }),
      ),
      "connect-json": createClient(
        RunService,
        createConnectTransport({
          baseUrl,
          httpVersion: "1.1",
          useBinaryFormat: false,
          nodeOptions: { agent },
        }),
      ),
      grpc: createClient(RunService, createGrpcTransport({ baseUrl, sessionManager: h2 })),
      "grpc-web": createClient(
        RunService,
        createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } }),
      ),
    };
    const userHeaders = (user: string | null): Record<string, string> =>
      user === null ? {} : { "x-fermilink-user-id": user };

    type Opened =
      | { refused: { status: number | string; detail: string } }
      | { events: AsyncIterator<Seen> };

    async function openRun(p: Plan, signal: AbortSignal): Promise<Opened> {
      const body = {
        user_prompt: promptOf(p),
        ...(p.user === null ? {} : { user_id: p.user }),
        ...(p.session === null ? {} : { session_id: p.session }),
        ...(p.action === "detach-leave-attach" ? { detach: true } : {}),
      };
      if (p.face === "sse") {
        const res = await fetch(`${baseUrl}/run`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
          signal,
        });
        if (!(res.headers.get("content-type") ?? "").startsWith("text/event-stream") || !res.body)
          return { refused: { status: res.status, detail: await res.text() } };
        return { events: sseSeen(res.body, 0)[Symbol.asyncIterator]() };
      }
      const it = clients[p.face]
        .run(
          {
            userPrompt: body.user_prompt,
            userId: p.user ?? "",
            sessionId: p.session ?? "",
            detach: p.action === "detach-leave-attach",
          },
          { signal, ...(p.deadlineMs > 0 ? { timeoutMs: p.deadlineMs } : {}) },
        )
        [Symbol.asyncIterator]();
      let first: IteratorResult<RunEvent>;
      try {
        first = await it.next();
      } catch (err) {
        const ce = ConnectError.from(err);
        // The caller's own deadline before the first event: it left, as with an abort.
        if (signal.aborted || ce.code === Code.DeadlineExceeded) throw err;
        return { refused: { status: Code[ce.code] ?? String(ce.code), detail: ce.rawMessage } };
      }
      async function* rest(): AsyncGenerator<Seen> {
        try {
          if (first.done) return;
          yield fromProto(first.value);
          for (;;) {
            const n = await it.next();
            if (n.done) return;
            yield fromProto(n.value);
          }
        } finally {
          await it.return?.().catch(() => undefined);
        }
      }
      return { events: rest() };
    }

    async function cancelRun(
      via: "connect" | "http",
      runId: string,
      user: string | null,
    ): Promise<{ status: string; reason: string }> {
      if (via === "connect") {
        const info = await clients.connect.cancel({ runId, userId: user ?? "" });
        return {
          status: (RunStatus[info.status] ?? "").toLowerCase().replace(/^run_status_/, ""),
          reason: reasonName(info.exitReason),
        };
      }
      const res = await fetch(`${baseUrl}/runs/${runId}/cancel`, {
        method: "POST",
        headers: userHeaders(user),
      });
      const json = (await res.json()) as Record<string, unknown>;
      if (res.status !== 200)
        throw new Error(`cancel answered ${res.status}: ${JSON.stringify(json)}`);
      return { status: String(json.status), reason: String(json.exit_reason) };
    }

    async function openAttach(
      face: Face,
      runId: string,
      cursor: number,
      user: string | null,
      lastEventId: boolean,
      signal: AbortSignal,
    ): Promise<{ reader: Reader | null; noContent: boolean }> {
      if (face === "sse") {
        const useHeader = lastEventId && cursor > 0;
        const res = await fetch(
          `${baseUrl}/runs/${runId}/events${useHeader ? "" : `?after=${cursor}`}`,
          {
            headers: {
              ...userHeaders(user),
              ...(useHeader ? { "last-event-id": String(cursor) } : {}),
            },
            signal,
          },
        );
        if (res.status === 204) return { reader: null, noContent: true };
        if (res.status !== 200 || !res.body)
          throw new Error(`attach answered ${res.status}: ${await res.text()}`);
        return {
          reader: new Reader(sseSeen(res.body, cursor)[Symbol.asyncIterator]()),
          noContent: false,
        };
      }
      const stream = clients[face].attach(
        { runId, afterSeq: BigInt(cursor), userId: user ?? "" },
        { signal },
      );
      async function* seen(): AsyncGenerator<Seen> {
        for await (const ev of stream) yield fromProto(ev);
      }
      return { reader: new Reader(seen()), noContent: false };
    }

    const isDeadline = (err: unknown) => ConnectError.from(err).code === Code.DeadlineExceeded;

    /**
     * A viewer that left a live run stops waiting on its journal at once (it holds
     * nothing while the run goes on); only viewers of this caller follow the run.
     */
    async function viewersGone(runId: string, why: string, o: Outcome): Promise<void> {
      // Well under the idle timeout: a quiet run is still live when a stuck viewer is reported.
      const deadline = Date.now() + 2500;
      while (app.pipeline.viewersWaiting(runId) > 0) {
        if (Date.now() > deadline) {
          o.problems.push(`${why}, yet ${app.pipeline.viewersWaiting(runId)} viewers still wait`);
          return;
        }
        await sleep(20);
      }
    }

    async function runCaller(p: Plan): Promise<Outcome> {
      const o: Outcome = {
        plan: p,
        refused: null,
        caller: null,
        left: false,
        leftAt: 0,
        cancelIssued: false,
        cancelResult: null,
        attaches: [],
        problems: [],
      };
      await sleep(p.jitterMs);
      const ac = new AbortController();
      const leaveTimer =
        p.action === "abort-before-first"
          ? setTimeout(() => ac.abort(), p.leaveAfterMs)
          : undefined;
      let opened: Opened;
      try {
        opened = await openRun(p, ac.signal);
      } catch (err) {
        clearTimeout(leaveTimer);
        if (ac.signal.aborted || (p.deadlineMs > 0 && isDeadline(err))) {
          o.left = true;
          o.leftAt = Date.now();
        } else o.problems.push(`request failed: ${String(err)}`);
        return o;
      }
      if ("refused" in opened) {
        clearTimeout(leaveTimer);
        o.refused = opened.refused;
        return o;
      }
      const r = new Reader(opened.events);
      o.caller = r;
      const cancel = async (runId: string) => {
        o.cancelIssued = true;
        try {
          o.cancelResult = await cancelRun(p.cancelVia, runId, p.user);
        } catch (err) {
          o.problems.push(`cancel failed: ${String(err)}`);
        }
      };
      switch (p.action) {
        case "abort-before-first":
          // The caller goes without looking at a single event.
          if (!ac.signal.aborted)
            await new Promise((res) => ac.signal.addEventListener("abort", res));
          break;
        case "read":
          await r.drain();
          break;
        case "pause-then-read":
          await r.readUntil(p.k);
          await sleep(p.pauseMs);
          await r.drain();
          break;
        case "abort-after-k":
          await r.readUntil(p.k);
          if (p.pauseBeforeLeave) await sleep(p.pauseMs);
          break;
        case "detach-leave-attach":
          await r.readUntil(p.k);
          break;
        case "cancel-after-k": {
          if (p.k === 0 && !r.done) await r.step();
          else await r.readUntil(p.k);
          const runId = r.runId;
          if (runId === null) o.problems.push("no run id to cancel");
          else await Promise.all([cancel(runId), r.drain()]);
          break;
        }
      }
      if (!r.done) {
        ac.abort();
        o.left = true;
        o.leftAt = Date.now();
        await r.close();
      }
      if (r.runId !== null) runIds.add(r.runId);
      if (r.error !== null && p.deadlineMs > 0 && r.error.includes("deadline")) {
        o.left = true;
        o.leftAt = Date.now();
      }
      if (r.error !== null && !o.left) o.problems.push(`stream failed: ${r.error}`);
      if (p.action === "detach-leave-attach") {
        const runId = r.runId;
        if (runId === null) {
          o.problems.push("detached caller never learned its run id");
          return o;
        }
        if (o.left) await viewersGone(runId, "the detached caller left", o);
        if (o.left && p.cancelWhileAway) await cancel(runId);
        await sleep(p.pauseMs);
        let cursor = Math.floor(p.cursorFrac * (r.lastSeq + 1));
        const legs = [
          { face: p.attachFace, leaveAfter: p.attachLeaveAfter },
          ...(p.attachLeaveAfter > 0 ? [{ face: p.secondAttachFace, leaveAfter: 0 }] : []),
        ];
        for (const leg of legs) {
          const leave = new AbortController();
          try {
            const a = await openAttach(
              leg.face,
              runId,
              cursor,
              p.user,
              p.lastEventIdHeader,
              leave.signal,
            );
            const entry = { cursor, ...a, left: false };
            o.attaches.push(entry);
            if (a.reader && leg.leaveAfter > 0) {
              while (!a.reader.done && a.reader.seen.length < leg.leaveAfter) await a.reader.step();
              if (!a.reader.done) {
                leave.abort();
                entry.left = true;
                await a.reader.close();
                await viewersGone(runId, `a viewer from ${cursor} left`, o);
              }
            } else await a.reader?.drain();
            if (a.reader?.error && !entry.left) o.problems.push(`attach failed: ${a.reader.error}`);
            // An EventSource resumes after the last id it got.
            cursor = a.reader?.lastSeq || cursor;
          } catch (err) {
            o.problems.push(`attach from ${cursor} failed: ${String(err)}`);
          }
        }
      }
      return o;
    }

    /** Stored runs of every caller identity, newest first. */
    const storedRuns = (users: readonly (string | null)[]): RunRecord[] =>
      users.flatMap((u) =>
        app.pipeline.listRuns({
          viewer: { userId: u },
          sessionId: null,
          limit: 10_000,
          after: null,
        }),
      );

    /** Poll `check` until it holds; `state` says what was left when it never does. */
    async function settle(what: string, check: () => boolean, state: () => unknown): Promise<void> {
      const deadline = Date.now() + SETTLE_MS;
      while (!check()) {
        if (Date.now() > deadline)
          throw new Error(`CHAOS_SEED=${SEED}: ${what} did not settle: ${JSON.stringify(state())}`);
        await sleep(50);
      }
    }
    const admissionState = () => ({
      liveRuns: app.pipeline.liveRuns,
      active: app.admission.activeTotal,
      pending: app.admission.pendingTotal,
    });

    const fdCount = () => readdirSync("/proc/self/fd").length;

    // Warm-up over each transport family, so pools and lazy state exist before the baseline.
    const warm: Plan = { ...makePlan(new Prng(SEED), -1), user: "warm", session: "chaos-warm" };
    for (const face of ["sse", "connect", "grpc"] as const) {
      const o = await runCaller({ ...warm, face, scenario: "quick", action: "read", jitterMs: 0 });
      expect(o.problems, `seed ${SEED}: warm-up over ${face}`).toEqual([]);
    }
    await settle("warm-up", () => app.pipeline.liveRuns === 0, admissionState);
    const fdBaseline = fdCount();

    const rng = new Prng(SEED);
    const plans = Array.from({ length: RUNS }, (_, i) => makePlan(rng, i));
    const outcomes: Outcome[] = [];
    let next = 0;
    const worker = async () => {
      while (next < plans.length) {
        const p = plans[next++] as Plan;
        // Half-way, gated runs may go on: some `gate` runs complete, earlier ones time out idle.
        if (next === Math.floor(plans.length / 2)) void s.openGate();
        const o = await runCaller(p);
        outcomes.push(o);
        // A refused caller backs off a little, as a client would: refusals stay a part of the
        // mix instead of using up the plans in a burst.
        if (o.refused) await sleep(250);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));

    // Settling: every run ended and released its slot, every process of every run is gone.
    await settle(
      "runs and admission",
      () =>
        app.pipeline.liveRuns === 0 &&
        app.admission.activeTotal === 0 &&
        app.admission.pendingTotal === 0,
      admissionState,
    );
    const users = [null, "warm", "u0", "u1", "u2", "u3"];
    const records = storedRuns(users);
    for (const r of records) runIds.add(r.runId);
    let leftovers: { pid: number; runId: string }[] = [];
    await settle(
      "provider processes",
      () => {
        leftovers = processesWithRunIds(runIds);
        return leftovers.length === 0;
      },
      () => leftovers,
    ).catch(() => undefined);

    const problems: string[] = [];
    if (leftovers.length > 0)
      problems.push(`processes outlived their runs: ${JSON.stringify(leftovers)}`);
    for (const id of runIds) {
      if (app.pipeline.viewersWaiting(id) !== 0)
        problems.push(`run ${id} still has waiting viewers`);
    }

    const byTag = new Map<string, RunRecord[]>();
    for (const r of records) {
      const tag = /\[chaos -?\d+\/-?\d+\]/.exec(r.promptPreview)?.[0] ?? "?";
      byTag.set(tag, [...(byTag.get(tag) ?? []), r]);
    }

    /** The run's whole journal, read back from 0 over Connect. */
    async function replay(record: RunRecord): Promise<Seen[]> {
      const out: Seen[] = [];
      for await (const ev of clients.connect.attach({
        runId: record.runId,
        afterSeq: 0n,
        userId: record.userId ?? "",
      }))
        out.push(fromProto(ev));
      return out;
    }

    /** Contiguous seqs from `after + 1`, one run id, at most one exit and only last; `complete`: ends with it. */
    function checkStream(
      seen: readonly Seen[],
      after: number,
      complete: boolean,
      runId: string | null,
    ): string[] {
      const out: string[] = [];
      seen.forEach((e, i) => {
        if (e.seq !== after + 1 + i) out.push(`seq ${e.seq} at position ${i} (after ${after})`);
        if (e.runId !== null && runId !== null && e.runId !== runId)
          out.push(`event of run ${e.runId}`);
      });
      const exits = seen.filter((e) => e.type === "exit").length;
      if (exits > 1) out.push(`${exits} exit events`);
      if (exits === 1 && seen.at(-1)?.type !== "exit") out.push("exit is not the last event");
      if (complete && seen.at(-1)?.type !== "exit") out.push("stream ended without an exit event");
      return out.slice(0, 5);
    }

    function sameAsJournal(
      seen: readonly Seen[],
      journal: readonly Seen[],
      what: string,
    ): string[] {
      const out: string[] = [];
      for (const e of seen) {
        const j = journal[e.seq - 1];
        if (!j || j.type !== e.type || j.print !== e.print)
          out.push(
            `${what} seq ${e.seq} was ${e.type}(${e.print}), the journal has ${j?.type}(${j?.print})`,
          );
      }
      return out.slice(0, 5);
    }

    for (const o of outcomes.sort((a, b) => a.plan.idx - b.plan.idx)) {
      const p = o.plan;
      const where = `#${p.idx} ${p.face}/${p.action}/${p.scenario} user=${p.user} k=${p.k}`;
      const say = (m: string) => problems.push(`${where}: ${m}`);
      o.problems.forEach(say);
      const stored = byTag.get(p.tag) ?? [];
      if (stored.length > 1) say(`${stored.length} stored runs for one request`);
      const record = stored[0];
      if (o.refused) {
        const documented =
          p.face === "sse" ? o.refused.status === 429 : o.refused.status === "ResourceExhausted";
        if (!documented) say(`refused with ${o.refused.status}: ${o.refused.detail}`);
        if (record) say(`refused, yet run ${record.runId} was stored`);
        continue;
      }
      const callerRunId = o.caller?.runId ?? null;
      if (callerRunId !== null && record?.runId !== callerRunId)
        say(`got run ${callerRunId}, stored ${record?.runId ?? "nothing"}`);
      if (!record) {
        if (!o.left) say("no stored run for a caller that stayed");
        continue;
      }
      if (record.status !== "finished") say(`stored as ${record.status}`);
      const reason = record.exitReason ?? "none";
      const allowed = new Set<string>(SCENARIOS[p.scenario]?.natural ?? []);
      if (o.left && p.action !== "detach-leave-attach") allowed.add("client_gone");
      if (o.cancelIssued) allowed.add("cancelled");
      if (!allowed.has(reason)) say(`ended ${reason}, expected one of ${[...allowed].join(", ")}`);
      // A departed caller's run may end otherwise only if that end was decided before the server
      // saw the departure: its exit (a kill grace later at most) cannot come long after it.
      const endedAfterLeaving = (record.endedAtMs ?? 0) - o.leftAt;
      if (
        o.left &&
        p.action !== "detach-leave-attach" &&
        reason !== "client_gone" &&
        endedAfterLeaving > LEFT_CALLER_SLACK_MS
      )
        say(`ended ${reason} ${endedAfterLeaving} ms after its caller left`);
      if (o.cancelResult) {
        if (o.cancelResult.status !== "finished")
          say(`cancel answered a run ${o.cancelResult.status}`);
        if (o.cancelResult.reason !== reason)
          say(`cancel said ${o.cancelResult.reason}, stored ${reason}`);
      }

      const journal = await replay(record);
      for (const m of checkStream(journal, 0, true, record.runId)) say(`replay: ${m}`);
      if ((journal.at(-1)?.seq ?? 0) !== record.lastSeq)
        say(`replay ends at ${journal.at(-1)?.seq}, stored lastSeq ${record.lastSeq}`);
      if (journal.at(-1)?.print !== reason)
        say(`replay exit ${journal.at(-1)?.print}, stored ${reason}`);

      const r = o.caller;
      if (r) {
        const complete = !o.left;
        for (const m of checkStream(r.seen, 0, complete, record.runId)) say(`caller: ${m}`);
        for (const m of sameAsJournal(r.seen, journal, "caller")) say(m);
      }
      for (const { cursor, reader, noContent, left } of o.attaches) {
        if (noContent || (reader && reader.seen.length === 0 && !left)) {
          if (cursor !== record.lastSeq)
            say(`attach from ${cursor} got nothing; the run has ${record.lastSeq}`);
        } else if (reader) {
          for (const m of checkStream(reader.seen, cursor, !left, record.runId))
            say(`attach from ${cursor}: ${m}`);
          for (const m of sameAsJournal(reader.seen, journal, `attach from ${cursor}`)) say(m);
        }
      }
    }
    for (const [tag, rs] of byTag) {
      if (!outcomes.some((o) => o.plan.tag === tag) && !tag.endsWith("/-1]"))
        problems.push(`stored runs nobody asked for: ${rs.map((r) => r.runId).join(", ")}`);
    }

    // Every run that produced an event was counted as ended exactly once, with its stored reason.
    // So was an admitted run whose caller left before its first event (client_gone), which is
    // stored nowhere: at most one such run per caller that left and has no stored run.
    const metrics = await (await fetch(`http://127.0.0.1:${app.metricsPort}/metrics`)).text();
    const endedBy = new Map<string, number>();
    for (const m of metrics.matchAll(
      /^fermilink_runner_runs_ended_total\{provider="\w+",reason="(\w+)"\} (\d+)$/gm,
    ))
      endedBy.set(m[1] as string, (endedBy.get(m[1] as string) ?? 0) + Number(m[2]));
    const storedBy = new Map<string, number>();
    for (const r of records) {
      const reason = r.exitReason ?? "none";
      storedBy.set(reason, (storedBy.get(reason) ?? 0) + 1);
    }
    const leftUnstored = outcomes.filter(
      (o) => o.left && !o.refused && !byTag.has(o.plan.tag),
    ).length;
    for (const reason of new Set([...endedBy.keys(), ...storedBy.keys()])) {
      const ended = endedBy.get(reason) ?? 0;
      const stored = storedBy.get(reason) ?? 0;
      const unstored = reason === "client_gone" ? leftUnstored : 0;
      if (ended < stored || ended > stored + unstored)
        problems.push(
          `runs_ended_total{reason="${reason}"} ${ended}, stored runs ${stored}` +
            ` (and ${unstored} callers that left with no stored run)`,
        );
    }

    // Nothing held open: no connection on the server, no fd beyond the baseline's pools.
    h2.abort();
    let fds = fdCount();
    await settle(
      "connections and file descriptors",
      () => {
        fds = fdCount();
        return app.connectionCount === 0 && fds <= fdBaseline + 4;
      },
      () => fds,
    ).catch(() =>
      problems.push(`fds ${fds} (baseline ${fdBaseline}), connections ${app.connectionCount}`),
    );

    const summary = {
      refused: outcomes.filter((o) => o.refused).length,
      left: outcomes.filter((o) => o.left).length,
      attachCursors: outcomes.flatMap((o) => o.attaches.map((a) => a.cursor)),
      reasons: records.reduce<Record<string, number>>((acc, r) => {
        const k = r.exitReason ?? "none";
        acc[k] = (acc[k] ?? 0) + 1;
        return acc;
      }, {}),
    };
    console.log(`chaos seed ${SEED}: ${JSON.stringify(summary)}`);
    expect(problems, `CHAOS_SEED=${SEED} CHAOS_RUNS=${RUNS}`).toEqual([]);
    expect(outcomes.length).toBe(RUNS);
  }, 120_000);
});
