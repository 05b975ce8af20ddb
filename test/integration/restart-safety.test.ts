import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  ExitReason,
  type RunEvent,
  RunService,
  RunStatus,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import { NODE_START_FLAGS } from "../../src/cli/v8-tuning.js";
import { MAX_UNSTORED_SHOWN } from "../../src/journal/run-journal.js";
import { SqliteRunStore } from "../../src/journal/sqlite-run-store.js";
import { RUN_ID_ENV } from "../../src/process/reap-orphans.js";
import { isAlive, killQuietly, readPidFile, waitUntilGone } from "../helpers/process-census.js";
import { runRecord } from "../helpers/run-record.js";
import { lastData, parseSse, postRun, startSseRun } from "../helpers/sse-client.js";
import { BUILT_MAIN, FAKE_AGENT } from "../helpers/start-server.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
let home: string;
const children: ChildProcess[] = [];
/** Process groups a test started as a dead runner's providers (detached: group id = pid). */
const orphans: number[] = [];

beforeEach(async () => {
  home = await mkdtemp(path.join(tmpdir(), "flr-restart-"));
});
afterEach(async () => {
  for (const pid of orphans.splice(0)) killQuietly(-pid);
  for (const c of children.splice(0))
    if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await rm(home, { recursive: true, force: true });
});

