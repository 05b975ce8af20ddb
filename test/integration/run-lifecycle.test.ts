import { existsSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import http2 from "node:http2";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it, vi } from "vitest";
import { OpsService } from "../../gen/fermilink/runner/v1/ops_pb.js";
import { RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import type { RunState } from "../../src/run/run-state.js";
import { workspaceFs } from "../../src/workspace/fs-batch/fs-batch.js";
import { runnerOwner } from "../../src/workspace/owner.js";
import { SPARES_DIRNAME } from "../../src/workspace/spare-workspaces.js";
import { isAlive, waitUntilGone } from "../helpers/process-census.js";
import { parseSse, postRun, type SseEvent } from "../helpers/sse-client.js";
import { startGatedTestServer, startTestServer, type TestServer } from "../helpers/start-server.js";
import { until } from "../helpers/until.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function readPid(file: string, timeoutMs = 5000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const pid = Number((await readFile(file, "utf8")).trim());
      if (pid > 0) return pid;
    } catch {}
    if (Date.now() > deadline) throw new Error(`no pid in ${file}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function activeRuns(s: TestServer): Promise<number> {
  const j = (await (await fetch(`${s.baseUrl}/ops/concurrency`)).json()) as {
    active_total: number;
    pending_total: number;
  };
  return j.active_total + j.pending_total;
}

/** Open a run, read frames until `until` matches, then hand back the live reader. */
async function openRun(s: TestServer, body: unknown, until: (e: SseEvent) => boolean) {
  const ac = new AbortController();
  const res = await fetch(`${s.baseUrl}/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: ac.signal,
  });
  expect(res.status).toBe(200);
  const events: SseEvent[] = [];
  const it = parseSse(res.body as ReadableStream<Uint8Array>)[Symbol.asyncIterator]();
  for (;;) {
    const n = await it.next();
    if (n.done) throw new Error("stream ended early");
    events.push(n.value);
    if (until(n.value)) break;
  }
  return { ac, events, it };
}

