import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  ExitReason,
  type RunEvent,
  RunService,
  RunStatus,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import { recoverInterruptedRuns } from "../../src/journal/recover-interrupted.js";
import { SqliteRunStore } from "../../src/journal/sqlite-run-store.js";
import { collect } from "../helpers/collect.js";
import { isAlive, waitUntilGone } from "../helpers/process-census.js";
import { parseSse, type SseEvent, startSseRun } from "../helpers/sse-client.js";
import { startGatedTestServer, startTestServer, type TestServer } from "../helpers/start-server.js";
import { until } from "../helpers/until.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** A server whose fake agent blocks at `waitForEnvFile` steps until the test opens the gate. */
async function gatedServer(env: Record<string, string> = {}) {
  const s = await startGatedTestServer(env);
  server = s;
  return { s, openGate: s.openGate };
}

/** A ListRuns page token's position and listing. */
const tokenParts = (token: string) =>
  JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as [number, string, string];
/** The listing a page token named before it was keyed: SHA-256 of the filter, 16 characters. */
const unkeyedListing = (user: string, session: string | null) =>
  createHash("sha256")
    .update(JSON.stringify([user, session]))
    .digest("base64url")
    .slice(0, 16);

const seqs = (events: RunEvent[]) => events.map((e) => Number(e.seq));
const exitOf = (events: RunEvent[]) => {
  const last = events.at(-1)?.event;
  return last?.case === "exit" ? last.value : undefined;
};

async function providerPid(s: TestServer, session: string): Promise<number> {
  const file = path.join(s.workspacesRoot, session, "repo", ".fake-agent", "invocation.json");
  await until(() => existsSync(file), "the provider's invocation record");
  return (JSON.parse(await readFile(file, "utf8")) as { pid: number }).pid;
}

describe("viewers that leave", () => {
  it("stop following a quiet live run at once, on SSE, gRPC and the Connect protocol (binary and JSON)", async () => {
    const { s, openGate } = await gatedServer();
    const { runId, rest: callerEvents } = await startSseRun(s.baseUrl, {
      session_id: "quiet",
      user_prompt: "#scenario=gate",
    });
    const pending = callerEvents.next();
    const waiting = () => s.app.pipeline.viewersWaiting(runId);
    const until = async (n: number) => {
      for (let i = 0; i < 200 && waiting() !== n; i++) await new Promise((r) => setTimeout(r, 10));
      expect(waiting()).toBe(n);
    };
    await until(1);
    // Four viewers attach to the quiet run, then leave without a word.
    const gone = new AbortController();
    const sse = await fetch(`${s.baseUrl}/runs/${runId}/events`, { signal: gone.signal });
    const sseRead = sse.body
      ?.getReader()
      .read()
      .catch(() => null);
    const viewers = [
      createGrpcTransport({ baseUrl: s.baseUrl }),
      createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" }),
      // JSON takes connect-node's handler, not the direct path.
      createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
    ].map((t) =>
      collect(createClient(RunService, t).attach({ runId }, { signal: gone.signal })).catch(
        () => [],
      ),
    );
    await until(5);
    gone.abort();
    await Promise.all([sseRead, ...viewers]);
    // Dropped at once, while the run is still quiet: only the run's own caller waits.
    await until(1);
    await openGate();
    for (let n = await pending; !n.done; n = await callerEvents.next());
  });
});

