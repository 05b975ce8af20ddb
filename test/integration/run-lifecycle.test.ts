import { existsSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import http2 from "node:http2";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { workspaceFs } from "../../src/workspace/fs-batch/fs-batch.js";
import { SPARES_DIRNAME } from "../../src/workspace/spare-workspaces.js";
import { isAlive, waitUntilGone } from "../helpers/process-census.js";
import { parseSse, postRun, type SseEvent } from "../helpers/sse-client.js";
import { startGatedTestServer, startTestServer, type TestServer } from "../helpers/start-server.js";

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
    const spareDir = path.join(server.workspacesRoot, SPARES_DIRNAME, keyDir as string);
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
        body: JSON.stringify({ session_id: "slow", user_prompt: "#scenario=flood" }),
      });
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let text = "";
      for (;;) {
        const n = await reader.read();
        if (n.done) break;
        text += decoder.decode(n.value, { stream: true });
        await new Promise((r) => setTimeout(r, 5)); // slower than the provider prints
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
