import { readdirSync, readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { type SseEvent, startSseRun } from "../helpers/sse-client.js";
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
