/**
 * Providers yield the CPU to the runner: under a burst of starting CLIs the
 * runner still answers callers and ops at once. Set right after fork, so
 * grandchildren inherit it. A detached child starts its own session and so,
 * with sched_autogroup_enabled, its own scheduler autogroup, where a nice
 * value only ranks it inside the group; the group's own nice value is what
 * yields to the runner.
 *
 * Plain JavaScript, shared by the runner (launch.ts) and the spawn helper
 * (spawner/spawner-child.mjs), which runs on bare node without the TypeScript
 * loader. Types: yield-cpu.d.mts.
 */
import { writeFileSync } from "node:fs";
import { setPriority } from "node:os";

export function yieldCpu(pid, niceness) {
  try {
    setPriority(pid, niceness);
  } catch {
    // Not permitted or already gone: the provider just keeps the runner's priority.
  }
  try {
    // A procfs write: synchronous on purpose (no disk, and it must precede the provider's work).
    writeFileSync(`/proc/${pid}/autogroup`, String(niceness));
  } catch {
    // No autogroup support (or not permitted): the per-process nice value still applies.
  }
}

/**
 * The autogroup nice value for each of `live` providers started with `base`:
 * every detached provider is its own scheduler autogroup, weighted like one
 * process at that nice value, so 200 busy CLIs at nice 10 together outweigh
 * the runner's group twentyfold and starve it. Beyond four live providers
 * each further doubling lowers them by 3 (about half the weight), up to 19:
 * together they stay within a few runner-weights while a lone provider keeps
 * `base` (and its full speed next to the runner).
 */
export function crowdNice(base, live) {
  if (base <= 0 || live <= 4) return Math.max(0, base);
  return Math.min(19, base + 3 * Math.ceil(Math.log2(live / 4)));
}

/** Set the nice value of `pid`'s scheduler autogroup. Never throws. */
export function setGroupNice(pid, niceness) {
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(niceness));
  } catch {
    // Gone, or no autogroup support: nothing to rebalance.
  }
}
