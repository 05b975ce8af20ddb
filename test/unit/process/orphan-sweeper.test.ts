/** Processes of finished runs that left their process group and closed their output. */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../../../src/log/logger.js";
import { OrphanSweeper } from "../../../src/process/orphan-sweeper.js";
import { RUN_ID_ENV } from "../../../src/process/reap-orphans.js";
import { waitUntilGone } from "../../helpers/process-census.js";

const logger = createLogger("silent");
const sweepers: OrphanSweeper[] = [];
const made: number[] = [];
afterEach(async () => {
  for (const s of sweepers.splice(0)) await s.stop();
  for (const pid of made.splice(0)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Gone, as it should be.
    }
  }
});

/** A daemon as a provider would leave one: its own session, no output, the run id inherited. */
function daemon(runId: string): number {
  const child = spawn("/bin/sleep", ["30"], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", [RUN_ID_ENV]: runId },
    detached: true,
    stdio: "ignore",
  });
  child.unref();
  made.push(child.pid as number);
  return child.pid as number;
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\S+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
}

function sweeper(intervalMs: number): OrphanSweeper {
  const s = new OrphanSweeper({ intervalMs, sweeps: 2, graceMs: 500, logger });
  sweepers.push(s);
  return s;
}

describe("OrphanSweeper", () => {
  it("kills what an ended run left behind at the next sweep, and forgets the run after its sweeps", async () => {
    const s = sweeper(100);
    const id = `sweep-${process.pid}-${Date.now()}`;
    const left = daemon(id);
    const unrelated = daemon(`${id}-still-running`);
    s.runEnded(id);
    expect(alive(left)).toBe(true);
    await waitUntilGone([left], 3000);
    expect(alive(unrelated)).toBe(true);
    // A second sweep looks for it once more (something could have forked first), then no more.
    for (let i = 0; i < 100 && s.pendingRuns > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(s.pendingRuns).toBe(0);
  });

  it("sweeps soon after a start that may have left a process nobody supervises", async () => {
    const s = sweeper(60_000);
    const id = `sweep-soon-${process.pid}-${Date.now()}`;
    const left = daemon(id);
    s.runEnded(id, true);
    await waitUntilGone([left], 3000);
  });

  it("sweeps every pending run at once when stopped", async () => {
    const s = sweeper(60_000);
    const id = `sweep-stop-${process.pid}-${Date.now()}`;
    const left = daemon(id);
    s.runEnded(id);
    await new Promise((r) => setTimeout(r, 200));
    expect(alive(left)).toBe(true);
    await s.stop();
    await waitUntilGone([left], 3000);
  });
});
