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

/** True while any process is still in the group (signal 0 probes without killing). */
export function groupExists(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
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
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!groupExists(pgid)) return;
    await sleep(Math.min(25, Math.max(1, deadline - Date.now())));
  }
  if (!signalGroup(pgid, "SIGKILL")) return;
  const killDeadline = Date.now() + killWaitMs;
  while (groupExists(pgid) && Date.now() < killDeadline) await sleep(10);
}