describe("run lifecycle", () => {
  it("starts the file-system worker with the server, before the first run needs it", async () => {
    await workspaceFs.close();
    expect(workspaceFs.running).toBe(false);
    server = await startTestServer();
    expect(workspaceFs.running).toBe(true);
  });

  it("gives a new session a ready spare workspace, and makes another while idle", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_SPARE_WORKSPACES: "3" });
    const spares = server.app.spares;
    await spares.whenFilled();
    expect(spares.readyCount).toBe(3);
    const [keyDir] = await readdir(path.join(server.workspacesRoot, SPARES_DIRNAME));
    const spareDir = path.join(
      server.workspacesRoot,
      SPARES_DIRNAME,
      keyDir as string,
      runnerOwner(),
    );
    const inodes = async () =>
      new Set(
        await Promise.all(
          (await readdir(spareDir)).map(async (n) => (await stat(path.join(spareDir, n))).ino),
        ),
      );
    const before = await inodes();

    const res = await postRun(server.baseUrl, { session_id: "from-spare", user_prompt: "hi" });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.events.at(-1)?.data ?? "{}").reason).toBe("completed");
    const session = path.join(server.workspacesRoot, "from-spare");
    // The session directory is one of the spares, moved; the fake agent ran in it.
    expect(before.has((await stat(session)).ino)).toBe(true);
    expect(existsSync(path.join(session, "repo", ".fake-agent", "invocation.json"))).toBe(true);
    expect(await readFile(path.join(session, "repo", "projects", "memory.md"), "utf8")).toContain(
      "hi",
    );
    await spares.whenFilled();
    expect(spares.readyCount).toBe(3);
    expect((await inodes()).size).toBe(3);
  });

  it("a client that disconnects kills the provider and its grandchild and frees the slot", async () => {
    server = await startTestServer();
    const { ac, events } = await openRun(
      server,
      { session_id: "gone", user_prompt: "#scenario=grandchild" },
      (e) => e.event === "agent",
    );
    const meta = JSON.parse(events[0]?.data ?? "{}");
    const repo = path.join(server.workspacesRoot, "gone", "repo");
    const inv = JSON.parse(
      await readFile(path.join(repo, ".fake-agent", "invocation.json"), "utf8"),
    );
    const grandchild = await readPid(path.join(repo, ".fake-agent", "grandchild.pid"));
    expect(meta.session_id).toBe("gone");
    expect(isAlive(inv.pid)).toBe(true);
    expect(isAlive(grandchild)).toBe(true);
    ac.abort();
    await waitUntilGone([inv.pid, grandchild], 10_000);
    expect(isAlive(inv.pid)).toBe(false);
    expect(isAlive(grandchild)).toBe(false);
    // The slot comes back: another run by the same session starts at once.
    const deadline = Date.now() + 5000;
    while (server.app.admission.activeTotal > 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(server.app.admission.activeTotal).toBe(0);
    const again = await postRun(server.baseUrl, { session_id: "gone", user_prompt: "again" });
    expect(JSON.parse(again.events.at(-1)?.data ?? "{}").reason).toBe("completed");
  });

  it("a client that resets its HTTP/2 stream ends the run as client_gone, like a closed connection", async () => {
    // On h2c the reset shows on the request; the response then looks finished, not ended.
    server = await startTestServer();
    const session = http2.connect(server.baseUrl);
    try {
      const stream = session.request({ ":method": "POST", ":path": "/run" });
      stream.end(JSON.stringify({ session_id: "h2gone", user_prompt: "#scenario=slow" }));
      await new Promise((resolve) => stream.once("data", resolve));
      expect(server.app.pipeline.liveRuns).toBe(1);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      const deadline = Date.now() + 5000;
      while (server.app.pipeline.liveRuns > 0 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      expect(server.app.pipeline.liveRuns).toBe(0);
      expect(server.app.admission.activeTotal).toBe(0);
      const [run] = server.app.pipeline.listRuns({
        viewer: { userId: null },
        sessionId: "h2gone",
        limit: 1,
        after: null,
      });
      expect(run?.exitReason).toBe("client_gone");
    } finally {
      session.close();
    }
  });

  it("answers a run waiting for its session at once (queued, then keepalives), and starts it after the run before", async () => {
    const s = await startGatedTestServer({ FERMILINK_RUNNER_SSE_HEARTBEAT_SECONDS: "0.1" });
    server = s;
    const first = await openRun(
      s,
      { session_id: "one", user_prompt: "#scenario=gate" },
      (e) => e.event === "agent",
    );
    // The second run on that session waits for it: its caller hears so, and then keepalives.
    const res = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: "one", user_prompt: "second" }),
    });
    expect(res.status).toBe(200);
    const comments: string[] = [];
    const it = parseSse(res.body as ReadableStream<Uint8Array>, (c) => comments.push(c))[
      Symbol.asyncIterator
    ]();
    const next = it.next();
    while (comments.filter((c) => c === "keepalive").length < 2)
      await new Promise((r) => setTimeout(r, 20));
    expect(comments[0]).toBe("queued 1/1");
    // Over Connect, the same wait is a `queued` event first.
    const viaConnect = createClient(
      RunService,
      createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" }),
    ).run({ sessionId: "one", userPrompt: "third" });
    const connectIt = viaConnect[Symbol.asyncIterator]();
    const head = await connectIt.next();
    expect(head.value?.event.case).toBe("queued");
    expect(head.value?.event.value).toMatchObject({ position: 2, queueSize: 2 });
    await s.openGate();
    while (!(await first.it.next()).done);
    const events = [(await next).value as SseEvent];
    for (let e = await it.next(); !e.done; e = await it.next()) events.push(e.value);
    expect(events[0]?.event).toBe("meta");
    expect(events.at(-1)?.event).toBe("runner.exit");
    const rest: string[] = [];
    for (let e = await connectIt.next(); !e.done; e = await connectIt.next())
      rest.push(
        e.value.event.case === "queued"
          ? `queued ${e.value.event.value.position}/${e.value.event.value.queueSize}`
          : (e.value.event.case ?? ""),
      );
    // Next in line once the first run ended, then the session's after the second.
    expect(rest.slice(0, 2)).toEqual(["queued 1/1", "meta"]);
    expect(rest.at(-1)).toBe("exit");
  });

  // FermiLink's test_cancel_streaming_response_releases_admission_slot (spec §9): a caller that
  // reads meta and leaves while the provider would never exit finds nothing held within 2 s.
  it("a caller that leaves right after meta frees its slot and queue place within 2 s", async () => {
    // A kill grace far beyond the wait: the slot must not wait for it.
    server = await startTestServer({ FERMILINK_RUNNER_KILL_GRACE_SECONDS: "10" });
    const s = server;
    const { ac } = await openRun(
      s,
      { session_id: "after-meta", user_prompt: "#scenario=hold" },
      (e) => e.event === "meta",
    );
    expect(await activeRuns(s)).toBe(1);
    ac.abort();
    // FermiLink's test allows 2 s; a loaded CI box gets 4 (still well inside the kill grace).
    await until(async () => (await activeRuns(s)) === 0, "no slot or queue place held", 4000);
  });

  // FermiLink's test_cancel_during_setup_releases_admission_slot (spec §9): a caller that leaves
  // after its slot was granted but before its provider started gives the slot back.
  it("a caller that leaves during setup (slot granted, provider not started) frees its slot", async () => {
    const s = await startGatedTestServer();
    server = s;
    const ops = async () =>
      (await (await fetch(`${s.baseUrl}/ops/concurrency`)).json()) as {
        active_total: number;
        pending_total: number;
      };
    const first = await openRun(
      s,
      { session_id: "setup", user_prompt: "#scenario=gate" },
      (e) => e.event === "agent",
    );
    const inv = path.join(s.workspacesRoot, "setup", "repo", ".fake-agent", "invocation.json");
    const firstPid = JSON.parse(await readFile(inv, "utf8")).pid;
    const ac = new AbortController();
    const res = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: "setup", user_prompt: "second", user_id: "bob" }),
      signal: ac.signal,
    });
    expect(res.status).toBe(200);
    // Admitted (the slot is taken before the session wait), not queued for a slot.
    await until(async () => (await ops()).active_total === 2, "the second run's slot");
    expect(await ops()).toMatchObject({ active_total: 2, pending_total: 0 });
    ac.abort();
    await until(async () => (await ops()).active_total === 1, "the slot given back");
    expect(await ops()).toMatchObject({ active_total: 1, pending_total: 0 });
    // No provider was started for it, before or after the session came free.
    await s.openGate();
    while (!(await first.it.next()).done);
    await until(async () => (await ops()).active_total === 0, "no slot held");
    expect(JSON.parse(await readFile(inv, "utf8")).pid).toBe(firstPid);
    const again = await postRun(s.baseUrl, { session_id: "setup", user_prompt: "again" });
    expect(JSON.parse(again.events.at(-1)?.data ?? "{}").reason).toBe("completed");
  });

  it("writes keepalive comments on an idle stream (proxies see traffic) without adding frames", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_SSE_HEARTBEAT_SECONDS: "0.1" });
    const res = await postRun(server.baseUrl, {
      session_id: "idle",
      user_prompt: "#scenario=sleep-1s",
    });
    expect(res.comments.filter((c) => c === "keepalive").length).toBeGreaterThanOrEqual(3);
    expect(res.events.map((e) => e.event)).toEqual(["meta", "agent", "agent", "runner.exit"]);
  });

  it("a run over FERMILINK_RUNNER_MAX_RUNTIME_SECONDS ends with reason timeout, keeping what was printed", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "1" });
    const res = await postRun(server.baseUrl, {
      session_id: "slow",
      user_prompt: "#scenario=slow",
    });
    const exit = JSON.parse(res.events.at(-1)?.data ?? "{}");
    expect(exit.reason).toBe("timeout");
    expect(exit.return_code).toBe(-15);
    expect(exit.message).toContain("FERMILINK_RUNNER_MAX_RUNTIME_SECONDS");
    expect(res.events.filter((e) => e.event === "agent").length).toBeGreaterThanOrEqual(2);
  });

  it("a provider that ignores SIGTERM is SIGKILLed after the grace period, grandchild included", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "1" });
    const res = await postRun(server.baseUrl, {
      session_id: "stubborn",
      user_prompt: "#scenario=ignore-sigterm",
    });
    const exit = JSON.parse(res.events.at(-1)?.data ?? "{}");
    expect(exit).toMatchObject({ reason: "timeout", return_code: -9, signal: "SIGKILL" });
    const inv = JSON.parse(
      await readFile(
        path.join(server.workspacesRoot, "stubborn", "repo", ".fake-agent", "invocation.json"),
        "utf8",
      ),
    );
    expect(isAlive(inv.pid)).toBe(false);
  });

  it("a timed-out run whose provider left a process holding its output still ends, and that process is killed", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "1" });
    const t0 = Date.now();
    const res = await postRun(server.baseUrl, {
      session_id: "escapee-out",
      user_prompt: "#scenario=escapee-holding-output",
    });
    // Without the cut, the exit waited the escapee's 60 s (the test's time limit first).
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(JSON.parse(res.events.at(-1)?.data ?? "{}")).toMatchObject({ reason: "timeout" });
    const repo = path.join(server.workspacesRoot, "escapee-out", "repo", ".fake-agent");
    await waitUntilGone([await readPid(path.join(repo, "escapee.pid"))], 5000);
    expect(await activeRuns(server)).toBe(0);
  });

  it("a process the provider left behind in a session of its own is killed after the run", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_ORPHAN_SWEEP_SECONDS: "0.2" });
    const res = await postRun(server.baseUrl, {
      session_id: "escapee-daemon",
      user_prompt: "#scenario=escapee-daemon",
    });
    expect(JSON.parse(res.events.at(-1)?.data ?? "{}")).toMatchObject({ reason: "completed" });
    const repo = path.join(server.workspacesRoot, "escapee-daemon", "repo", ".fake-agent");
    const escapee = await readPid(path.join(repo, "escapee.pid"));
    await waitUntilGone([escapee], 5000);
  });

  it("a cancel after the provider exited with its result (its group still being cleaned up) changes nothing", async () => {
    // The grandchild ignores SIGTERM and holds the pipes: the group takes the kill grace to go.
    server = await startTestServer({ FERMILINK_RUNNER_KILL_GRACE_SECONDS: "2.5" });
    const { events, it: reader } = await openRun(
      server,
      { session_id: "done-then-cancel", user_prompt: "#scenario=done-leaving-stubborn-grandchild" },
      (e) => e.event === "agent",
    );
    const runId = JSON.parse(events.find((e) => e.event === "meta")?.data ?? "{}").run_id;
    const inv = JSON.parse(
      await readFile(
        path.join(
          server.workspacesRoot,
          "done-then-cancel",
          "repo",
          ".fake-agent",
          "invocation.json",
        ),
        "utf8",
      ),
    );
    await waitUntilGone([inv.pid], 5000);
    // The spawn helper reaped it; its word reaches the runner over IPC a moment later (a cancel
    // before that is a cancel of a live provider): the cancel waits until the run has it, and
    // comes well inside the group's 2.5 s kill grace, which began with that exit.
    const runs = (server.app.pipeline as unknown as { runs: Map<string, { state: RunState }> })
      .runs;
    await until(() => runs.get(runId)?.state.processExited === true, "the provider's exit heard");
    expect(server.app.pipeline.liveRuns).toBe(1);
    const cancel = await fetch(`${server.baseUrl}/runs/${runId}/cancel`, { method: "POST" });
    expect(cancel.status).toBe(200);
    let last: SseEvent | undefined;
    for (let n = await reader.next(); !n.done; n = await reader.next()) last = n.value;
    expect(JSON.parse(last?.data ?? "{}")).toMatchObject({
      reason: "completed",
      return_code: 0,
      succeeded: true,
      killed_by_runner: false,
    });
  });

  it("shutdown ends a run waiting for its session at once, and starts no provider for it", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "3" });
    const first = await openRun(
      server,
      { session_id: "shared", user_prompt: "#scenario=sleep-1s" },
      (e) => e.event === "agent",
    );
    const res = await fetch(`${server.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: "shared", user_prompt: "#scenario=slow" }),
    });
    // SSE tells a waiting caller its place as a comment (FermiLink's frames have no `queued`).
    const comments: string[] = [];
    const second = parseSse(res.body as ReadableStream<Uint8Array>, (c) => comments.push(c))[
      Symbol.asyncIterator
    ]();
    const rest: SseEvent[] = [];
    const reading = (async () => {
      for (let n = await second.next(); !n.done; n = await second.next()) rest.push(n.value);
    })();
    while (!comments.includes("queued 1/1")) await new Promise((r) => setTimeout(r, 10));
    const t0 = Date.now();
    const closing = server.app.close();
    await reading;
    // Ended at once, not after the run before it (1 s) or the grace (3 s).
    expect(Date.now() - t0).toBeLessThan(900);
    expect(rest.map((e) => e.event)).toEqual(["runner.exit"]);
    expect(JSON.parse(rest[0]?.data ?? "{}")).toMatchObject({ reason: "shutdown" });
    for (let n = await first.it.next(); !n.done; n = await first.it.next());
    await closing;
    // The session's one provider was the first run's (the fake agent records each start).
    const inv = JSON.parse(
      await readFile(
        path.join(server.workspacesRoot, "shared", "repo", ".fake-agent", "invocation.json"),
        "utf8",
      ),
    );
    expect(inv.argv.join(" ")).toContain("#scenario=sleep-1s");
  });

  it("a run that had sent nothing when shutdown began is refused as the runner draining (503)", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_SPARE_WORKSPACES: "0" });
    // The file-system worker busy with a big batch: the run waits there, before its first event.
    const busyDir = path.join(server.workspacesRoot, "..", "busy");
    const busy = workspaceFs.run(
      Array.from({ length: 3000 }, (_, i) => ({ op: "mkdir" as const, path: `${busyDir}-${i}` })),
    );
    const res = fetch(`${server.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: "never-started", user_prompt: "#scenario=slow" }),
    });
    for (let i = 0; i < 200 && server.app.pipeline.liveRuns === 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const closing = server.app.close();
    const r = await res;
    expect(r.status).toBe(503);
    expect(await r.json()).toMatchObject({ code: "SHUTTING_DOWN" });
    await closing;
    expect((await busy).failedAt).toBe(-1);
  });

  it("while draining, /ops/admission and GetAdmission say a run cannot start now, as POST /run answers 503", async () => {
    // A grace far longer than the checks take; the run, held at the gate, ends when they are done.
    const s = await startGatedTestServer({ FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "10" });
    server = s;
    const { it: reader } = await openRun(
      s,
      { session_id: "draining", user_prompt: "#scenario=gate" },
      (e) => e.event === "agent",
    );
    const ops = createClient(
      OpsService,
      createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" }),
    );
    const before = await (await fetch(`${s.baseUrl}/ops/admission?user_id=someone`)).json();
    expect(before).toMatchObject({ can_run_now: true });
    const closing = s.app.close();
    // The live run holds the grace: the server still answers meanwhile.
    const refused = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: "someone", user_prompt: "x" }),
    });
    expect(refused.status).toBe(503);
    const during = await (await fetch(`${s.baseUrl}/ops/admission?user_id=someone`)).json();
    expect(during).toMatchObject({ user_key: "user:someone", can_run_now: false });
    expect((await ops.getAdmission({ userId: "someone" })).canRunNow).toBe(false);
    await s.openGate();
    for (let n = await reader.next(); !n.done; n = await reader.next());
    await closing;
  });

  it("a caller that leaves before its run's first event is not logged as an internal error", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_SPARE_WORKSPACES: "0" });
    const s = server;
    const errors = vi.spyOn(s.app.logger, "error");
    const grpc = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    const faces: [string, (signal: AbortSignal) => Promise<unknown>][] = [
      [
        "SSE",
        (signal) =>
          fetch(`${s.baseUrl}/run`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ session_id: "left-sse", user_prompt: "#scenario=slow" }),
            signal,
          }),
      ],
      [
        "gRPC",
        async (signal) => {
          for await (const _ of grpc.run(
            { sessionId: "left-grpc", userPrompt: "#scenario=slow" },
            { signal },
          ));
        },
      ],
    ];
    for (const [face, call] of faces) {
      // The file-system worker busy with a big batch: the run waits there, before its first event.
      const busyDir = path.join(s.workspacesRoot, "..", `busy-${face}`);
      const busy = workspaceFs.run(
        Array.from({ length: 3000 }, (_, i) => ({ op: "mkdir" as const, path: `${busyDir}-${i}` })),
      );
      const ac = new AbortController();
      const answer = call(ac.signal).catch(() => null);
      for (let i = 0; i < 400 && s.app.pipeline.liveRuns === 0; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(s.app.pipeline.liveRuns, face).toBe(1);
      ac.abort();
      await answer;
      await busy;
      for (let i = 0; i < 400 && s.app.pipeline.liveRuns > 0; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(s.app.pipeline.liveRuns, face).toBe(0);
      // The handler's catch runs once the pipeline gave up on the run.
      await new Promise((r) => setTimeout(r, 50));
      expect(
        errors.mock.calls.map((c) => c.at(-1)),
        face,
      ).toEqual([]);
      // It did end before its first event: such a run leaves no record.
      const session = face === "SSE" ? "left-sse" : "left-grpc";
      expect(
        s.app.pipeline.listRuns({
          viewer: { userId: null },
          sessionId: session,
          limit: 1,
          after: null,
        }),
      ).toEqual([]);
      expect(s.app.admission.activeTotal).toBe(0);
    }
  });

  it("shutdown sends HTTP/2 clients a graceful GOAWAY at once: a live call runs to its end, no new one opens on that connection", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "2" });
    const session = http2.connect(server.baseUrl);
    try {
      const stream = session.request({ ":method": "POST", ":path": "/run" });
      stream.end(JSON.stringify({ session_id: "h2drain", user_prompt: "#scenario=slow" }));
      let body = "";
      stream.setEncoding("utf8");
      const ended = new Promise<void>((resolve) => stream.once("end", resolve));
      stream.on("data", (d: string) => {
        body += d;
      });
      await until(() => body.includes("event: agent"), "the run's first agent event");
      const goaway = new Promise<{ code: number; lastStreamID: number; atMs: number }>((resolve) =>
        session.once("goaway", (code: number, lastStreamID: number) =>
          resolve({ code, lastStreamID, atMs: Date.now() }),
        ),
      );
      const drainStart = Date.now();
      const closing = server.app.close();
      const got = await goaway;
      // At the drain's start, well before its 2 s grace ends the run.
      expect(got.atMs - drainStart).toBeLessThan(1000);
      expect(got.code).toBe(http2.constants.NGHTTP2_NO_ERROR);
      // The live call is covered by the GOAWAY: it goes on and gets its exit event.
      expect(got.lastStreamID).toBeGreaterThanOrEqual(stream.id ?? Number.POSITIVE_INFINITY);
      const beforeExit = body.length;
      expect(() => session.request({ ":method": "GET", ":path": "/healthz" })).toThrow(
        expect.objectContaining({ code: "ERR_HTTP2_GOAWAY_SESSION" }),
      );
      await ended;
      await closing;
      expect(body.length).toBeGreaterThan(beforeExit);
      const exit = body.slice(body.lastIndexOf("event: runner.exit"));
      expect(exit).toMatch(/"reason": ?"shutdown"/);
    } finally {
      session.close();
    }
  });

  it("shutdown ends a live run with reason shutdown and leaves no process behind", async () => {
    server = await startTestServer();
    const { it: reader } = await openRun(
      server,
      { session_id: "shut", user_prompt: "#scenario=slow" },
      (e) => e.event === "agent",
    );
    const inv = JSON.parse(
      await readFile(
        path.join(server.workspacesRoot, "shut", "repo", ".fake-agent", "invocation.json"),
        "utf8",
      ),
    );
    const closing = server.app.close();
    let last: SseEvent | undefined;
    for (;;) {
      const n = await reader.next();
      if (n.done) break;
      last = n.value;
    }
    await closing;
    expect(last?.event).toBe("runner.exit");
    expect(JSON.parse(last?.data ?? "{}").reason).toBe("shutdown");
    expect(isAlive(inv.pid)).toBe(false);
    // New runs are refused while (and after) draining.
    await expect(fetch(`${server.baseUrl}/run`, { method: "POST", body: "{}" })).rejects.toThrow();
  });
});

