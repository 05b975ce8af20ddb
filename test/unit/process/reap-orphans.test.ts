/** Processes found by their run id, killed even while they keep forking. */
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { RUN_ID_ENV, reapOrphans } from "../../../src/process/reap-orphans.js";

/** Live (non-zombie) processes whose environment names `runId`. */
function withRunId(runId: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const env = readFileSync(`/proc/${entry}/environ`, "utf8");
      if (env.split("\0").includes(`${RUN_ID_ENV}=${runId}`)) pids.push(Number(entry));
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return pids;
}

const started: string[] = [];
afterEach(() => {
  for (const id of started.splice(0)) for (const pid of withRunId(id)) process.kill(pid, "SIGKILL");
});

describe("reapOrphans", () => {
  it("kills every process of the run, a shell forking every 2 ms and its children included", async () => {
    const runId = `reap-${process.pid}-${Date.now()}`;
    started.push(runId);
    const other = `other-${runId}`;
    started.push(other);
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
    const loop = "while :; do sleep 30 & sleep 0.002; done";
    for (const id of [runId, other]) {
      spawn("/bin/sh", ["-c", loop], {
        env: { ...env, [RUN_ID_ENV]: id },
        detached: true,
        stdio: "ignore",
      }).unref();
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(withRunId(runId).length).toBeGreaterThan(10);

    const killed = await reapOrphans(new Set([runId]));
    expect(killed.length).toBeGreaterThan(10);
    await new Promise((r) => setTimeout(r, 200));
    expect(withRunId(runId)).toEqual([]);
    // Another run's processes are not touched.
    expect(withRunId(other).length).toBeGreaterThan(10);
  });

  it("finds nothing for no run ids", async () => {
    expect(await reapOrphans(new Set())).toEqual([]);
  });
});
