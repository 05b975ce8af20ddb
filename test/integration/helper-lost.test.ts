import { readdirSync, readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { RUN_ID_ENV } from "../../src/process/reap-orphans.js";
import { isAlive } from "../helpers/process-census.js";
import { parseSse, type SseEvent, startSseRun } from "../helpers/sse-client.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** This process's children running the spawn helper (spawner-child.mjs). */
function spawnHelperPids(): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const cmd = readFileSync(`/proc/${name}/cmdline`, "utf8");
      if (ppid === process.pid && cmd.includes("spawner-child")) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Pids of processes started for run `runId` (its run id in their environment). */
function processesOfRun(runId: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const env = readFileSync(`/proc/${name}/environ`, "latin1").split("\0");
      if (env.includes(`${RUN_ID_ENV}=${runId}`) && isAlive(Number(name))) pids.push(Number(name));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids;
}

/** The run's processes once they are gone, or after 5 s (a kill takes a moment to land). */
async function processesOfRunAfterAWhile(runId: string): Promise<number[]> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && processesOfRun(runId).length > 0) {
    await new Promise((r) => setTimeout(r, 20));
  }
  return processesOfRun(runId);
}

async function rest(events: AsyncIterator<SseEvent>): Promise<SseEvent[]> {
  const out: SseEvent[] = [];
  for (let n = await events.next(); !n.done; n = await events.next()) out.push(n.value);
  return out;
}

describe("a run whose spawn helper dies", () => {
  it("ends with reason error saying the provider's exit was lost, not as a provider killed by SIGKILL", async () => {
    server = await startTestServer();
    const run = await startSseRun(server.baseUrl, { user_prompt: "#scenario=hold" });
    const helpers = spawnHelperPids();
    expect(helpers).toHaveLength(1);
    process.kill(helpers[0] as number, "SIGKILL");
    const events = await rest(run.rest);
    const exit = JSON.parse(events.find((e) => e.event === "runner.exit")?.data ?? "{}");
    expect(exit.reason).toBe("error");
    expect(exit.signal ?? null).toBeNull();
    expect(exit.return_code ?? null).toBeNull();
    expect(exit.message).toMatch(/spawn helper exited unexpectedly.*exit status was lost/);
    expect(exit.killed_by_runner).toBe(true);
    const stored = server.app.pipeline.getRun(run.runId, { userId: null });
    expect(stored.exitReason).toBe("error");
    expect(stored.succeeded).toBe(false);
  });
});

/**
 * A server whose spawn helper is stopped (SIGSTOP) once it has served a run,
 * and a run whose start it got but has not read: `resume` sends SIGCONT.
 */
async function runOnStoppedHelper() {
  const earlier = new Set(spawnHelperPids());
  server = await startTestServer();
  // The first run starts the helper.
  const first = await startSseRun(server.baseUrl, { user_prompt: "hello" });
  await rest(first.rest);
  const helpers = spawnHelperPids().filter((pid) => !earlier.has(pid));
  expect(helpers).toHaveLength(1);
  const helper = helpers[0] as number;
  process.kill(helper, "SIGSTOP");
  let stopped = true;
  const resume = () => {
    if (stopped) process.kill(helper, "SIGCONT");
    stopped = false;
  };
  try {
    const res = await fetch(`${server.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_prompt: "#scenario=hold" }),
    });
    const events = parseSse(res.body as ReadableStream<Uint8Array>)[Symbol.asyncIterator]();
    const meta = await events.next();
    expect(meta.value?.event).toBe("meta");
    const runId: string = JSON.parse(meta.value?.data ?? "{}").run_id;
    // meta goes out just before the start is sent to the helper: let it be sent.
    await new Promise((r) => setTimeout(r, 200));
    return { runId, events, resume };
  } catch (err) {
    resume();
    throw err;
  }
}

const exitOf = (events: SseEvent[]) =>
  JSON.parse(events.find((e) => e.event === "runner.exit")?.data ?? "{}");

describe("a run cancelled while its spawn helper has not answered its start", () => {
  it("ends within the wait when the helper never answers (wedged), saying the provider was being started", async () => {
    const { runId, events, resume } = await runOnStoppedHelper();
    try {
      const cancel = await fetch(`${server?.baseUrl}/runs/${runId}/cancel`, { method: "POST" });
      expect(cancel.status).toBe(200);
      const hung = new Promise<"hung">((r) => setTimeout(() => r("hung"), 5000).unref());
      const after = await Promise.race([rest(events), hung]);
      expect(after).not.toBe("hung");
      const exit = exitOf(after as SseEvent[]);
      expect(exit.reason).toBe("cancelled");
      expect(exit.message).toBe(
        "The run was cancelled, while its provider was being started; the runner kills whatever the spawn helper starts for it.",
      );
      expect(exit.killed_by_runner).toBe(false);
      expect(server?.app.pipeline.liveRuns).toBe(0);
      // The helper, resumed, starts the provider after all: the runner kills it. The helper
      // answers in order, so it has answered that start once the next run has started.
      resume();
      const next = await startSseRun(server?.baseUrl as string, { user_prompt: "hello" });
      expect(exitOf(await rest(next.rest)).reason).toBe("completed");
      expect(await processesOfRunAfterAWhile(runId)).toEqual([]);
    } finally {
      resume();
    }
  });

  it("says the runner ended the provider's group when the helper started it meanwhile", async () => {
    const { runId, events, resume } = await runOnStoppedHelper();
    try {
      // The abort is made before cancel() first awaits: the helper resumes after it.
      const cancelled = (server as TestServer).app.pipeline.cancel(runId, { userId: null });
      resume();
      expect((await cancelled).exitReason).toBe("cancelled");
      const exit = exitOf(await rest(events));
      expect(exit.reason).toBe("cancelled");
      expect(exit.message).toBe(
        "The run was cancelled; the runner ended the provider's process group.",
      );
      expect(exit.killed_by_runner).toBe(true);
      expect(server?.app.pipeline.liveRuns).toBe(0);
      expect(await processesOfRunAfterAWhile(runId)).toEqual([]);
    } finally {
      resume();
    }
  });
});
