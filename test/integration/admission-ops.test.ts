import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import path from "node:path";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { OpsService } from "../../gen/fermilink/runner/v1/ops_pb.js";
import { type RunEvent, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { Prng } from "../helpers/prng.js";
import { rawRequest } from "../helpers/raw-http.js";
import { parseSse, postRun, type SseEvent } from "../helpers/sse-client.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { until } from "../helpers/until.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** Start a slow SSE run and return once it is streaming; abort() ends it. */
async function holdSlot(s: TestServer, body: Record<string, unknown>) {
  const ac = new AbortController();
  const res = await fetch(`${s.baseUrl}/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_prompt: "#scenario=slow", ...body }),
    signal: ac.signal,
  });
  const it = parseSse(res.body as ReadableStream<Uint8Array>)[Symbol.asyncIterator]();
  return { ac, it, status: res.status };
}

describe("admission over the wire", () => {
  it("queues a caller (200 + comment lines on SSE), admits it when the slot frees, and 429s past the cap", async () => {
    server = await startTestServer({
      FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1",
      FERMILINK_RUNNER_MAX_QUEUE_SIZE: "1",
      FERMILINK_GEMINI_BIN: "/nonexistent/gemini",
    });
    const s = server;
    const first = await holdSlot(s, { user_id: "alice", session_id: "a1" });
    expect(first.status).toBe(200);
    await first.it.next();
    // The second caller waits: it gets its 200 at once and a queued comment.
    const comments: string[] = [];
    const res2 = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_prompt: "second", user_id: "bob", session_id: "b1" }),
    });
    expect(res2.status).toBe(200);
    const events2: SseEvent[] = [];
    const reading = (async () => {
      for await (const e of parseSse(res2.body as ReadableStream<Uint8Array>, (c) =>
        comments.push(c),
      ))
        events2.push(e);
    })();
    await until(() => s.app.admission.pendingTotal === 1, "one queued run");
    // Queue full: a third caller gets FermiLink's 429 at once.
    const third = await postRun(s.baseUrl, { user_prompt: "third", user_id: "carol" });
    expect(third.status).toBe(429);
    expect(JSON.parse(third.text).detail).toBe("Runner queue is full (1 pending requests).");
    // FermiLink's order: admission answers before setup, so a full queue is a 429 even while
    // the policy file selects a provider whose CLI is missing.
    const policyFile = path.join(s.home, "agent_runtime.json");
    await writeFile(policyFile, '{"provider": "gemini"}');
    const fourth = await postRun(s.baseUrl, { user_prompt: "fourth", user_id: "dave" });
    expect(fourth.status).toBe(429);
    await rm(policyFile);
    const ops = await (await fetch(`${s.baseUrl}/ops/concurrency`)).json();
    expect(ops).toMatchObject({
      active_total: 1,
      pending_total: 1,
      global_limit: 1,
      queue_capacity: 1,
      queue_utilization: 1,
    });
    const bob = await (await fetch(`${s.baseUrl}/ops/admission?user_id=Bob`)).json();
    expect(bob).toMatchObject({ user_key: "user:bob", can_run_now: false, per_user_pending: 1 });
    first.ac.abort();
    await reading;
    expect(comments).toContain("queued 1/1");
    expect(events2[0]?.event).toBe("meta");
    expect(JSON.parse(events2.at(-1)?.data ?? "{}").reason).toBe("completed");
  });

  it("removes a queued caller that leaves, at once, and never leaks its slot", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1" });
    const s = server;
    const holder = await holdSlot(s, { user_id: "alice", session_id: "h" });
    await holder.it.next();
    for (let i = 0; i < 5; i++) {
      const waiter = await holdSlot(s, { user_id: "bob", session_id: `w${i}` });
      expect(waiter.status).toBe(200);
      await until(() => s.app.admission.pendingTotal === 1, "one queued run");
      waiter.ac.abort();
      await until(() => s.app.admission.pendingTotal === 0, "an empty queue");
    }
    holder.ac.abort();
    await until(
      () => s.app.admission.activeTotal === 0 && s.app.pipeline.liveRuns === 0,
      "no run left",
    );
    const after = await postRun(s.baseUrl, { user_prompt: "after", user_id: "bob" });
    expect(JSON.parse(after.events.at(-1)?.data ?? "{}").reason).toBe("completed");
  });

  it("tells a waiter its new place in the turn the queue moved, before the run admitted ahead of it ends", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1" });
    const s = server;
    const client = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    const holder = await holdSlot(s, { session_id: "moves-holder" });
    await holder.it.next();
    const follow = (sessionId: string) => {
      const seen: RunEvent[] = [];
      const done = (async () => {
        for await (const ev of client.run({ userPrompt: "quick", sessionId })) seen.push(ev);
      })();
      return { seen, done };
    };
    const next = follow("moves-next");
    await until(() => next.seen.length > 0, "the first waiter's queued event");
    const last = follow("moves-last");
    await until(() => last.seen.length > 0, "the second waiter's queued event");
    // The slot frees right after the second waiter queued: a report on a timer started then
    // (1 s) would come long after the quick run admitted ahead of it has ended.
    holder.ac.abort();
    await Promise.all([next.done, last.done]);
    const queued = last.seen.flatMap((ev) =>
      ev.event.case === "queued" ? [[ev.event.value.position, ev.event.value.queueSize]] : [],
    );
    expect(queued).toEqual([
      [2, 2],
      [1, 1],
    ]);
    const at = (ev: RunEvent | undefined) => (ev?.time ? timestampMs(ev.time) : Number.NaN);
    const moved = at(
      last.seen.find((ev) => ev.event.case === "queued" && ev.event.value.position === 1),
    );
    const nextExit = next.seen.at(-1);
    expect(nextExit?.event.case).toBe("exit");
    expect(moved).toBeLessThanOrEqual(at(nextExit));
  });

  it("sends queued events on the Connect face and resource_exhausted when full", async () => {
    server = await startTestServer({
      FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1",
      FERMILINK_RUNNER_MAX_QUEUE_SIZE: "1",
    });
    const s = server;
    const client = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    const holder = await holdSlot(s, { session_id: "h2" });
    await holder.it.next();
    const seen: RunEvent[] = [];
    const waiting = (async () => {
      for await (const ev of client.run({ userPrompt: "queued one", sessionId: "q" }))
        seen.push(ev);
    })();
    await until(() => seen.length > 0, "a first event");
    expect(seen[0]?.event.case).toBe("queued");
    const err = await (async () => {
      for await (const _ of client.run({ userPrompt: "overflow" })) {
      }
    })().catch((e: unknown) => ConnectError.from(e));
    expect(err?.code).toBe(Code.ResourceExhausted);
    holder.ac.abort();
    await waiting;
    expect(seen.map((e) => e.event.case).slice(0, 2)).toEqual(["queued", "meta"]);
    expect(seen.at(-1)?.event.case).toBe("exit");
  });
});

describe("ops endpoints and metrics", () => {
  it("counts an admitted run that fails before its first event in runs_ended, as a queued one", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1" });
    const s = server;
    // A session whose workspace cannot be prepared: a run on it fails after taking its slot.
    await mkdir(path.join(s.workspacesRoot, "broken"), { recursive: true });
    await writeFile(path.join(s.workspacesRoot, "broken", "repo"), "not a directory");
    // Admitted at once: it fails before any event, so the caller gets a status, not a stream.
    const atOnce = await postRun(s.baseUrl, { user_prompt: "at once", session_id: "broken" });
    expect(atOnce.status).toBe(500);
    expect(JSON.parse(atOnce.text).code).toBe("WORKSPACE_SETUP_FAILED");
    // Queued first: the same failure comes after its `queued` event, as an exit of reason error.
    const holder = await holdSlot(s, { session_id: "holder" });
    // Its meta, then its provider's first line: the provider started.
    await holder.it.next();
    await holder.it.next();
    const queued = postRun(s.baseUrl, { user_prompt: "queued", session_id: "broken" });
    await until(() => s.app.admission.pendingTotal === 1, "one queued run");
    holder.ac.abort();
    const late = await queued;
    expect(late.comments).toContain("queued 1/1");
    expect(JSON.parse(late.events.at(-1)?.data ?? "{}").reason).toBe("error");
    await until(() => s.app.pipeline.liveRuns === 0, "every run ended");
    const metrics = await (await fetch(`http://127.0.0.1:${s.app.metricsPort}/metrics`)).text();
    // Both failed runs ended in an error, the holder as its caller left: each counted once, and
    // only the holder's provider started.
    expect(metrics).toMatch(
      /^fermilink_runner_runs_ended_total\{provider="codex",reason="error"\} 2$/m,
    );
    expect(metrics).toMatch(
      /^fermilink_runner_runs_ended_total\{provider="codex",reason="client_gone"\} 1$/m,
    );
    const ended = [...metrics.matchAll(/^fermilink_runner_runs_ended_total\{[^}]*\} (\d+)$/gm)];
    expect(ended.reduce((sum, m) => sum + Number(m[1]), 0)).toBe(3);
    expect(metrics).toMatch(/^fermilink_runner_runs_started_total\{provider="codex"\} 1$/m);
    expect(metrics).toMatch(/^runner_active_runs 0$/m);
  });

  it("counts streamed bytes in UTF-8: SSE the frames as written, Connect the provider lines", async () => {
    server = await startTestServer();
    const s = server;
    const streamedBytes = async (face: string) => {
      const text = await (await fetch(`http://127.0.0.1:${s.app.metricsPort}/metrics`)).text();
      const m = new RegExp(
        `^fermilink_runner_streamed_bytes_total\\{face="${face}"\\} (\\d+)$`,
        "m",
      ).exec(text);
      return Number(m?.[1] ?? 0);
    };
    // CJK and emoji lines (3 and 4 bytes a character in UTF-8, 1 and 2 UTF-16 units).
    const res = await fetch(`${s.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: "wide-sse", user_prompt: "#scenario=multibyte-lines" }),
    });
    const body = Buffer.from(await res.arrayBuffer());
    expect(body.toString("utf8")).toContain("漢漢漢");
    expect(await streamedBytes("sse")).toBe(body.length);

    let lineBytes = 0;
    const client = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    for await (const ev of client.run({
      sessionId: "wide-grpc",
      userPrompt: "#scenario=multibyte-lines",
    })) {
      if (ev.event.case === "agent") lineBytes += Buffer.byteLength(ev.event.value.raw);
      if (ev.event.case === "log") lineBytes += Buffer.byteLength(ev.event.value.text);
    }
    expect(lineBytes).toBeGreaterThan(1024 * 1024);
    expect(await streamedBytes("connect")).toBe(lineBytes);
  });

  it("guards every ops route and OpsService with the metrics token (401 missing, 403 wrong)", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_METRICS_TOKEN: "s3cret" });
    const base = server.baseUrl;
    for (const p of ["/ops/concurrency", "/ops/concurrency.prom", "/ops/admission?user_id=x"]) {
      const missing = await fetch(`${base}${p}`);
      expect(missing.status).toBe(401);
      expect(((await missing.json()) as { detail: string }).detail).toBe(
        "Missing X-Runner-Metrics-Token.",
      );
      const wrong = await fetch(`${base}${p}`, { headers: { "x-runner-metrics-token": "nope" } });
      expect(wrong.status).toBe(403);
      expect(((await wrong.json()) as { detail: string }).detail).toBe(
        "Invalid X-Runner-Metrics-Token.",
      );
      const ok = await fetch(`${base}${p}`, { headers: { "x-runner-metrics-token": " s3cret " } });
      expect(ok.status).toBe(200);
      await ok.text();
    }
    const metricsUrl = `http://127.0.0.1:${server.app.metricsPort}/metrics`;
    expect((await fetch(metricsUrl)).status).toBe(401);
    expect((await fetch(metricsUrl, { headers: { authorization: "Bearer s3cret" } })).status).toBe(
      200,
    );
    // A blank token header does not hide the bearer token beside it.
    const both = { authorization: "Bearer s3cret", "x-runner-metrics-token": "" };
    expect((await fetch(metricsUrl, { headers: both })).status).toBe(200);
    const ops = createClient(
      OpsService,
      createConnectTransport({ baseUrl: base, httpVersion: "1.1" }),
    );
    const noToken = await ops.getConcurrency({}).catch((e: unknown) => ConnectError.from(e));
    expect(noToken).toMatchObject({ code: Code.Unauthenticated });
    const badToken = await ops
      .getConcurrency({}, { headers: { "x-runner-metrics-token": "x" } })
      .catch((e: unknown) => ConnectError.from(e));
    expect(badToken).toMatchObject({ code: Code.PermissionDenied });
    const good = await ops.getAdmission(
      { userId: "", sessionId: "S1" },
      { headers: { "x-runner-metrics-token": "s3cret" } },
    );
    expect(good).toMatchObject({
      userKey: "session:s1",
      canRunNow: true,
      globalLimit: 200,
      perUserLimit: 10,
    });
  });

  it("reads the first of repeated token headers, as Starlette does (node joins them as 'a, a')", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_METRICS_TOKEN: "s3cret" });
    const { port, metricsPort } = server.app;
    const token = (...values: string[]): [string, string][] =>
      values.map((v) => ["X-Runner-Metrics-Token", v]);
    const status = async (p: number, target: string, headers: [string, string][]) =>
      (await rawRequest(p, "GET", target, headers)).status;
    for (const target of ["/ops/concurrency", "/ops/concurrency.prom", "/ops/admission"]) {
      expect(await status(port, target, token("s3cret", "s3cret"))).toBe(200);
      expect(await status(port, target, token("s3cret", "wrong"))).toBe(200);
      expect(await status(port, target, token("wrong", "s3cret"))).toBe(403);
    }
    // The metrics listener: the token header, and the bearer token (node already keeps the first
    // Authorization; the guard reads the first too).
    expect(await status(metricsPort, "/metrics", token("s3cret", "s3cret"))).toBe(200);
    expect(await status(metricsPort, "/metrics", token("wrong", "s3cret"))).toBe(403);
    const bearer = (...values: string[]): [string, string][] =>
      values.map((v) => ["Authorization", `Bearer ${v}`]);
    expect(await status(metricsPort, "/metrics", bearer("s3cret", "wrong"))).toBe(200);
    expect(await status(metricsPort, "/metrics", bearer("wrong", "s3cret"))).toBe(403);
    // OpsService through connect-node (Connect JSON), whose own header object joins repeats too.
    const rpc = (headers: [string, string][]) =>
      rawRequest(
        port,
        "POST",
        `/${OpsService.typeName}/GetConcurrency`,
        [["Content-Type", "application/json"], ...headers],
        "{}",
      );
    expect((await rpc(token("s3cret", "s3cret"))).status).toBe(200);
    const denied = await rpc(token("wrong", "s3cret"));
    expect(JSON.parse(denied.body)).toMatchObject({ code: "permission_denied" });
    // Over HTTP/2 a header can be repeated as well.
    const session = http2.connect(server.baseUrl);
    try {
      const h2Status = await new Promise((resolve, reject) => {
        const stream = session.request({
          ":path": "/ops/concurrency",
          "x-runner-metrics-token": ["s3cret", "s3cret"],
        });
        stream.on("response", (h) => resolve(h[":status"]));
        stream.on("error", reject);
        stream.resume();
      });
      expect(h2Status).toBe(200);
    } finally {
      session.close();
    }
  });

  it("strips the token header as Python does: a trailing byte 0x85 (NEL) is whitespace", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_METRICS_TOKEN: "s3cret" });
    const { port, metricsPort } = server.app;
    // node's client writes header values as latin-1, so U+0085 goes as the one byte 0x85.
    const status = (p: number, target: string, value: string) =>
      new Promise<number | undefined>((resolve, reject) => {
        http
          .get(
            {
              host: "127.0.0.1",
              port: p,
              path: target,
              headers: { "x-runner-metrics-token": value },
            },
            (res) => {
              res.resume();
              resolve(res.statusCode);
            },
          )
          .on("error", reject);
      });
    for (const [p, target] of [
      [port, "/ops/concurrency"],
      [metricsPort, "/metrics"],
    ] as const) {
      expect(await status(p, target, "s3cret\x85")).toBe(200);
      expect(await status(p, target, "\x85")).toBe(401);
    }
  });

  it("writes /ops/concurrency and its .prom text byte for byte as FermiLink does, ratios as Python floats", async () => {
    server = await startTestServer();
    const json = await (await fetch(`${server.baseUrl}/ops/concurrency`)).text();
    // FastAPI: compact JSON; Python floats keep ".0"; isoformat() has microseconds and "Z".
    expect(json).toMatch(
      /^\{"active_total":0,"global_limit":200,"global_utilization":0\.0,"pending_total":0,"queue_bounded":true,"queue_capacity":2000,"queue_utilization":0\.0,"per_user_limit":10,"timestamp_utc":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"\}$/,
    );
    const prom = await (await fetch(`${server.baseUrl}/ops/concurrency.prom`)).text();
    expect(prom).toBe(
      [
        "# HELP runner_active_runs Active admitted runs in this runner process.",
        "# TYPE runner_active_runs gauge",
        "runner_active_runs 0",
        "# HELP runner_global_run_limit Configured global active-run limit.",
        "# TYPE runner_global_run_limit gauge",
        "runner_global_run_limit 200",
        "# HELP runner_global_run_utilization Active/global limit ratio.",
        "# TYPE runner_global_run_utilization gauge",
        "runner_global_run_utilization 0.0",
        "# HELP runner_pending_runs Number of runs waiting in the admission queue.",
        "# TYPE runner_pending_runs gauge",
        "runner_pending_runs 0",
        "# HELP runner_per_user_run_limit Configured per-user active-run limit.",
        "# TYPE runner_per_user_run_limit gauge",
        "runner_per_user_run_limit 10",
        "# HELP runner_queue_bounded Whether queue capacity is bounded (1) or unbounded (0).",
        "# TYPE runner_queue_bounded gauge",
        "runner_queue_bounded 1",
        "# HELP runner_queue_capacity Configured max number of pending queued runs.",
        "# TYPE runner_queue_capacity gauge",
        "runner_queue_capacity 2000",
        "# HELP runner_queue_utilization Pending/queue capacity ratio.",
        "# TYPE runner_queue_utilization gauge",
        "runner_queue_utilization 0.0",
        "",
      ].join("\n"),
    );
  });

  it("leaves the queue capacity and utilization out when the queue is unbounded, on /ops and /metrics", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_MAX_QUEUE_SIZE: "0" });
    const prom = await (await fetch(`${server.baseUrl}/ops/concurrency.prom`)).text();
    const metrics = await (
      await fetch(`http://127.0.0.1:${server.app.metricsPort}/metrics`)
    ).text();
    for (const text of [prom, metrics]) {
      expect(text).toMatch(/^runner_queue_bounded 0$/m);
      // A sample of 0 would read as an empty queue of no capacity.
      expect(text).not.toMatch(/^runner_queue_(capacity|utilization)\b.* \S+$/m);
    }
  });

  it("serves FermiLink's prom text on /ops and valid Prometheus exposition on the metrics port", async () => {
    server = await startTestServer();
    const run = await postRun(server.baseUrl, { user_prompt: "count me" });
    const agentFrames = run.events.filter((e) => e.event === "agent").length;
    expect(agentFrames).toBeGreaterThan(1);
    const prom = await fetch(`${server.baseUrl}/ops/concurrency.prom`);
    expect(prom.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    const text = await prom.text();
    const names = [...text.matchAll(/^# TYPE (\S+) gauge$/gm)].map((m) => m[1]);
    expect(names).toEqual([
      "runner_active_runs",
      "runner_global_run_limit",
      "runner_global_run_utilization",
      "runner_pending_runs",
      "runner_per_user_run_limit",
      "runner_queue_bounded",
      "runner_queue_capacity",
      "runner_queue_utilization",
    ]);
    expect(text.endsWith("\n")).toBe(true);
    const metrics = await (
      await fetch(`http://127.0.0.1:${server.app.metricsPort}/metrics`)
    ).text();
    expect(metrics).toMatch(/^fermilink_runner_runs_started_total\{provider="codex"\} 1$/m);
    expect(metrics).toMatch(
      /^fermilink_runner_runs_ended_total\{provider="codex",reason="completed"\} 1$/m,
    );
    expect(metrics).toMatch(/^runner_active_runs 0$/m);
    // Both scopes are there before the first refusal, so rate() sees that one too.
    expect(metrics).toMatch(/^fermilink_runner_admission_rejections_total\{scope="user"\} 0$/m);
    expect(metrics).toMatch(/^fermilink_runner_admission_rejections_total\{scope="global"\} 0$/m);
    // So are the run counters of every provider (and end reason), not only of those that ran.
    expect(metrics).toMatch(/^fermilink_runner_runs_started_total\{provider="gemini"\} 0$/m);
    expect(metrics).toMatch(
      /^fermilink_runner_runs_ended_total\{provider="codex",reason="timeout"\} 0$/m,
    );
    expect(metrics).toMatch(
      /^fermilink_runner_runs_ended_total\{provider="opencode",reason="retries_exhausted"\} 0$/m,
    );
    expect(metrics).toMatch(
      /^fermilink_runner_events_streamed_total\{face="sse",type="meta"\} 1$/m,
    );
    expect(metrics).toMatch(
      /^fermilink_runner_events_streamed_total\{face="sse",type="exit"\} 1$/m,
    );
    // Counted per written batch, so every frame is in, once.
    expect(metrics).toMatch(
      new RegExp(
        `^fermilink_runner_events_streamed_total\\{face="sse",type="agent"\\} ${agentFrames}$`,
        "m",
      ),
    );
    expect(metrics).toMatch(
      /^fermilink_runner_time_to_first_event_seconds_count\{face="sse"\} 1$/m,
    );
    expect(metrics).toMatch(/^fermilink_runner_streamed_bytes_total\{face="sse"\} [1-9]\d*$/m);
    expect(metrics).toContain("process_cpu_seconds_total");
    const promtool = "/usr/bin/promtool";
    if (existsSync(promtool) || process.env.CI) {
      const result = await new Promise<{ code: number; out: string }>((resolve) => {
        const child = execFile(promtool, ["check", "metrics"], (err, stdout, stderr) =>
          resolve({ code: err ? 1 : 0, out: `${stdout}${stderr}` }),
        );
        child.stdin?.end(metrics);
      });
      // The exposition must parse; lint remarks may only concern prom-client's own default
      // gauges (nodejs_active_*_total), which are not ours to rename.
      expect(result.out).not.toContain("parsing error");
      const remarks = result.out.split("\n").filter((l) => l.trim() !== "");
      expect(remarks.filter((l) => !l.startsWith("nodejs_active_"))).toEqual([]);
    }
  });
});

describe("admission under random departures", () => {
  /**
   * Callers over SSE, Connect (HTTP/1.1) and gRPC (HTTP/2) leave at random
   * points (before the answer, while queued for a slot or for their session,
   * while the workspace is prepared or fails, while running) or read to the
   * end, under tight limits. Whatever the mix, every slot and queue place
   * comes back: the ops routes and the metrics gauges read zero for every
   * key, the rejection counter has every refusal a caller saw (once), and
   * each key can run again at once.
   */
  it("gives back every slot and queue place, as /ops and /metrics report", async () => {
    const seed = Number(process.env.ADMISSION_CHAOS_SEED || 20_250_117);
    const rng = new Prng(seed);
    server = await startTestServer({
      FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "3",
      FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS: "2",
      FERMILINK_RUNNER_MAX_QUEUE_SIZE: "4",
      FERMILINK_RUNNER_MAX_PENDING_PER_USER: "2",
    });
    const s = server;
    // A session whose workspace cannot be prepared: the run fails after it took its slot.
    await mkdir(path.join(s.workspacesRoot, "broken"), { recursive: true });
    await writeFile(path.join(s.workspacesRoot, "broken", "repo"), "not a directory");
    const users = ["Alice", " alice", "ALICE\t", "bob", "Bob ", "carol", null, "", "  "];
    const sharedSessions = ["shared-1", "shared-2", "broken"];
    const connect = createClient(
      RunService,
      createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1" }),
    );
    const grpc = createClient(RunService, createGrpcTransport({ baseUrl: s.baseUrl }));
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.next() * xs.length)] as T;
    let refusals = 0;
    let leftUnanswered = 0;
    let leftQueued = 0;
    const problems: string[] = [];
    const sessionsUsed = new Set<string>();
    const callers = Array.from({ length: 36 }, async (_, i) => {
      const face = pick(["sse", "connect", "grpc"] as const);
      const user = pick(users);
      const sessionId = rng.next() < 0.4 ? pick(sharedSessions) : `own-${i}`;
      sessionsUsed.add(sessionId);
      // A slow run is always left: it would hold its slot for a minute.
      const scenario = pick(["quick", "sleep-1s", "slow"] as const);
      const leave =
        scenario === "slow" || rng.next() < 0.7
          ? {
              afterMs: Math.floor(rng.next() ** 2 * 3000),
              afterEvents: Math.floor(rng.next() * 4),
            }
          : null;
      const jitterMs = Math.floor(rng.next() * 1000);
      const prompt = scenario === "quick" ? `caller ${i}` : `#scenario=${scenario}`;
      await new Promise((r) => setTimeout(r, jitterMs));
      const ac = new AbortController();
      const timer = leave ? setTimeout(() => ac.abort(), leave.afterMs) : undefined;
      let seen = 0;
      /** The server's answer arrived (a status on SSE, a first message or an error on Connect). */
      let answered = false;
      /** The caller's last event was a `queued` one: it is waiting for a slot or its session. */
      let queued = false;
      const onEvent = (kind: string) => {
        answered = true;
        queued = kind.startsWith("queued");
        seen++;
        if (leave && seen >= leave.afterEvents) ac.abort();
      };
      const where = `#${i} ${face} ${JSON.stringify(user)} ${sessionId} ${scenario}`;
      try {
        if (face === "sse") {
          const res = await fetch(`${s.baseUrl}/run`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ user_prompt: prompt, user_id: user, session_id: sessionId }),
            signal: ac.signal,
          });
          answered = true;
          if (res.status === 429) refusals++;
          if (res.status !== 200) {
            const detail = (await res.json()) as { code: string };
            if (res.status !== 429 && detail.code !== "WORKSPACE_SETUP_FAILED")
              problems.push(`${where}: ${res.status} ${JSON.stringify(detail)}`);
            return;
          }
          // Raced with the abort: Node 20's fetch never settles a body read when the abort
          // comes after the last chunk arrived but before the read that would say done.
          const gone = new Promise<never>((_, reject) =>
            ac.signal.addEventListener("abort", () => reject(ac.signal.reason), { once: true }),
          );
          gone.catch(() => {});
          const events = parseSse(res.body as ReadableStream<Uint8Array>, onEvent);
          for (let n = await Promise.race([events.next(), gone]); !n.done; ) {
            onEvent(n.value.event);
            n = await Promise.race([events.next(), gone]);
          }
        } else {
          const client = face === "connect" ? connect : grpc;
          const req = { userPrompt: prompt, userId: user ?? "", sessionId };
          for await (const ev of client.run(req, { signal: ac.signal }))
            onEvent(ev.event.case ?? "");
        }
      } catch (err) {
        if (ac.signal.aborted) {
          if (!answered) leftUnanswered++;
          if (queued) leftQueued++;
          return;
        }
        const ce = ConnectError.from(err);
        if (ce.code === Code.ResourceExhausted) refusals++;
        else if (!(ce.code === Code.Internal && /workspace/i.test(ce.message)))
          problems.push(`${where}: ${ce.code} ${ce.message}`);
      } finally {
        clearTimeout(timer);
      }
    });
    await Promise.all(callers);
    console.log(
      `admission chaos seed ${seed}: ${JSON.stringify({ refusals, leftQueued, leftUnanswered })}`,
    );
    expect(problems, `ADMISSION_CHAOS_SEED=${seed}`).toEqual([]);
    await until(() => s.app.pipeline.liveRuns === 0, "every run ended", 30_000);

    const concurrency = await (await fetch(`${s.baseUrl}/ops/concurrency`)).json();
    expect(concurrency).toMatchObject({
      active_total: 0,
      pending_total: 0,
      global_utilization: 0,
      queue_utilization: 0,
    });
    const keys = [
      ...users.filter((u) => u?.trim()).map((u) => `user_id=${encodeURIComponent(u ?? "")}`),
      ...[...sessionsUsed].map((id) => `session_id=${id}`),
    ];
    for (const q of keys) {
      const a = await (await fetch(`${s.baseUrl}/ops/admission?${q}`)).json();
      expect(a, q).toMatchObject({ can_run_now: true, per_user_active: 0, per_user_pending: 0 });
    }
    const metrics = await (await fetch(`http://127.0.0.1:${s.app.metricsPort}/metrics`)).text();
    const sample = (name: string) => {
      const values = [...metrics.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))];
      return values.reduce((sum, m) => sum + Number(m[1]), 0);
    };
    expect(sample("runner_active_runs")).toBe(0);
    expect(sample("runner_pending_runs")).toBe(0);
    expect(sample("runner_global_run_utilization")).toBe(0);
    expect(sample("runner_queue_utilization")).toBe(0);
    // Every refusal a caller saw was counted once; a caller that left before its answer may
    // have been refused unseen.
    const rejections = sample("fermilink_runner_admission_rejections_total");
    expect(rejections, `seed ${seed}`).toBeGreaterThanOrEqual(refusals);
    expect(rejections, `seed ${seed}`).toBeLessThanOrEqual(refusals + leftUnanswered);
    // Each key runs again at once: no slot or queue place was left counted against it.
    const again = await postRun(s.baseUrl, { user_prompt: "after", user_id: "ALICE" });
    expect(again.comments.filter((c) => c.startsWith("queued"))).toEqual([]);
    expect(JSON.parse(again.events.at(-1)?.data ?? "{}").reason).toBe("completed");
  }, 90_000);
});