describe("detach and Attach (Connect)", () => {
  it("keeps a detached run going after its caller leaves; Attach replays from 0 and from the middle", async () => {
    const { s, openGate } = await gatedServer();
    const client = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    const caller = new AbortController();
    let runId = "";
    const seen: RunEvent[] = [];
    for await (const ev of client.run(
      {
        sessionId: "det",
        userPrompt: "#scenario=gated-lines detached",
        detach: true,
        userId: "Ann",
      },
      { signal: caller.signal },
    )) {
      runId = ev.runId;
      seen.push(ev);
      if (seen.length === 10) break; // leaving the stream early, as a closed laptop would
    }
    caller.abort();
    const pid = await providerPid(s, "det");
    await new Promise((r) => setTimeout(r, 200));
    expect(isAlive(pid)).toBe(true);
    expect(s.app.pipeline.liveRuns).toBe(1);
    const info = await client.getRun({ runId, userId: " ann " });
    expect(info.status).toBe(RunStatus.RUNNING);
    expect(info.detached).toBe(true);

    // A live Attach from 0 gets what the caller saw, then follows live events to the exit.
    const attached = collect(client.attach({ runId, afterSeq: 0n, userId: "ANN" }));
    await new Promise((r) => setTimeout(r, 100));
    // A cursor past anything the live run sent names no event of it: refused, not followed.
    await expect(
      collect(client.attach({ runId, afterSeq: 1000n, userId: "ann" })),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    await openGate();
    const all = await attached;
    expect(seqs(all)).toEqual(all.map((_, i) => i + 1));
    expect(all.slice(0, 10).map((e) => e.event)).toEqual(seen.map((e) => e.event));
    expect(exitOf(all)?.reason).toBe(ExitReason.COMPLETED);
    expect(all.filter((e) => e.event.case === "agent").length).toBe(82);

    // From the middle of a finished run: exactly the rest.
    const middle = await collect(client.attach({ runId, afterSeq: 37n, userId: "ann" }));
    expect(seqs(middle)).toEqual(seqs(all).slice(37));
    expect(middle.map((e) => e.event)).toEqual(all.slice(37).map((e) => e.event));
    // At its end: nothing more; past it: refused, saying which cursor.
    expect(
      await collect(client.attach({ runId, afterSeq: BigInt(all.length), userId: "ann" })),
    ).toEqual([]);
    await expect(
      collect(client.attach({ runId, afterSeq: BigInt(all.length + 1), userId: "ann" })),
    ).rejects.toMatchObject({
      code: Code.InvalidArgument,
      rawMessage: expect.stringContaining(`after_seq ${all.length + 1} is past the last event`),
    });
    // uint64's largest, quoted as sent (a float made it 18446744073709552000).
    const huge = 2n ** 64n - 1n;
    await expect(
      collect(client.attach({ runId, afterSeq: huge, userId: "ann" })),
    ).rejects.toMatchObject({
      code: Code.InvalidArgument,
      rawMessage: expect.stringContaining(`after_seq ${huge} is past the last event`),
    });
    const done = await client.getRun({ runId, userId: "ann" });
    expect(done.status).toBe(RunStatus.FINISHED);
    expect(done.exitReason).toBe(ExitReason.COMPLETED);
    // The record carries the exit event's verdict (this scenario prints no final result: failed).
    expect(done.succeeded).toBe(exitOf(all)?.succeeded);
    expect(done.succeeded).toBe(false);
    expect(Number(done.lastSeq)).toBe(all.length);
  });

  it("ends a run that was not detached when its caller leaves", async () => {
    const { s } = await gatedServer();
    const client = createClient(
      RunService,
      createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" }),
    );
    const caller = new AbortController();
    let runId = "";
    for await (const ev of client.run(
      { sessionId: "nd", userPrompt: "#scenario=gated-lines" },
      { signal: caller.signal },
    )) {
      runId = ev.runId;
      break;
    }
    caller.abort();
    await until(() => s.app.pipeline.liveRuns === 0, "the run to end");
    const info = await client.getRun({ runId });
    expect(info.exitReason).toBe(ExitReason.CLIENT_GONE);
  });
});

/** The app's own store, refusing every write while `refuse.on` (a full disk). */
function refusingWrites(s: TestServer): { store: SqliteRunStore; refuse: { on: boolean } } {
  const store = (s.app.pipeline as unknown as { deps: { store: SqliteRunStore } }).deps.store;
  const realAppend = store.appendEvents.bind(store);
  const refuse = { on: false };
  store.appendEvents = (runId, events) => {
    if (refuse.on) throw new Error("SQLITE_FULL: database or disk is full");
    realAppend(runId, events);
  };
  return { store, refuse };
}

describe("a run store that refuses writes", () => {
  it("ends the run with an exit of reason error saying the store could not be written, and loses no event", async () => {
    const s = await startTestServer();
    server = s;
    const { refuse } = refusingWrites(s);
    const client = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    const events: RunEvent[] = [];
    // A tick every 200 ms for a minute: only the store's failure ends it early.
    for await (const ev of client.run({ sessionId: "full", userPrompt: "#scenario=slow" })) {
      events.push(ev);
      if (ev.event.case === "agent") refuse.on = true;
    }
    const runId = events[0]?.runId ?? "";
    const exit = exitOf(events);
    expect(exit?.reason).toBe(ExitReason.ERROR);
    expect(exit?.message).toMatch(/run store could not be written \(SQLITE_FULL/);
    expect(seqs(events)).toEqual(events.map((_, i) => i + 1));
    await until(() => s.app.pipeline.liveRuns === 0, "the run to end");
    // The store takes writes again: the journal's retry writes what it kept, exit included.
    refuse.on = false;
    await until(
      async () => (await client.getRun({ runId })).status === RunStatus.FINISHED,
      "the kept events to be written",
    );
    const info = await client.getRun({ runId });
    expect(info.exitReason).toBe(ExitReason.ERROR);
    expect(Number(info.lastSeq)).toBe(events.length);
    const replay = await collect(client.attach({ runId }));
    expect(seqs(replay)).toEqual(seqs(events));
  });
});

describe("a run that ended while the store refused its last writes", () => {
  it("is served from memory until the store takes them: Attach gets every event to the exit, GetRun says finished", async () => {
    const s = await startTestServer();
    server = s;
    const { store, refuse } = refusingWrites(s);
    const client = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    const events: RunEvent[] = [];
    for await (const ev of client.run({ sessionId: "full", userPrompt: "#scenario=slow" })) {
      events.push(ev);
      if (ev.event.case === "agent") refuse.on = true;
    }
    const runId = events[0]?.runId ?? "";
    await until(() => s.app.pipeline.liveRuns === 0, "the run to end");
    // The store still refuses: its events stop short of the exit, its row says running.
    expect(store.getRun(runId)?.status).toBe("running");
    const replay = await collect(client.attach({ runId }));
    expect(seqs(replay)).toEqual(seqs(events));
    expect(exitOf(replay)?.reason).toBe(ExitReason.ERROR);
    const tail = await collect(client.attach({ runId, afterSeq: BigInt(events.length - 1) }));
    expect(seqs(tail)).toEqual([events.length]);
    const info = await client.getRun({ runId });
    expect(info.status).toBe(RunStatus.FINISHED);
    expect(info.exitReason).toBe(ExitReason.ERROR);
    expect(Number(info.lastSeq)).toBe(events.length);
    const listed = await client.listRuns({ sessionId: "full" });
    expect(listed.runs.map((r) => [r.runId, r.status])).toEqual([[runId, RunStatus.FINISHED]]);
    // On SSE, a viewer resuming after its first frame gets the rest (the store's lastSeq would
    // have said there was nothing more: 204); one that saw it all is told so (204).
    const sse = await fetch(`${s.baseUrl}/runs/${runId}/events`, {
      headers: { "last-event-id": "1" },
    });
    expect(sse.status).toBe(200);
    const frames: SseEvent[] = [];
    for await (const f of parseSse(sse.body as ReadableStream<Uint8Array>)) frames.push(f);
    expect(frames.map((f) => Number(f.id))).toEqual(seqs(events).slice(1));
    expect(frames.at(-1)?.event).toBe("runner.exit");
    const sawAll = await fetch(`${s.baseUrl}/runs/${runId}/events`, {
      headers: { "last-event-id": String(events.length) },
    });
    expect(sawAll.status).toBe(204);
    refuse.on = false;
    await until(() => store.getRun(runId)?.status === "finished", "the kept events to be written");
    expect(seqs(await collect(client.attach({ runId })))).toEqual(seqs(events));
  });
});

describe("a run whose first write the store refused", () => {
  it("is listed from memory, as GetRun serves it, and once when the store takes it", async () => {
    const s = await startTestServer();
    server = s;
    const { store, refuse } = refusingWrites(s);
    refuse.on = true;
    const client = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    const events = await collect(
      client.run({ sessionId: "rowless", userPrompt: "#scenario=slow" }),
    );
    const runId = events[0]?.runId ?? "";
    expect(exitOf(events)?.reason).toBe(ExitReason.ERROR);
    await until(() => s.app.pipeline.liveRuns === 0, "the run to end");
    // No row at all: the store refused the run's very first write (its meta, with the row).
    expect(store.getRun(runId)).toBeNull();
    expect((await client.getRun({ runId })).status).toBe(RunStatus.FINISHED);
    const listed = async () =>
      (await client.listRuns({ sessionId: "rowless" })).runs.map((r) => [r.runId, r.status]);
    expect(await listed()).toEqual([[runId, RunStatus.FINISHED]]);
    // Another session's listing and another user's do not show it.
    expect((await client.listRuns({ sessionId: "other" })).runs).toEqual([]);
    expect((await client.listRuns({ userId: "someone-else" })).runs).toEqual([]);
    refuse.on = false;
    await until(() => store.getRun(runId)?.status === "finished", "the kept events to be written");
    expect(await listed()).toEqual([[runId, RunStatus.FINISHED]]);
  });
});

describe("a run whose start the store refused", () => {
  it("never starts its provider; after a crash, recovery says its start was not recorded and none ran", async () => {
    const { s, openGate } = await gatedServer({ FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1" });
    const { store, refuse } = refusingWrites(s);
    const client = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    // The one slot is taken, so the second run waits: its row is written with its queued event.
    const holder = collect(client.run({ sessionId: "holder", userPrompt: "#scenario=gate" }));
    await providerPid(s, "holder");
    const waiting = client
      .run({ sessionId: "refused-start", userPrompt: "#scenario=slow" })
      [Symbol.asyncIterator]();
    const first = await waiting.next();
    const runId = first.done ? "" : first.value.runId;
    await until(() => (store.getRun(runId)?.lastSeq ?? 0) > 0, "the queued event to be stored");
    // From now on the store takes nothing: the holder's next write (once its gate opens) ends
    // it, which lets the waiting run start, and its start (meta) is refused too.
    refuse.on = true;
    await openGate();
    const events: RunEvent[] = first.done ? [] : [first.value];
    for (let n = await waiting.next(); !n.done; n = await waiting.next()) events.push(n.value);
    await holder;
    expect(events.map((e) => e.event.case)).toEqual(["queued", "meta", "exit"]);
    expect(exitOf(events)?.message).toMatch(/run store could not be written/);
    await until(() => s.app.pipeline.liveRuns === 0, "the runs to end");
    // Prepared, but no provider started: the store never took the run's start.
    const repo = path.join(s.workspacesRoot, "refused-start", "repo");
    expect(existsSync(path.join(repo, "projects", "memory.md"))).toBe(true);
    expect(existsSync(path.join(repo, ".fake-agent"))).toBe(false);
    expect(store.getRun(runId)?.status).toBe("queued");
    // The runner dies before the store takes the kept events; the next one recovers the run.
    await s.app.close();
    const after = new SqliteRunStore(path.join(s.home, "runner", "runs.sqlite3"));
    try {
      expect(recoverInterruptedRuns(after, Date.now(), new Set()).has(runId)).toBe(true);
      const rec = after.getRun(runId);
      expect(rec).toMatchObject({ status: "finished", exitReason: "interrupted" });
      expect(rec?.exitMessage).toMatch(
        /before the store recorded this run's start.*; no provider process was started/,
      );
    } finally {
      await after.close();
    }
  });
});

describe("SSE resume with Last-Event-ID", () => {
  async function readFrames(res: Response, max: number, onFrame?: (e: SseEvent) => void) {
    const frames: SseEvent[] = [];
    const ctrl = res.body as ReadableStream<Uint8Array>;
    for await (const ev of parseSse(ctrl)) {
      frames.push(ev);
      onFrame?.(ev);
      if (frames.length >= max) break;
    }
    return frames;
  }

  it("reconnects without losing or repeating a frame, live and from the store, then 204", async () => {
    const { s } = await gatedServer();
    const first = new AbortController();
    const res = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        session_id: "sse",
        user_prompt: "#scenario=lines-5000",
        detach: true,
      }),
      signal: first.signal,
    });
    const head = await readFrames(res, 700);
    first.abort();
    const runId = JSON.parse(head[0]?.data ?? "{}").run_id as string;
    expect(runId).toMatch(/^[0-9a-f-]{36}$/);
    const lastId = head.at(-1)?.id ?? "";

    const again = await fetch(`${s.baseUrl}/runs/${runId}/events?after=3`, {
      headers: { "last-event-id": lastId },
    });
    expect(again.status).toBe(200);
    expect(again.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const tail = await readFrames(again, Number.POSITIVE_INFINITY);
    const ids = [...head, ...tail].map((f) => Number(f.id));
    expect(ids).toEqual(ids.map((_, i) => i + 1));
    expect(tail.at(-1)?.event).toBe("runner.exit");
    expect([...head, ...tail].filter((f) => f.event === "agent")).toHaveLength(5000);
    expect(tail.find((f) => f.event === "log")?.data).toBe('{"text": "done"}');

    // Everything delivered and the run over: 204 tells EventSource to stop reconnecting.
    const over = await fetch(`${s.baseUrl}/runs/${runId}/events`, {
      headers: { "last-event-id": tail.at(-1)?.id ?? "" },
    });
    expect(over.status).toBe(204);
    const replay = await fetch(`${s.baseUrl}/runs/${runId}/events?after=4990`);
    const replayed = await readFrames(replay, Number.POSITIVE_INFINITY);
    expect(replayed.map((f) => Number(f.id))).toEqual(ids.slice(4990));
  });

  it("refuses a cursor past the run's last event, live or ended; one at the end stays open on a live run", async () => {
    const { s, openGate } = await gatedServer();
    const { runId, rest: callerEvents } = await startSseRun(s.baseUrl, {
      session_id: "cursor",
      user_prompt: "#scenario=gate",
    });
    // The run holds at its gate: its last event so far is the agent's first line.
    await until(() => s.app.pipeline.viewersWaiting(runId) === 1, "the caller to wait");
    // Nothing more comes before the gate opens: the stored last seq catches up (one flush) and stays.
    const stored = () => s.app.pipeline.getRun(runId, { userId: null }).lastSeq;
    await until(() => stored() >= 2, "the run's first events to be stored");
    const last = stored();
    const events = (init: RequestInit, query = "") =>
      fetch(`${s.baseUrl}/runs/${runId}/events${query}`, init);
    for (const [init, query, from] of [
      [{ headers: { "last-event-id": String(last + 1) } }, "", "Last-Event-ID"],
      [{}, `?after=${last + 1000}`, "after"],
      [{ method: "HEAD" }, `?after=${last + 1}`, ""],
    ] as const) {
      const res = await events(init, query);
      expect({ query, from, status: res.status }).toEqual({ query, from, status: 422 });
      if (from === "") continue;
      const body = (await res.json()) as { detail: string; code: string };
      expect(body.code).toBe("REQUEST_INVALID");
      expect(body.detail).toContain(`${from} `);
      expect(body.detail).toContain(`(seq ${last})`);
    }
    // Refused before any follow began: only the run's own caller waits.
    expect(s.app.pipeline.viewersWaiting(runId)).toBe(1);
    // At the end of what was sent: a normal resume, held open, given what comes next. Its 200
    // comes at once, while the run is still quiet (not with the first keepalive, 15 s on).
    const atEnd = await Promise.race([
      events({ headers: { "last-event-id": String(last) } }),
      new Promise<null>((r) => setTimeout(() => r(null), 3000)),
    ]);
    if (atEnd === null) throw new Error("no response head within 3 s for a resume at the end");
    expect(atEnd.status).toBe(200);
    await until(() => s.app.pipeline.viewersWaiting(runId) === 2, "the resumed viewer to wait");
    await openGate();
    const frames: SseEvent[] = [];
    for await (const f of parseSse(atEnd.body as ReadableStream<Uint8Array>)) frames.push(f);
    const ids = frames.map((f) => Number(f.id));
    expect(ids[0]).toBe(last + 1);
    expect(ids).toEqual(ids.map((_, i) => last + 1 + i));
    expect(frames.at(-1)?.event).toBe("runner.exit");
    for (let n = await callerEvents.next(); !n.done; n = await callerEvents.next());
    // Ended: the last event's seq is answered 204 (nothing more, ever), one past it 422 as above.
    const exitSeq = ids.at(-1) ?? 0;
    await until(() => s.app.pipeline.liveRuns === 0, "the run to end");
    expect((await events({ headers: { "last-event-id": String(exitSeq) } })).status).toBe(204);
    const past = await events({ headers: { "last-event-id": String(exitSeq + 1) } });
    expect(past.status).toBe(422);
    expect(((await past.json()) as { detail: string }).detail).toContain(`(seq ${exitSeq})`);
  });

  it("reads a blank cursor or page size as none given, as it reads a blank user_id", async () => {
    const { s, openGate } = await gatedServer();
    await openGate();
    const { runId, rest } = await startSseRun(s.baseUrl, {
      session_id: "blank",
      user_prompt: "#scenario=gate",
    });
    for (let n = await rest.next(); !n.done; n = await rest.next());
    await until(() => s.app.pipeline.liveRuns === 0, "the run to end");
    const all = async (query: string, headers: Record<string, string> = {}) => {
      const res = await fetch(`${s.baseUrl}/runs/${runId}/events${query}`, { headers });
      expect({ query, headers, status: res.status }).toEqual({ query, headers, status: 200 });
      const ids: number[] = [];
      for await (const f of parseSse(res.body as ReadableStream<Uint8Array>))
        ids.push(Number(f.id));
      return ids;
    };
    const everything = await all("");
    expect(everything[0]).toBe(1);
    expect(everything.length).toBeGreaterThanOrEqual(3);
    for (const query of ["?after=", "?after=%20", "?after=%09%20"]) {
      expect(await all(query)).toEqual(everything);
    }
    // A blank Last-Event-ID leaves the choice to ?after=.
    expect(await all("?after=%20", { "last-event-id": " " })).toEqual(everything);
    expect(await all("?after=1", { "last-event-id": " " })).toEqual(everything.slice(1));
    for (const query of ["", "?page_size=", "?page_size=%20", "?session_id=%20"]) {
      const list = await fetch(`${s.baseUrl}/runs${query}`);
      expect({ query, status: list.status }).toEqual({ query, status: 200 });
      expect(((await list.json()) as { runs: unknown[] }).runs).toHaveLength(1);
    }
    // Not blank and not a number is still refused.
    expect((await fetch(`${s.baseUrl}/runs/${runId}/events?after=%201x`)).status).toBe(422);
  });

  it("answers bad resume points and unknown runs with clear statuses", async () => {
    const { s } = await gatedServer();
    const bad = await fetch(`${s.baseUrl}/runs/abc/events`, { headers: { "last-event-id": "x1" } });
    expect(bad.status).toBe(422);
    expect(((await bad.json()) as { code: string }).code).toBe("REQUEST_INVALID");
    const missing = await fetch(`${s.baseUrl}/runs/00000000-0000-0000-0000-000000000000/events`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { code: string }).code).toBe("RUN_NOT_FOUND");
    expect((await fetch(`${s.baseUrl}/runs/x/cancel`)).status).toBe(405);
  });
});

