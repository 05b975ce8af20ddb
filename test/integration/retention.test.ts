import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { ExitReason, type RunEvent, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { READ_GRACE_MS, startRetention } from "../../src/journal/retention.js";
import { SqliteRunStore } from "../../src/journal/sqlite-run-store.js";
import { parseSse, type SseEvent } from "../helpers/sse-client.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { until } from "../helpers/until.js";

let servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers) await s.stop();
  servers = [];
});

async function server(env: Record<string, string> = {}): Promise<TestServer> {
  const s = await startTestServer(env);
  servers.push(s);
  return s;
}

const storeOf = (s: TestServer) =>
  (s.app.pipeline as unknown as { deps: { store: SqliteRunStore } }).deps.store;

/**
 * One pass of the app's retention on its own store, as its timer runs it, with
 * the clock `aheadMs` ahead: every finished run is past its age, and with
 * `aheadMs` beyond READ_GRACE_MS, so are the reads of every viewer.
 */
function retentionPass(s: TestServer, aheadMs: number): void {
  startRetention(
    storeOf(s),
    { retentionMs: 1000, maxBytes: 1024 ** 4 },
    s.app.logger,
    () => Date.now() + aheadMs,
  ).stop();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const grpc = (s: TestServer) =>
  createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));

/** A finished run of `scenario` (the fake agent's default one: null), played to its end; its id. */
async function finishedRun(s: TestServer, scenario: string | null): Promise<string> {
  let runId = "";
  const userPrompt = scenario === null ? "hello" : `#scenario=${scenario}`;
  for await (const ev of grpc(s).run({ sessionId: "ret", userPrompt })) runId ||= ev.runId;
  return runId;
}

/** A viewer's stream, read a few events, then left unread: the server waits for it to drain. */
async function stalled<T>(stream: AsyncIterable<T>, first = 10): Promise<AsyncIterator<T>> {
  return stalledWithHead(stream, first).then((s) => s.it);
}

async function stalledWithHead<T>(stream: AsyncIterable<T>, first = 10) {
  const it = stream[Symbol.asyncIterator]();
  const head: T[] = [];
  for (let i = 0; i < first; i++) {
    const n = await it.next();
    if (n.done) throw new Error("ended early");
    head.push(n.value);
  }
  return { it, head };
}

/** The rest of a stalled stream, and the error it ended with. */
async function drain<T>(it: AsyncIterator<T>): Promise<{ items: T[]; error: unknown }> {
  const items: T[] = [];
  try {
    for (let n = await it.next(); !n.done; n = await it.next()) items.push(n.value);
    return { items, error: null };
  } catch (error) {
    return { items, error };
  }
}

function sseEvents(s: TestServer, runId: string, init: RequestInit = {}) {
  return fetch(`${s.baseUrl}/runs/${runId}/events`, init).then((res) => {
    expect(res.status).toBe(200);
    return parseSse(res.body as ReadableStream<Uint8Array>);
  });
}

