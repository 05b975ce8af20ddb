import { readdirSync } from "node:fs";
import { exitedState, readProcStat } from "./proc-stat.js";

/** Signal a whole process group; false when the group no longer exists. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    // ESRCH: the group is gone. EPERM: a member changed identity; nothing we may do.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ESRCH" || code === "EPERM") return false;
    throw err;
  }
}

/**
 * Exited: a zombie, unless only its main thread exited and its other threads run on (the
 * process then shows as a zombie too, but still runs).
 */
function exited(pid: number | string, state: string): boolean {
  if (!exitedState(state)) return false;
  if (state === "X") return true;
  try {
    return readdirSync(`/proc/${pid}/task`).length <= 1;
  } catch {
    return true; // Reaped meanwhile.
  }
}

/**
 * True while a process of the group is still running. A group whose every member has exited
 * but is not reaped yet counts as gone: signal 0 still finds it, and an orphaned grandchild
 * handed to a parent that reaps late or never (the runner as PID 1 without an init) would
 * otherwise hold every termination for its whole grace and SIGKILL wait.
 */
export function groupExists(pgid: number): boolean {
  return liveMember(pgid, pgid) !== 0;
}

/**
 * A running member of the group (`hint` first: the one found last time, so a poll does not scan
 * /proc again while it runs), or 0 once none is.
 */
function liveMember(pgid: number, hint: number): number {
  try {
    process.kill(-pgid, 0);
  } catch {
    return 0;
  }
  // /proc is read only for a group that signal 0 still finds.
  const known = readProcStat(hint);
  if (known !== null && known.pgrp === pgid && !exited(hint, known.state)) return hint;
  let pids: string[];
  try {
    pids = readdirSync("/proc");
  } catch {
    return pgid; // No /proc: signal 0 is all there is.
  }
  let members = 0;
  for (const pid of pids) {
    if (!/^\d+$/.test(pid)) continue;
    const s = readProcStat(pid);
    if (s === null || s.pgrp !== pgid) continue;
    if (!exited(pid, s.state)) return Number(pid);
    members++;
  }
  // None found at all: /proc hides them (hidepid, another pid namespace), so trust signal 0.
  return members === 0 ? pgid : 0;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** How long a group is waited for after its SIGKILL, by default. */
export const KILL_WAIT_MS = 2000;

/**
 * SIGTERM to the group, wait up to `graceMs` for it to disappear, then SIGKILL
 * to the group and wait up to `killWaitMs` (never forever: a process stuck in
 * uninterruptible sleep must not hang the runner).
 */
export async function terminateGroup(
  pgid: number,
  graceMs: number,
  killWaitMs = KILL_WAIT_MS,
): Promise<void> {
  if (!signalGroup(pgid, "SIGTERM")) return;
  let member = pgid;
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    member = liveMember(pgid, member);
    if (member === 0) return;
    await sleep(Math.min(25, Math.max(1, deadline - Date.now())));
  }
  if (!signalGroup(pgid, "SIGKILL")) return;
  const killDeadline = Date.now() + killWaitMs;
  for (;;) {
    member = liveMember(pgid, member);
    if (member === 0 || Date.now() >= killDeadline) return;
    await sleep(10);
  }
}
