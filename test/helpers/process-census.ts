import { readdirSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";

/** True while `pid` exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Wait until none of `pids` is alive; throws after `timeoutMs`. */
export async function waitUntilGone(pids: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(isAlive)) {
    if (Date.now() > deadline) throw new Error(`still alive: ${pids.filter(isAlive).join(", ")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * SIGKILL `pid` (a negative pid is a group) for a test's cleanup, ignoring one
 * that exited since it was listed: a cleanup must not fail a passing test.
 */
export function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
}

/**
 * The pid a process writes to `file`, once it has (throws after `timeoutMs`):
 * the fake agent spawns its grandchild before it prints, but the grandchild
 * writes its pid only once its own node has started, which on a loaded
 * machine can come after the agent's first events.
 */
export async function readPidFile(file: string, timeoutMs = 5000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pid = Number((await readFile(file, "utf8").catch(() => "")).trim());
    if (pid > 0) return pid;
    if (Date.now() > deadline) throw new Error(`no pid in ${file}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The pids whose parent is `pid` (from /proc). */
export function childrenOf(pid: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "latin1");
      // The command name may hold ") ": the fields follow its last one.
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid) {
        pids.push(Number(entry));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}
