/**
 * Providers yield the CPU to the runner: under a burst of starting CLIs the
 * runner still answers callers and ops at once. Set right after fork, so
 * grandchildren inherit it. A detached child starts its own session and so,
 * with sched_autogroup_enabled, its own scheduler autogroup, where a nice
 * value only ranks it inside the group; the group's own nice value is what
 * yields to the runner.
 *
 * The spawn helper keeps its providers in its own session instead, all in
 * one autogroup (spawner/spawner-child.mjs); this per-provider form is for
 * the direct launcher and for the helper where perl is missing.
 *
 * Plain JavaScript, shared by the runner (launch.ts) and the spawn helper
 * (spawner/spawner-child.mjs), which runs on bare node without the TypeScript
 * loader. Types: yield-cpu.d.mts.
 */
import { writeFileSync } from "node:fs";
import { setPriority } from "node:os";

export function yieldCpu(pid, niceness) {
  setProcessNice(pid, niceness);
  // A procfs write: synchronous on purpose (no disk, and it must precede the provider's work).
  setGroupNice(pid, niceness);
}

/** Set the nice value of process `pid` (inherited by what it starts later). Never throws. */
export function setProcessNice(pid, niceness) {
  try {
    setPriority(pid, niceness);
  } catch {
    // Not permitted or already gone: the provider just keeps the runner's priority.
  }
}

/** Set the nice value of `pid`'s scheduler autogroup. Never throws. */
export function setGroupNice(pid, niceness) {
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(niceness));
  } catch {
    // Gone, or no autogroup support (or not permitted): the per-process nice value still applies.
  }
}
