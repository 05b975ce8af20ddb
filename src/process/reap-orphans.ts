import { readdir, readFile } from "node:fs/promises";
import { exitedState, parseProcStat } from "./proc-stat.js";

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

/** A process found by its run id. */
export interface RunProcess {
  pid: number;
  runId: string;
}

/** The processes whose environment names one of `runIds` (one pass over /proc). */
async function findByRunId(runIds: ReadonlySet<string>): Promise<RunProcess[]> {
  const entries = await readdir("/proc").catch(() => [] as string[]);
  const found: RunProcess[] = [];
  for (const name of entries) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const runId = await runIdOf(name);
    if (runId !== null && runIds.has(runId)) found.push({ pid: Number(name), runId });
  }
  return found;
}

/**
 * False once `pid` has exited, a zombie included: a process that left its parent was handed to
 * init (or to the runner as PID 1 in a container), which may reap it late or never, and waiting
 * for its pid to vanish would spend the whole grace on a process already dead.
 */
async function isRunning(pid: number): Promise<boolean> {
  const text = await readFile(`/proc/${pid}/stat`, "latin1").catch(() => null);
  const stat = text === null ? null : parseProcStat(text);
  return stat !== null && !exitedState(stat.state);
}

function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false; // Already gone.
  }
}

/** Passes over /proc at most: each finds what forked while the one before was killing. */
const MAX_PASSES = 5;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * End every process whose environment names one of `runIds` (Linux /proc;
 * elsewhere nothing is found). Returns the processes signalled, each with the
 * run it belonged to (crash recovery says which runs still had one). With a grace,
 * they first get SIGTERM and up to `graceMs` to exit (a tool's cleanup, such
 * as removing its lock file, runs); then, or at once without a grace, a pass
 * stops everything it finds, so nothing it found can fork any more, and
 * SIGKILLs it; passes repeat until one finds nothing (a process may have
 * forked between the scan and its stop).
 */
export async function reapOrphans(runIds: ReadonlySet<string>, graceMs = 0): Promise<RunProcess[]> {
  if (runIds.size === 0) return [];
  // By pid: a process signalled in more than one pass is one process.
  const killed = new Map<number, string>();
  if (graceMs > 0) {
    const found = await findByRunId(runIds);
    if (found.length === 0) return [];
    for (const p of found) if (signal(p.pid, "SIGTERM")) killed.set(p.pid, p.runId);
    const deadline = Date.now() + graceMs;
    const anyRunning = async () =>
      (await Promise.all(found.map((p) => isRunning(p.pid)))).includes(true);
    while (Date.now() < deadline && (await anyRunning())) await sleep(25);
  }
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    const found = await findByRunId(runIds);
    if (found.length === 0) break;
    const stopped = found.filter((p) => signal(p.pid, "SIGSTOP"));
    for (const p of stopped) if (signal(p.pid, "SIGKILL")) killed.set(p.pid, p.runId);
  }
  return [...killed].map(([pid, runId]) => ({ pid, runId }));
}