/** The Connect viewers: gRPC and the Connect protocol on the direct path, JSON on connect-node's. */
const connectViewers = (s: TestServer): [string, Transport][] => [
  ["gRPC", createGrpcTransport({ baseUrl: s.baseUrl })],
  ["Connect", createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" })],
  [
    "Connect JSON",
    createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
  ],
];

function expectDeletedError(error: unknown, runId: string) {
  expect(error).toBeInstanceOf(ConnectError);
  const e = error as ConnectError;
  expect(e.code).toBe(Code.NotFound);
  expect(e.rawMessage).toContain(runId);
  expect(e.rawMessage).toMatch(/deleted by retention while it was being read/);
}

/** The SSE stream's last frame: a runner.exit of reason error saying so, not one of the run's frames. */
function expectSseDeletedExit(frames: SseEvent[], runId: string, lines: number) {
  const last = frames.at(-1);
  expect(last?.event).toBe("runner.exit");
  const exit = JSON.parse(last?.data ?? "{}");
  expect(exit).toMatchObject({ reason: "error", succeeded: false, run_id: runId });
  expect(exit.message).toMatch(/deleted by retention while it was being read/);
  // It carries no id: EventSource keeps the last real frame's (the helper keeps it too).
  expect(last?.id).toBe(frames.at(-2)?.id);
  expect(frames.filter((f) => f.event === "runner.exit")).toHaveLength(1);
  // The run's own lines were cut short: the stream is incomplete, and says so.
  expect(frames.filter((f) => f.event === "agent").length).toBeLessThan(lines);
}

describe("retention while a viewer reads a run back", () => {
  it("tells every viewer reading a deleted run: SSE ends with a runner.exit of reason error, Connect and gRPC with not_found", async () => {
    const s = await server();
    const runId = await finishedRun(s, "lines-40mb");
    const sse = await stalled(await sseEvents(s, runId));
    const attaches = await Promise.all(
      connectViewers(s).map(
        async ([name, t]) =>
          [name, await stalled(createClient(RunService, t).attach({ runId }))] as const,
      ),
    );
    // Every viewer is stalled mid-run, its reads older than the read grace: the run goes.
    await sleep(300);
    retentionPass(s, READ_GRACE_MS + 60_000);
    expect(storeOf(s).getRun(runId)).toBeNull();

    const sseRest = await drain(sse);
    expect(sseRest.error).toBeNull();
    expectSseDeletedExit(sseRest.items, runId, 20_000);
    for (const [name, it] of attaches) {
      const rest = await drain(it);
      expect(rest.items.length, name).toBeLessThan(20_000);
      expect(
        rest.items.some((e) => e.event.case === "exit"),
        name,
      ).toBe(false);
      expectDeletedError(rest.error, runId);
    }
    // An EventSource resuming after the last frame it got is told the run is gone, and stops.
    const again = await fetch(`${s.baseUrl}/runs/${runId}/events?after=5`);
    expect(again.status).toBe(404);
  });

  it("tells a lagging Run caller whose finished run was deleted, on POST /run and on gRPC", async () => {
    const s = await server();
    const sseCaller = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: "lag-sse", user_prompt: "#scenario=lines-40mb" }),
    });
    const { it: sse, head: sseHead } = await stalledWithHead(
      parseSse(sseCaller.body as ReadableStream<Uint8Array>),
    );
    const sseRunId = JSON.parse(sseHead[0]?.data ?? "{}").run_id as string;
    const { it: rpc, head: rpcHead } = await stalledWithHead(
      grpc(s).run({ sessionId: "lag-grpc", userPrompt: "#scenario=lines-40mb" }),
    );
    const rpcRunId = rpcHead[0]?.runId ?? "";
    // The runs go on without their callers (they only move their own cursors) and finish.
    await until(() => s.app.pipeline.liveRuns === 0, "both runs to finish", 20_000);
    retentionPass(s, READ_GRACE_MS + 60_000);

    expect(storeOf(s).getRun(sseRunId)).toBeNull();
    expect(storeOf(s).getRun(rpcRunId)).toBeNull();

    const sseRest = await drain(sse);
    expect(sseRest.error).toBeNull();
    expectSseDeletedExit(sseRest.items, sseRunId, 20_000);
    const rpcRest = await drain(rpc);
    expect(rpcRest.items.some((e: RunEvent) => e.event.case === "exit")).toBe(false);
    expectDeletedError(rpcRest.error, rpcRunId);
  });

  it("leaves a finished run whose Run caller fell behind while it was live to a later pass: its reads were recent, from memory", async () => {
    const s = await server();
    const { it: rpc, head } = await stalledWithHead(
      grpc(s).run({ sessionId: "lag-kept", userPrompt: "#scenario=lines-40mb" }),
    );
    const runId = head[0]?.runId ?? "";
    await until(() => s.app.pipeline.liveRuns === 0, "the run to finish", 20_000);
    // A minute on: past its age, and the caller's last read (of the in-memory tail) is well
    // within the read grace. The rest of the run is only in the store: kept.
    retentionPass(s, 60_000);
    expect(storeOf(s).getRun(runId)).not.toBeNull();
    const rest = await drain(rpc);
    expect(rest.error).toBeNull();
    expect(rest.items.at(-1)?.event.case).toBe("exit");
    expect(head.length + rest.items.length).toBe(20_002);
  });

  it("leaves a run that is being read to a later pass: the viewer gets all of it, then the run goes", async () => {
    const s = await server();
    const runId = await finishedRun(s, "lines-40mb");
    const sse = await stalled(await sseEvents(s, runId));
    const rpc = await stalled(grpc(s).attach({ runId }));
    await sleep(300);
    // Past its age, but read within the grace: kept.
    retentionPass(s, 0);
    expect(storeOf(s).getRun(runId)).not.toBeNull();
    const sseRest = await drain(sse);
    expect(sseRest.error).toBeNull();
    const last = sseRest.items.at(-1);
    expect(last?.event).toBe("runner.exit");
    expect(JSON.parse(last?.data ?? "{}")).toMatchObject({ reason: "completed", run_id: runId });
    expect(Number(last?.id)).toBe(20_002);
    const rpcRest = await drain(rpc);
    expect(rpcRest.error).toBeNull();
    expect(rpcRest.items.at(-1)?.event.case).toBe("exit");
    expect(Number(rpcRest.items.at(-1)?.seq)).toBe(20_002);
    // Nobody has read it for longer than the grace: the next pass deletes it.
    retentionPass(s, READ_GRACE_MS + 60_000);
    expect(storeOf(s).getRun(runId)).toBeNull();
  });
});

