import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log/logger.js";
import type { RunObserver, RunPipelineDeps } from "../../src/run/run-deps.js";
import { postRun, type SseResult } from "../helpers/sse-client.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/**
 * A log destination that fails the write of the line a run logs once its exit
 * event is out ("run ended"), as a stdout whose reader went away does (EPIPE):
 * pino writes synchronously, so the failure is thrown into the run.
 */
function failingAtRunEnded(): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      if (chunk.toString().includes('"msg":"run ended"')) throw new Error("EPIPE: log reader gone");
      done();
    },
  });
}

/**
 * The run's stream ended with exactly one exit, `completed`; its id, once the
 * producer (which finishes after the caller read the exit) let the run go.
 */
async function oneCompletedExit(app: TestServer["app"], run: SseResult): Promise<string> {
  const exits = run.events.filter((e) => e.event === "runner.exit");
  expect(exits.map((e) => JSON.parse(e.data).reason)).toEqual(["completed"]);
  const runId = JSON.parse(run.events.find((e) => e.event === "meta")?.data ?? "{}").run_id;
  for (let i = 0; i < 100 && app.pipeline.isLive(runId); i++)
    await new Promise((r) => setTimeout(r, 20));
  expect(app.pipeline.isLive(runId)).toBe(false);
  return runId;
}

describe("a run that fails after its exit event", () => {
  it("is counted in runs_ended once and streams one exit event", async () => {
    server = await startTestServer(
      { FERMILINK_RUNNER_SPARE_WORKSPACES: "0" },
      { logger: createLogger("info", failingAtRunEnded()) },
    );
    const app = server.app;
    const run = await postRun(server.baseUrl, { user_prompt: "fine" });
    const runId = await oneCompletedExit(app, run);
    // The stored run ends as the stream did: no second exit (of reason error) after the first.
    const stored = app.pipeline.getRun(runId, { userId: null });
    expect(stored).toMatchObject({ exitReason: "completed", succeeded: true });
    expect(stored.lastSeq).toBe(run.events.length);
    const metrics = await (await fetch(`http://127.0.0.1:${app.metricsPort}/metrics`)).text();
    const ended = [...metrics.matchAll(/^fermilink_runner_runs_ended_total\{[^}]*\} (\d+)$/gm)];
    expect(ended.map((m) => Number(m[1])).reduce((a, b) => a + b, 0)).toBe(1);
    expect(metrics).toMatch(
      /^fermilink_runner_runs_ended_total\{provider="codex",reason="completed"\} 1$/m,
    );
  });
});

describe("a run whose observer throws at its end", () => {
  it("still streams and stores its exit event", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_SPARE_WORKSPACES: "0" });
    const app = server.app;
    // The pipeline's observer is passed in (app.ts gives it the metrics): one that fails at the end.
    const deps = (app.pipeline as unknown as { deps: RunPipelineDeps }).deps;
    const ended: string[] = [];
    const throwing: RunObserver = {
      runStarted: () => {},
      runEnded: (_provider, reason) => {
        ended.push(reason);
        throw new Error("metrics backend gone");
      },
      readBack: () => {},
    };
    deps.observer = throwing;
    const run = await postRun(server.baseUrl, { user_prompt: "fine" });
    expect(ended).toEqual(["completed"]);
    const runId = await oneCompletedExit(app, run);
    expect(app.pipeline.getRun(runId, { userId: null })).toMatchObject({
      status: "finished",
      exitReason: "completed",
      succeeded: true,
      lastSeq: run.events.length,
    });
  });
});
