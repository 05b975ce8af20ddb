import { readdir, readFile } from "node:fs/promises";

/**
 * Every provider process (and whatever it spawns, which inherits the
 * environment) carries its run id in this variable, so a restarted runner can
 * find the processes of runs that were live when it died and no PID reuse can
 * make it kill a stranger.
 */
export const RUN_ID_ENV = "FERMILINK_RUN_ID";

/** The run id in a process's environment, or null (not ours, gone, or not readable). */
async function runIdOf(pid: string): Promise<string | null> {
  const environ = await readFile(`/proc/${pid}/environ`).catch(() => null);
  if (!environ) return null;
  const prefix = `${RUN_ID_ENV}=`;
  for (const entry of environ.toString("utf8").split("\0")) {
    if (entry.startsWith(prefix)) return entry.slice(prefix.length);
  }
  return null;
}

/**
 * SIGKILL every process whose environment names one of `runIds` (Linux
 * /proc; elsewhere nothing is found). Returns the pids signalled.
 */
export async function reapOrphans(runIds: ReadonlySet<string>): Promise<number[]> {
  if (runIds.size === 0) return [];
  const entries = await readdir("/proc").catch(() => [] as string[]);
  const killed: number[] = [];
  for (const name of entries) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const runId = await runIdOf(name);
    if (runId === null || !runIds.has(runId)) continue;
    try {
      process.kill(Number(name), "SIGKILL");
      killed.push(Number(name));
    } catch {
      // Already gone.
    }
  }
  return killed;
}