describe("a store failing under a read-back", () => {
  it("ends the SSE stream with a runner.exit of reason error, not a clean end that reads as a complete run", async () => {
    const s = await server();
    const runId = await finishedRun(s, "lines-40mb");
    const sse = await stalled(await sseEvents(s, runId));
    // The store's next read fails (as a disk or I/O error would): an internal error.
    storeOf(s).close();
    const rest = await drain(sse);
    expect(rest.error).toBeNull();
    const last = rest.items.at(-1);
    expect(last?.event).toBe("runner.exit");
    expect(JSON.parse(last?.data ?? "{}")).toMatchObject({
      reason: "error",
      succeeded: false,
      run_id: runId,
      message: "Internal runner error.",
    });
    expect(rest.items.filter((f) => f.event === "agent").length).toBeLessThan(20_000);
  });

  it("ends a lagging POST /run caller's stream with the runner.exit error frame too", async () => {
    const s = await server();
    const caller = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: "fail-sse", user_prompt: "#scenario=lines-40mb" }),
    });
    const { it: sse, head } = await stalledWithHead(
      parseSse(caller.body as ReadableStream<Uint8Array>),
    );
    const runId = JSON.parse(head[0]?.data ?? "{}").run_id as string;
    await until(() => s.app.pipeline.liveRuns === 0, "the run to finish", 20_000);
    storeOf(s).close();
    const rest = await drain(sse);
    expect(rest.error).toBeNull();
    expect(JSON.parse(rest.items.at(-1)?.data ?? "{}")).toMatchObject({
      reason: "error",
      run_id: runId,
      message: "Internal runner error.",
    });
  });
});

describe("retention by size", () => {
  it("counts stored events in UTF-8 bytes, as SQLite stores them: a CJK and emoji run over FERMILINK_RUNNER_STORE_MAX_MB goes", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "flr-ret-"));
    try {
      const storePath = path.join(dir, "runs.sqlite3");
      const a = await server({ FERMILINK_RUNNER_STORE_PATH: storePath });
      const wide = await finishedRun(a, "multibyte-lines");
      const ascii = await finishedRun(a, null);
      await a.stop();
      servers = [];

      // What the store holds, read back through it: UTF-8 bytes and characters of every text.
      const check = new SqliteRunStore(storePath);
      const row = (runId: string) => {
        let utf8 = 0;
        let chars = 0;
        for (const e of check.readEvents(runId, 0, 1_000_000, false)) {
          const b = e.body;
          const text = b.type === "agent" ? b.raw : b.type === "log" ? b.text : JSON.stringify(b);
          utf8 += Buffer.byteLength(text, "utf8");
          chars += [...text].length;
        }
        return { counted: check.getRun(runId)?.eventBytes ?? -1, utf8, chars };
      };
      const w = row(wide);
      const n = row(ascii);
      await check.close();
      expect(w.counted).toBe(w.utf8);
      expect(n.counted).toBe(n.utf8);
      // 400 lines of 1,000 CJK characters and 100 of 200 emoji: 1.3 MB, 0.5 M characters.
      expect(w.utf8).toBeGreaterThan(1024 * 1024);
      expect(w.chars).toBeLessThan(1024 * 1024);
      expect(w.utf8 + n.utf8).toBeGreaterThan(1024 * 1024);

      // A runner on that store with a 1 MB cap: start-up retention deletes the oldest run, the
      // wide one, which brings the store under the cap; the newer ASCII run stays.
      const b = await server({
        FERMILINK_RUNNER_STORE_PATH: storePath,
        FERMILINK_RUNNER_STORE_MAX_MB: "1",
      });
      const client = grpc(b);
      await expect(client.getRun({ runId: wide })).rejects.toMatchObject({ code: Code.NotFound });
      expect((await client.getRun({ runId: ascii })).exitReason).toBe(ExitReason.COMPLETED);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
