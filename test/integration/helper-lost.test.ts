import { readdirSync, readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
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

describe("a run whose spawn helper does not answer", () => {
  it("ends at once when cancelled, without waiting for the helper", async () => {
    const earlier = new Set(spawnHelperPids());
    server = await startTestServer();
    // The first run starts the helper.
    const first = await startSseRun(server.baseUrl, { user_prompt: "hello" });
    await rest(first.rest);
    const helpers = spawnHelperPids().filter((pid) => !earlier.has(pid));
    expect(helpers).toHaveLength(1);
    const helper = helpers[0] as number;
    // Wedged (stopped here): the run's start stays unanswered.
    process.kill(helper, "SIGSTOP");
    try {
      const res = await fetch(`${server.baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ user_prompt: "#scenario=hold" }),
      });
      const events = parseSse(res.body as ReadableStream<Uint8Array>)[Symbol.asyncIterator]();
      const meta = await events.next();
      expect(meta.value?.event).toBe("meta");
      const runId = JSON.parse(meta.value?.data ?? "{}").run_id;
      const cancel = await fetch(`${server.baseUrl}/runs/${runId}/cancel`, { method: "POST" });
      expect(cancel.status).toBe(200);
      const hung = new Promise<"hung">((r) => setTimeout(() => r("hung"), 5000).unref());
      const after = await Promise.race([rest(events), hung]);
      expect(after).not.toBe("hung");
      const exit = JSON.parse(
        (after as SseEvent[]).find((e) => e.event === "runner.exit")?.data ?? "{}",
      );
      expect(exit.reason).toBe("cancelled");
      expect(exit.message).toMatch(/before its provider was started/);
      expect(server.app.pipeline.liveRuns).toBe(0);
    } finally {
      process.kill(helper, "SIGCONT");
    }
  });
});