describe("Cancel", () => {
  it("cancels a queued and a live run: process group killed, slot released", async () => {
    const { s } = await gatedServer({ FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1" });
    const client = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    const liveStream = client.run({
      sessionId: "live",
      userPrompt: "#scenario=gated-lines",
      detach: true,
      userId: "u",
    });
    const liveIter = liveStream[Symbol.asyncIterator]();
    const liveFirst = (await liveIter.next()).value as RunEvent;
    const pid = await providerPid(s, "live");
    // Its first line: the runner has the provider's start (its pipes) by then, not only the
    // provider itself running (a cancel before the spawn helper's answer is a cancel of a start).
    for (let n = await liveIter.next(); !n.done && n.value.event.case !== "agent"; )
      n = await liveIter.next();

    const queuedIter = client
      .run({ sessionId: "queued", userPrompt: "#scenario=gated-lines", detach: true, userId: "u" })
      [Symbol.asyncIterator]();
    const queuedFirst = (await queuedIter.next()).value as RunEvent;
    expect(queuedFirst.event.case).toBe("queued");

    const q = await client.cancel({ runId: queuedFirst.runId, userId: "u" });
    expect(q.exitReason).toBe(ExitReason.CANCELLED);
    expect(q.succeeded).toBe(false);
    expect(q.status).toBe(RunStatus.FINISHED);
    const queuedRest: RunEvent[] = [];
    for (let n = await queuedIter.next(); !n.done; n = await queuedIter.next())
      queuedRest.push(n.value);
    expect(exitOf(queuedRest)?.reason).toBe(ExitReason.CANCELLED);
    // Nothing was started, so nothing was killed, and the message does not say otherwise.
    expect(exitOf(queuedRest)?.message).toBe(
      "The run was cancelled, before its provider was started.",
    );
    expect(exitOf(queuedRest)?.killedByRunner).toBe(false);
    expect(queuedRest.some((e) => e.event.case === "meta")).toBe(false);

    const l = await client.cancel({ runId: liveFirst.runId, userId: "u" });
    expect(l.exitReason).toBe(ExitReason.CANCELLED);
    expect(l.exitMessage).toBe(
      "The run was cancelled; the runner ended the provider's process group.",
    );
    await waitUntilGone([pid], 5000);
    expect(s.app.admission.activeTotal).toBe(0);
    // Cancelling again changes nothing; over HTTP too.
    const again = await fetch(`${s.baseUrl}/runs/${liveFirst.runId}/cancel?user_id=u`, {
      method: "POST",
    });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { exit_reason: string }).exit_reason).toBe("cancelled");
    for (let n = await liveIter.next(); !n.done; n = await liveIter.next()) {
      // drain the first caller's stream: it ends with the cancel's exit
      if (n.value.event.case === "exit")
        expect(n.value.event.value.reason).toBe(ExitReason.CANCELLED);
    }
  });
});