/** A counter's value from the metrics listener (0 when it has no sample yet). */
async function scrape(s: TestServer, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${s.app.metricsPort}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, "m"));
  return m ? Number(m[1]) : 0;
}

describe("a caller that stops reading", () => {
  it("is served from the store once it falls behind the in-memory tail: nothing lost, in order, and counted", async () => {
    const s = await startTestServer();
    try {
      const res = await fetch(`${s.baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ session_id: "slow", user_prompt: "#scenario=flood" }),
      });
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let text = "";
      let runId: string | undefined;
      while (runId === undefined) {
        const n = await reader.read();
        if (n.done) throw new Error(`no meta frame in: ${text}`);
        text += decoder.decode(n.value, { stream: true });
        runId = /"run_id": ?"([^"]+)"/.exec(text)?.[1];
      }
      // Not a reader that is merely slower than the provider prints: on a loaded machine the
      // provider can be the slower one and the reader never falls behind. It stops until the
      // run is 10 MB (far more than the tail and the socket buffers) past what it read.
      for (;;) {
        const run = (await (await fetch(`${s.baseUrl}/runs/${runId}`)).json()) as {
          last_seq: number;
        };
        if (run.last_seq >= 50_000) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      for (;;) {
        const n = await reader.read();
        if (n.done) break;
        text += decoder.decode(n.value, { stream: true });
        await new Promise((r) => setTimeout(r, 5));
      }
      const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
      expect(ids).toEqual(ids.map((_, i) => (ids[0] as number) + i));
      expect(text.match(/^event: agent$/gm)?.length).toBe(100_000);
      expect(text).toContain("event: runner.exit");
      // The provider printed far faster than this caller read: it was served from the store.
      expect(await scrape(s, "fermilink_runner_events_read_back_total")).toBeGreaterThan(1_000);
    } finally {
      await s.stop();
    }
  });

  it("never holds the provider back: the run ends and frees its slot while the caller is paused, then every frame arrives once", async () => {
    const s = await startTestServer({ FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1" });
    try {
      // 5,000 lines of 2,000 bytes is far more than the socket buffers hold: the journal is the buffer.
      const res = await fetch(`${s.baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ session_id: "paused", user_prompt: "#scenario=flood-small" }),
      });
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      await reader.read();
      const deadline = Date.now() + 20_000;
      while (s.app.pipeline.liveRuns > 0 || s.app.admission.activeTotal > 0) {
        if (Date.now() > deadline)
          throw new Error("the run did not finish while its caller paused");
        await new Promise((r) => setTimeout(r, 20));
      }
      let text = "";
      const decoder = new TextDecoder();
      for (;;) {
        const n = await reader.read();
        if (n.done) break;
        text += decoder.decode(n.value, { stream: true });
      }
      const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
      expect(ids).toEqual(ids.map((_, i) => (ids[0] as number) + i));
      expect(text.match(/^event: agent$/gm)?.length).toBe(5000);
      expect(text).toContain("event: runner.exit");
    } finally {
      await s.stop();
    }
  });
});
