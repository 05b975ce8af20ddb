/** Processes found by their run id, killed even while they keep forking. */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { RUN_ID_ENV, reapOrphans } from "../../../src/process/reap-orphans.js";
import { killQuietly } from "../../helpers/process-census.js";
import { until } from "../../helpers/until.js";

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

/** Poll until `done()`, at most 10 s (then the assertions after it report what is missing). */
const started: string[] = [];
afterEach(() => {
  for (const id of started.splice(0)) for (const pid of withRunId(id)) killQuietly(pid);
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
    // More than ten of each, however slowly a loaded box forks (a fixed 300 ms saw exactly ten).
    await until(
      () => withRunId(runId).length > 10 && withRunId(other).length > 10,
      "more than ten processes of each run",
    );
    expect(withRunId(runId).length).toBeGreaterThan(10);

    const killed = await reapOrphans(new Set([runId]));
    expect(killed.length).toBeGreaterThan(10);
    // Each once, with the run it belonged to (start-up recovery says which runs had a process).
    expect(new Set(killed.map((p) => p.pid)).size).toBe(killed.length);
    expect(killed.every((p) => p.runId === runId)).toBe(true);
    // SIGKILLed processes leave as soon as they run again; a survivor (sleep 30, or the loop) stays.
    await until(() => withRunId(runId).length === 0, "the killed processes gone");
    expect(withRunId(runId)).toEqual([]);
    // Another run's processes are not touched.
    expect(withRunId(other).length).toBeGreaterThan(10);
  });

  it("with a grace, sends SIGTERM first (a cleanup runs), and SIGKILLs what outlives the grace", async () => {
    const runId = `reap-term-${process.pid}-${Date.now()}`;
    started.push(runId);
    const dir = await mkdtemp(path.join(tmpdir(), "flr-reap-"));
    const cleaned = path.join(dir, "cleaned");
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", [RUN_ID_ENV]: runId };
    // Each says when its trap is set: a SIGTERM before that (a slow start on a loaded machine)
    // would kill the tidy one without its cleanup.
    const ready = (name: string) => `: > ${path.join(dir, `${name}.ready`)}`;
    const tidy = spawn(
      "/bin/bash",
      [
        "-c",
        `trap 'echo done > ${cleaned}; exit 0' TERM; ${ready("tidy")}; while :; do sleep 0.05; done`,
      ],
      { env, detached: true, stdio: "ignore" },
    );
    const stubborn = spawn(
      "/bin/bash",
      ["-c", `trap '' TERM; ${ready("stubborn")}; while :; do sleep 0.05; done`],
      { env, detached: true, stdio: "ignore" },
    );
    for (const c of [tidy, stubborn]) c.unref();
    await until(
      () => ["tidy", "stubborn"].every((name) => existsSync(path.join(dir, `${name}.ready`))),
      "both shells' traps",
    );
    await reapOrphans(new Set([runId]), 300);
    await new Promise((r) => setTimeout(r, 100));
    expect(await readFile(cleaned, "utf8")).toBe("done\n");
    expect(withRunId(runId)).toEqual([]);
    await rm(dir, { recursive: true, force: true });
  });

  it("does not wait out the grace for a process that died as a zombie nobody reaps yet", async () => {
    const runId = `reap-zombie-${process.pid}-${Date.now()}`;
    started.push(runId);
    // The run's process is the child of one that never waits for it (an orphan handed to an init
    // that reaps late, or to a runner that is PID 1): once it dies it stays a zombie.
    const parent = spawn("/bin/sh", ["-c", `${RUN_ID_ENV}=${runId} sleep 60 & exec sleep 120`], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
      stdio: "ignore",
    });
    try {
      await until(() => withRunId(runId).length === 1, "the run's process");
      const [pid] = withRunId(runId);
      const t0 = Date.now();
      const killed = await reapOrphans(new Set([runId]), 5000);
      expect(killed.map((p) => p.pid)).toEqual([pid]);
      // SIGTERM ended it at once; its pid stays until its parent reaps it, which is never here.
      expect(readFileSync(`/proc/${pid}/stat`, "utf8")).toMatch(/\) Z /);
      expect(Date.now() - t0).toBeLessThan(2000);
    } finally {
      parent.kill("SIGKILL");
    }
  });

  it("finds nothing for no run ids", async () => {
    expect(await reapOrphans(new Set())).toEqual([]);
  });
});
