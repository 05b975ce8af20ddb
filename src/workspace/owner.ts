/**
 * Which runner process a directory under the workspaces root belongs to, so
 * that several runners sharing one root (a rolling deploy, a restart that
 * overlaps the old process) clean up only what a dead runner left: a
 * half-made template copy, a spare it can no longer hand out.
 *
 * A runner names its directories with an owner token:
 * `<boot id>-<pid namespace>-<pid>-<start time>`. A token of this boot and
 * this pid namespace is judged from /proc: gone when that pid is not running,
 * or runs a process that started at another time (the pid was reused). Any
 * other token (another host on a shared volume, another container, an
 * earlier boot) cannot be looked up: it counts as gone once its directory has
 * not been touched for `STALE_AFTER_MS`, and a live runner touches its own
 * every `HEARTBEAT_MS` (`keepFresh`).
 */
import { readFileSync, readlinkSync } from "node:fs";
import { exitedState, readProcStat } from "../process/proc-stat.js";
import { Heartbeat } from "./heartbeat.js";

/** How often a runner touches the directories it owns. */
const HEARTBEAT_MS = 5 * 60_000;

/** A directory whose owner cannot be looked up is gone once it is this old. */
export const STALE_AFTER_MS = 60 * 60_000;

const TOKEN = /^([0-9a-f]{8})-(\d+)-(\d+)-(\d+)$/;

function readOr(read: () => string, fallback: string): string {
  try {
    return read();
  } catch {
    return fallback;
  }
}

/** The first 8 hex digits of this boot's id ("00000000" where there is none). */
const BOOT = readOr(
  () => readFileSync("/proc/sys/kernel/random/boot_id", "latin1").replaceAll("-", "").slice(0, 8),
  "00000000",
);

/** The pid namespace's inode: a pid means the same process only within one namespace. */
const PID_NS = readOr(() => readlinkSync("/proc/self/ns/pid").replace(/\D/g, ""), "0");

/** The owner token of process `pid` of this namespace, or null when it is not running. */
export function ownerOf(pid: number): string | null {
  const st = readProcStat(pid);
  return st === null ? null : `${BOOT}-${PID_NS}-${pid}-${st.startTime}`;
}

let self: string | undefined;

/** This process's owner token. */
export function runnerOwner(): string {
  // Without /proc (not Linux) the token cannot be checked there: a random "start time" keeps it
  // unique, and others judge it by its age as they do a token of another host.
  self ??= ownerOf(process.pid) ?? `${BOOT}-0-${process.pid}-${Date.now()}`;
  return self;
}

/**
 * Whether the owner named `token` is gone, so that what it left may be
 * removed or taken over. `mtimeMs`: when its directory was last touched. A
 * name that is no token (left by a runner before owners existed) is gone.
 * `staleAfterMs`: the age at which a token that cannot be looked up is gone
 * (what its owner refreshes more often may be judged sooner).
 */
export function ownerGone(
  token: string,
  mtimeMs: number,
  nowMs = Date.now(),
  staleAfterMs = STALE_AFTER_MS,
): boolean {
  const m = TOKEN.exec(token);
  if (m === null) return true;
  const [, boot, ns, pid, start] = m;
  if (boot === BOOT && ns === PID_NS && ns !== "0") {
    const st = readProcStat(Number(pid));
    // A zombie has stopped writing: only its parent has not collected it yet.
    return st === null || st.startTime !== start || exitedState(st.state);
  }
  return nowMs - mtimeMs > staleAfterMs;
}

/** The directories this runner owns (spares, staging), touched every few minutes. */
const fresh = new Heartbeat(HEARTBEAT_MS);

/**
 * Touch `dir` every few minutes while this runner lives, so that a runner
 * that cannot look this one up in /proc never takes it for gone.
 */
export function keepFresh(dir: string): void {
  fresh.add(dir);
}

/** Stop touching `dir` (its owner is done with it). */
export function forgetFresh(dir: string): void {
  fresh.delete(dir);
}
