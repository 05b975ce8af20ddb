import { existsSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { AnyRequest, AnyResponse } from "../../src/transport/http-types.js";
import { warmUp } from "../../src/transport/warm-up.js";
import { capturedLog } from "../helpers/captured-log.js";
import { postRun } from "../helpers/sse-client.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** Listening sockets and connections this process holds (node's own resource names). */
function tcpHandles(): { servers: number; sockets: number } {
  const info = process.getActiveResourcesInfo();
  return {
    servers: info.filter((r) => r === "TCPServerWrap").length,
    sockets: info.filter((r) => r === "TCPSocketWrap").length,
  };
}

describe("start-up warm-up", () => {
  it("answers its requests by the checks before admission before the runner listens: nothing admitted, stored, counted or left open", async () => {
    const { logger, lines } = capturedLog("debug");
    server = await startTestServer({ FERMILINK_RUNNER_WARMUP_REQUESTS: "300" }, { logger });
    const msgs = lines.map((l) => l.msg);
    const warmed = lines.find((l) => l.msg === "warmed up");
    // A health check and two run requests refused by their contents, in turn.
    expect(warmed).toMatchObject({ requests: 300, failed: 0, statuses: { 200: 100, 422: 200 } });
    expect(msgs.indexOf("warmed up")).toBeLessThan(msgs.indexOf("runner listening"));
    // Nothing else was said about them: no warning, no run, no request logged.
    expect(lines.filter((l) => (l.level as number) >= 40 && l.msg !== undefined)).toEqual(
      lines.filter(
        (l) => (l.level as number) >= 40 && String(l.msg).includes("outside the tested"),
      ),
    );
    expect(lines.filter((l) => "runId" in l)).toEqual([]);
    const metrics = await (
      await fetch(`http://127.0.0.1:${server.app.metricsPort}/metrics`)
    ).text();
    expect(metrics).not.toMatch(/^fermilink_runner_admission_rejections_total\{[^}]*\} [1-9]/m);
    expect(metrics).not.toMatch(/^fermilink_runner_runs_started_total(\{[^}]*\})? [1-9]/m);
    expect(existsSync(path.join(server.workspacesRoot, "warm-up"))).toBe(false);
    expect(server.app.connectionCount).toBe(0);
    // The runner then serves as any other.
    const run = await postRun(server.baseUrl, { session_id: "after-warm-up", user_prompt: "hi" });
    expect(run.status).toBe(200);
    expect(run.events.at(-1)?.event).toBe("runner.exit");
    expect(JSON.parse(run.events.at(-1)?.data ?? "{}")).toMatchObject({ reason: "completed" });
  });

  it("with auth on, carries a token: its run requests reach the same checks (no 401)", async () => {
    const { logger, lines } = capturedLog("debug");
    server = await startTestServer(
      {
        FERMILINK_RUNNER_WARMUP_REQUESTS: "30",
        FERMILINK_RUNNER_AUTH_TOKENS: "user:alice:alice-token-0123456789",
      },
      { logger },
    );
    expect(lines.find((l) => l.msg === "warmed up")).toMatchObject({
      requests: 30,
      failed: 0,
      statuses: { 200: 10, 422: 20 },
    });
  });

  it("counts answers that are not what the checks give (a 5xx, a connection closed unanswered) as failed", async () => {
    let n = 0;
    const broken = await warmUp(
      (req, res) => {
        if (++n % 2 === 0) return void req.socket.destroy();
        res.writeHead(500);
        res.end();
      },
      { requests: 60 },
    );
    expect(broken).toMatchObject({ requests: 60, failed: 60, statuses: { 0: 30, 500: 30 } });
  });

  it("is bounded in time when nothing answers, and leaves no listener or connection behind", async () => {
    const before = tcpHandles();
    const silent = await warmUp(() => {}, { requests: 1000, maxMs: 300 });
    // Each of the 50 connections waited for its answer until the bound, and then none went on;
    // a loaded box is no fault.
    expect(silent).toMatchObject({ requests: 50, unfinished: 50, failed: 0, statuses: {} });
    await new Promise((r) => setImmediate(r));
    expect(tcpHandles()).toEqual(before);
  });

  it("leaves no garbage behind for the first run's collections: the heap is about as large after it as before", async () => {
    const handler = (_req: AnyRequest, res: AnyResponse) => {
      res.writeHead(200, { "content-length": 0 });
      res.end();
    };
    await warmUp(handler, { requests: 100 });
    const before = process.memoryUsage().heapUsed;
    const result = await warmUp(handler, { requests: 1000 });
    expect(result).toMatchObject({ requests: 1000, failed: 0 });
    // A full collection ends it (≈ 0.6 MB over, what came after it); without one, what its
    // 1,000 exchanges promoted stays: ≈ 5 MB over.
    expect(process.memoryUsage().heapUsed).toBeLessThan(before + 2 * 1024 * 1024);
  });

  it("stops at once when start-up is abandoned, its listener closed", async () => {
    const before = tcpHandles();
    const abort = new AbortController();
    let answered = 0;
    const result = await warmUp(
      (_req, res) => {
        if (++answered === 100) abort.abort();
        res.writeHead(200, { "content-length": 0 });
        res.end();
      },
      { requests: 100_000, signal: abort.signal },
    );
    // The ones already sent when it was aborted are answered; no new one goes.
    expect(result.requests).toBeGreaterThanOrEqual(100);
    expect(result.requests).toBeLessThan(200);
    expect(result.failed).toBe(0);
    await new Promise((r) => setImmediate(r));
    expect(tcpHandles()).toEqual(before);
  });
});