/** `npm start`'s command as a real server process on a random port; resolves with its port. */
async function startServer(env: Record<string, string> = {}): Promise<{
  proc: ChildProcess;
  port: number;
  exited: Promise<unknown>;
}> {
  const proc = spawn(process.execPath, [...NODE_START_FLAGS, BUILT_MAIN], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? "",
      HOME: home,
      FERMILINK_HOME: home,
      FERMILINK_CODEX_BIN: FAKE_AGENT,
      FERMILINK_RUNNER_PORT: "0",
      FERMILINK_RUNNER_METRICS_PORT: "0",
      FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "0",
      FERMILINK_RUNNER_KILL_GRACE_SECONDS: "1",
      // Not the default 200, made before the server listens (seconds on a loaded box): no test
      // here is about them.
      FERMILINK_RUNNER_SPARE_WORKSPACES: "2",
      FERMILINK_RUNNER_WARMUP_REQUESTS: "0",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(proc);
  const exited = new Promise((resolve) => proc.once("exit", resolve));
  let out = "";
  proc.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  proc.stderr?.resume();
  for (let i = 0; i < 300; i++) {
    const match = /"port":(\d+)/.exec(out);
    if (match) return { proc, port: Number(match[1]), exited };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`server did not start: ${out}`);
}

/** Start a detached run that leaves a grandchild, read a few events, then kill -9 the server. */
async function crashMidRun(env: Record<string, string>) {
  const first = await startServer(env);
  const res = await fetch(`http://127.0.0.1:${first.port}/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      session_id: "crash",
      user_prompt: "#scenario=grandchild",
      detach: true,
    }),
  });
  let runId = "";
  let agentFrames = 0;
  for await (const ev of parseSse(res.body as ReadableStream<Uint8Array>)) {
    if (ev.event === "meta") runId = JSON.parse(ev.data).run_id;
    if (ev.event === "agent" && ++agentFrames === 3) break;
  }
  const repo = path.join(home, "workspaces", "crash", "repo", ".fake-agent");
  const provider = JSON.parse(await readFile(path.join(repo, "invocation.json"), "utf8"))
    .pid as number;
  const grandchild = await readPidFile(path.join(repo, "grandchild.pid"));
  // Let a batch of ticks reach the store, then kill the server without any chance to clean up.
  await new Promise((r) => setTimeout(r, 300));
  first.proc.kill("SIGKILL");
  await first.exited;
  return { runId, provider, grandchild };
}

/** A run's final exit, as Attach gives it. */
async function exitOfRun(port: number, runId: string) {
  const client = createClient(
    RunService,
    createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1" }),
  );
  const events: RunEvent[] = [];
  for await (const e of client.attach({ runId })) events.push(e);
  const last = events.at(-1)?.event;
  return last?.case === "exit" ? last.value : undefined;
}

describe("restart safety", () => {
  it("after kill -9 mid-run, a restart reports the run interrupted, keeps its events and leaves no provider", async () => {
    // Without the spawn helper the providers outlive the crash: the restart must find them.
    const { runId, provider, grandchild } = await crashMidRun({
      FERMILINK_RUNNER_SPAWN_HELPER: "0",
    });
    expect(isAlive(provider)).toBe(true);
    expect(isAlive(grandchild)).toBe(true);

    const second = await startServer();
    await waitUntilGone([provider, grandchild], 5000);
    const client = createClient(
      RunService,
      createConnectTransport({ baseUrl: `http://127.0.0.1:${second.port}`, httpVersion: "1.1" }),
    );
    const info = await client.getRun({ runId });
    expect(info.status).toBe(RunStatus.FINISHED);
    expect(info.exitReason).toBe(ExitReason.INTERRUPTED);
    const events: RunEvent[] = [];
    for await (const e of client.attach({ runId })) events.push(e);
    // The stored events without a gap, then the exit past anything a viewer can have been shown.
    const stored = events.slice(0, -1).map((e) => Number(e.seq));
    expect(stored).toEqual(stored.map((_, i) => i + 1));
    const storedLast = stored.at(-1) ?? 0;
    const exitSeq = storedLast + MAX_UNSTORED_SHOWN + 1;
    expect(Number(events.at(-1)?.seq)).toBe(exitSeq);
    expect(Number(info.lastSeq)).toBe(exitSeq);
    expect(events[0]?.event.case).toBe("meta");
    expect(events.filter((e) => e.event.case === "agent").length).toBeGreaterThanOrEqual(3);
    const exit = events.at(-1)?.event;
    expect(exit?.case === "exit" && exit.value.reason).toBe(ExitReason.INTERRUPTED);
    expect(exit?.case === "exit" && exit.value.killedByRunner).toBe(true);

    // A viewer the dead runner had shown events it never stored (up to MAX_UNSTORED_SHOWN - 1
    // of them) resumes after the last one it saw, and still gets the run's end.
    const beyond = storedLast + MAX_UNSTORED_SHOWN - 1;
    const resumed = await fetch(`http://127.0.0.1:${second.port}/runs/${runId}/events`, {
      headers: { "last-event-id": String(beyond) },
    });
    expect(resumed.status).toBe(200);
    const frames = [];
    for await (const ev of parseSse(resumed.body as ReadableStream<Uint8Array>)) frames.push(ev);
    expect(frames.map((f) => [f.event, Number(f.id)])).toEqual([["runner.exit", exitSeq]]);
    const attached: RunEvent[] = [];
    for await (const e of client.attach({ runId, afterSeq: BigInt(beyond) })) attached.push(e);
    expect(attached.map((e) => [e.event.case, Number(e.seq)])).toEqual([["exit", exitSeq]]);
    // Once it has the exit, its next reconnect is told to stop.
    const over = await fetch(`http://127.0.0.1:${second.port}/runs/${runId}/events`, {
      headers: { "last-event-id": String(exitSeq) },
    });
    expect(over.status).toBe(204);

    second.proc.kill("SIGTERM");
    expect(await second.exited).toBe(0);
  });

  it("with the spawn helper, kill -9 of the runner ends its providers at once, before any restart", async () => {
    const { runId, provider, grandchild } = await crashMidRun({});
    await waitUntilGone([provider, grandchild], 5000);
    // Nothing is left to find, but the run printed: its provider ran, and died with the runner.
    const second = await startServer();
    const exit = await exitOfRun(second.port, runId);
    expect(exit).toMatchObject({ reason: ExitReason.INTERRUPTED, killedByRunner: true });
    expect(exit?.message).toMatch(/the provider had ended when the runner started again/);
    second.proc.kill("SIGTERM");
    expect(await second.exited).toBe(0);
  });

  it("says the runner killed a provider only for runs whose processes the restart found", async () => {
    // What a runner killed -9 left: two runs whose start (meta) was stored, one with a provider
    // still running, the other dead between that write and its spawn (no process ever ran).
    const store = new SqliteRunStore(path.join(home, "runner", "runs.sqlite3"));
    for (const runId of ["orphaned", "unstarted"]) {
      store.createRun(runRecord(runId, { userId: null, createdAtMs: Date.now() }));
      store.appendEvents(runId, [
        {
          runId,
          seq: 1,
          timeMs: Date.now(),
          body: {
            type: "meta",
            sessionId: "s",
            agent: runRecord(runId).policy,
            workspacePath: "/w",
            package: null,
          },
        },
      ]);
      store.updateRun(runId, { status: "running", startedAtMs: Date.now() });
    }
    await store.close();
    const provider = spawn("/bin/sh", ["-c", "sleep 60 & wait"], {
      env: { PATH: process.env.PATH ?? "", [RUN_ID_ENV]: "orphaned" },
      detached: true,
      stdio: "ignore",
    });
    provider.unref();
    const pid = provider.pid ?? -1;
    expect(pid).toBeGreaterThan(0);
    orphans.push(pid);

    const second = await startServer();
    await waitUntilGone([pid], 5000);
    const unstarted = await exitOfRun(second.port, "unstarted");
    expect(unstarted).toMatchObject({ reason: ExitReason.INTERRUPTED, killedByRunner: false });
    expect(unstarted?.message).toMatch(
      /no provider process of it was found when the runner started again: the runner stopped before starting the provider/,
    );
    expect(unstarted?.message).not.toMatch(/killed/);
    const found = await exitOfRun(second.port, "orphaned");
    expect(found).toMatchObject({ reason: ExitReason.INTERRUPTED, killedByRunner: true });
    expect(found?.message).toMatch(
      /were still running and were killed when the runner started again/,
    );
    second.proc.kill("SIGTERM");
    expect(await second.exited).toBe(0);
  });

  it("refuses to start a second runner on the same run store", async () => {
    const first = await startServer();
    const proc = spawn(process.execPath, [...NODE_START_FLAGS, BUILT_MAIN], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? "",
        HOME: home,
        FERMILINK_HOME: home,
        FERMILINK_CODEX_BIN: FAKE_AGENT,
        FERMILINK_RUNNER_PORT: "0",
        FERMILINK_RUNNER_METRICS_PORT: "0",
        FERMILINK_RUNNER_WARMUP_REQUESTS: "0",
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    children.push(proc);
    let err = "";
    proc.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const code = await new Promise((resolve) => proc.once("exit", resolve));
    expect(code).toBe(1);
    expect(err).toContain("is in use by another runner process");
    first.proc.kill("SIGTERM");
    expect(await first.exited).toBe(0);
  });

  it("runs one session's runs one at a time across runners sharing a workspaces root, and takes over the session a killed runner held", async () => {
    const shared = path.join(home, "workspaces");
    const gate = path.join(home, "gate");
    const env = {
      FERMILINK_WORKSPACES_ROOT: shared,
      FERMILINK_RUNNER_ENV_PASSTHROUGH: "FAKE_AGENT_GATE",
      FAKE_AGENT_GATE: gate,
    };
    const a = await startServer(env);
    // Its own home (run store), the same workspaces: the runner a balancer sends a retry to.
    const b = await startServer({ ...env, FERMILINK_HOME: path.join(home, "b") });
    const first = await startSseRun(`http://127.0.0.1:${a.port}`, {
      session_id: "shared",
      user_prompt: "#scenario=gate",
    });
    const res = await fetch(`http://127.0.0.1:${b.port}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: "shared", user_prompt: "second" }),
    });
    expect(res.status).toBe(200);
    const comments: string[] = [];
    const second = parseSse(res.body as ReadableStream<Uint8Array>, (c) => comments.push(c))[
      Symbol.asyncIterator
    ]();
    const next = second.next();
    // Queued behind the other runner's run: no workspace, no provider while that one runs.
    const early = await Promise.race([
      next,
      new Promise((r) => setTimeout(() => r("waiting"), 1500)),
    ]);
    expect(early).toBe("waiting");
    expect(comments).toContain("queued 1/1");
    await writeFile(gate, "");
    expect(JSON.parse(await lastData(first.rest)).reason).toBe("completed");
    expect((await next).value?.event).toBe("meta");
    expect(JSON.parse(await lastData(second)).reason).toBe("completed");
    const lockFile = path.join(shared, ".runner-locks", "shared.lock");
    expect(existsSync(lockFile)).toBe(false);

    // A runner killed mid-run leaves its lock file; the other runner's run goes ahead all the same.
    await startSseRun(`http://127.0.0.1:${a.port}`, {
      session_id: "shared",
      user_prompt: "#scenario=hold",
    });
    a.proc.kill("SIGKILL");
    await a.exited;
    expect((await readFile(lockFile, "latin1")).split("-")[2]).toBe(String(a.proc.pid));
    const after = await postRun(`http://127.0.0.1:${b.port}`, {
      session_id: "shared",
      user_prompt: "after the crash",
    });
    expect(JSON.parse(after.events.at(-1)?.data ?? "{}").reason).toBe("completed");
    expect(existsSync(lockFile)).toBe(false);
    b.proc.kill("SIGTERM");
    expect(await b.exited).toBe(0);
  });
});