describe("ListRuns, GetRun and visibility", () => {
  it("answers a call that names no run invalid_argument, saying run_id is missing", async () => {
    const s = await startTestServer();
    server = s;
    for (const transport of [
      createGrpcTransport({ baseUrl: s.baseUrl }),
      createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" }),
    ]) {
      const client = createClient(RunService, transport);
      // Thunks, started one at a time: a call started early could reject
      // before its catch was attached, an unhandled rejection.
      for (const call of [
        () => client.getRun({ runId: "" }),
        () => client.cancel({ runId: " ", userId: "u" }),
        () => collect(client.attach({ runId: "" })),
      ]) {
        const err = ConnectError.from(await call().catch((e: unknown) => e));
        expect(err.code).toBe(Code.InvalidArgument);
        expect(err.rawMessage).toMatch(/run_id is required/);
      }
    }
  });

  it("pages a user's runs newest first, filters by session, and hides other users' runs", async () => {
    const s = await startTestServer();
    server = s;
    const client = createClient(
      RunService,
      createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" }),
    );
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const events = await collect(
        client.run({ sessionId: i < 3 ? "a" : "b", userPrompt: `run ${i}`, userId: "Uma" }),
      );
      ids.push(events[0]?.runId ?? "");
    }
    const other = await collect(client.run({ sessionId: "a", userPrompt: "other", userId: "vic" }));
    const otherId = other[0]?.runId ?? "";

    const pages: string[][] = [];
    let token = "";
    do {
      const page = await client.listRuns({ userId: "uma", pageSize: 2, pageToken: token });
      pages.push(page.runs.map((r) => r.runId));
      token = page.nextPageToken;
    } while (token !== "");
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual([...ids].reverse());
    const sessionA = await client.listRuns({ userId: "UMA", sessionId: "a" });
    expect(sessionA.runs.map((r) => r.runId)).toEqual(ids.slice(0, 3).reverse());
    expect(sessionA.runs[0]?.promptPreview).toBe("run 2");

    const http = await fetch(`${s.baseUrl}/runs?user_id=uma&page_size=3`);
    const body = (await http.json()) as {
      runs: { run_id: string; status: string }[];
      next_page_token: string;
    };
    expect(body.runs.map((r) => r.run_id)).toEqual(ids.slice(2).reverse());
    expect(body.runs[0]?.status).toBe("finished");
    expect(body.next_page_token).toBeTruthy();

    // Another user's run does not exist for this caller, on every call and both faces.
    const notFound = async (p: Promise<unknown>) =>
      expect(ConnectError.from(await p.catch((e: unknown) => e)).code).toBe(Code.NotFound);
    await notFound(client.getRun({ runId: otherId, userId: "uma" }));
    await notFound(client.cancel({ runId: otherId }));
    await notFound(collect(client.attach({ runId: otherId, userId: "uma" })));
    expect(
      (await fetch(`${s.baseUrl}/runs/${otherId}`, { headers: { "x-fermilink-user-id": "uma" } }))
        .status,
    ).toBe(404);
    expect((await client.getRun({ runId: otherId, userId: "VIC" })).runId).toBe(otherId);

    const badPage = await client.listRuns({ pageSize: 501 }).catch((e: unknown) => e);
    expect(ConnectError.from(badPage).code).toBe(Code.InvalidArgument);
    const badToken = await client.listRuns({ pageToken: "nope" }).catch((e: unknown) => e);
    expect(ConnectError.from(badToken).code).toBe(Code.InvalidArgument);

    // A token pages only the listing that issued it: another user's, or the same user's with
    // another session filter, would silently skip runs (vic's run is newer than uma's cursor).
    const umaPage = await client.listRuns({ userId: "uma", pageSize: 2 });
    // The token names its listing by a keyed digest, none a caller can recompute from a guess.
    const [, , listing] = tokenParts(umaPage.nextPageToken);
    expect(unkeyedListing("uma", null).startsWith(listing.slice(0, 8))).toBe(false);
    expect(listing).toMatch(/^[\w-]{22}$/);
    const asVic = await client
      .listRuns({ userId: "vic", pageSize: 2, pageToken: umaPage.nextPageToken })
      .catch((e: unknown) => e);
    expect(ConnectError.from(asVic).code).toBe(Code.InvalidArgument);
    expect(ConnectError.from(asVic).rawMessage).toMatch(/another listing/);
    const otherSession = await client
      .listRuns({ userId: "uma", sessionId: "b", pageSize: 2, pageToken: umaPage.nextPageToken })
      .catch((e: unknown) => e);
    expect(ConnectError.from(otherSession).code).toBe(Code.InvalidArgument);
    const overHttp = await fetch(
      `${s.baseUrl}/runs?user_id=vic&page_token=${encodeURIComponent(umaPage.nextPageToken)}`,
    );
    expect(overHttp.status).toBe(422);
  });

  it("takes a page token after a restart on the same store, and one issued before tokens were keyed", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "flr-tokens-"));
    const env = { FERMILINK_RUNNER_STORE_PATH: path.join(dir, "runs.db") };
    const listRuns = (s: TestServer, req: { userId: string; pageToken: string }) =>
      createClient(RunService, createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" }))
        .listRuns({ ...req, pageSize: 2 })
        .then(
          (page) => page.runs.map((r) => r.runId),
          (e: unknown) => ConnectError.from(e).rawMessage,
        );
    try {
      server = await startTestServer(env);
      const client = createClient(
        RunService,
        createConnectTransport({ baseUrl: server.baseUrl, httpVersion: "1.1" }),
      );
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const events = await collect(
          client.run({ sessionId: "t", userPrompt: `${i}`, userId: "uma" }),
        );
        ids.push(events[0]?.runId ?? "");
      }
      const token = (await client.listRuns({ userId: "uma", pageSize: 2 })).nextPageToken;
      await server.stop();
      server = await startTestServer(env);
      expect(await listRuns(server, { userId: "uma", pageToken: token })).toEqual([ids[0]]);
      expect(await listRuns(server, { userId: "vic", pageToken: token })).toMatch(
        /another listing/,
      );
      // The same position as an older runner wrote it: the listing an unkeyed SHA-256.
      const [createdAtMs, runId] = tokenParts(token);
      const legacy = (user: string) =>
        Buffer.from(JSON.stringify([createdAtMs, runId, unkeyedListing(user, null)])).toString(
          "base64url",
        );
      expect(await listRuns(server, { userId: "uma", pageToken: legacy("uma") })).toEqual([ids[0]]);
      expect(await listRuns(server, { userId: "vic", pageToken: legacy("uma") })).toMatch(
        /another listing/,
      );
    } finally {
      await server?.stop();
      server = undefined;
      await rm(dir, { recursive: true, force: true });
    }
  });

  // FastAPI reads a scalar query parameter's last value, and /ops/admission does: a gateway that
  // appends the authenticated user to the query must name the user on /runs… too, not whoever
  // the caller put first.
  it("takes a repeated query parameter by its last value on every /runs route, as /ops/admission does", async () => {
    const s = await startTestServer();
    server = s;
    const client = createClient(
      RunService,
      createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" }),
    );
    const ann = await collect(client.run({ sessionId: "q1", userPrompt: "ann's", userId: "ann" }));
    const annId = ann[0]?.runId ?? "";
    await collect(client.run({ sessionId: "q2", userPrompt: "bob's", userId: "bob" }));
    const status = (target: string, method = "GET") =>
      fetch(`${s.baseUrl}${target}`, { method }).then(async (r) => {
        await r.body?.cancel();
        return r.status;
      });
    const listed = async (query: string) => {
      const res = await fetch(`${s.baseUrl}/runs?${query}`);
      return ((await res.json()) as { runs: { prompt_preview: string }[] }).runs.map(
        (r) => r.prompt_preview,
      );
    };
    expect(await listed("user_id=bob&user_id=ann")).toEqual(["ann's"]);
    expect(await listed("user_id=ann&user_id=bob")).toEqual(["bob's"]);
    expect(await listed("user_id=ann&session_id=q2&session_id=q1")).toEqual(["ann's"]);
    expect(await listed("user_id=ann&page_size=x&page_size=1")).toEqual(["ann's"]);
    expect(await status(`/runs/${annId}?user_id=ann&user_id=bob`)).toBe(404);
    expect(await status(`/runs/${annId}?user_id=bob&user_id=ann`)).toBe(200);
    expect(await status(`/runs/${annId}/events?user_id=ann&user_id=bob`)).toBe(404);
    expect(await status(`/runs/${annId}/events?user_id=bob&user_id=ann&after=x&after=0`)).toBe(200);
    expect(await status(`/runs/${annId}/cancel?user_id=ann&user_id=bob`, "POST")).toBe(404);
    expect(await status(`/runs/${annId}/cancel?user_id=bob&user_id=ann`, "POST")).toBe(200);
  });
});
