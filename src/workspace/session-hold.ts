/**
 * A session held across runner processes: runners sharing one workspaces
 * root (a rolling deploy behind a balancer, a client retrying on the other
 * runner) must not run two runs in one session repo at once, and the
 * in-process lock (session-lock.ts) sees only its own process's runs.
 *
 * The hold is a lock file `<root>/.runner-locks/<session id>.lock`, created
 * with O_EXCL and naming its holder by owner token (owner.ts). It lives
 * beside the session, not in it: a session directory that exists stops a new
 * session from claiming a spare. A holder that is gone (owner.ts: a dead pid,
 * a reused pid, or a token that cannot be looked up and whose file went
 * untouched for LOCK_STALE_AFTER_MS; a live holder keeps it fresh) is taken over. So is a
 * file naming this process but no hold of it (its release failed): otherwise
 * a lock this live runner leaked would block the session for good.
 *
 * Synchronous: a create, a stat and an unlink of a small file, tens of
 * microseconds on the loop, where the asynchronous calls would be thread-pool
 * round trips on every run's start.
 */
import {
  closeSync,
  fstatSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  type Stats,
  unlinkSync,
  writeSync,
} from "node:fs";
import { lstat, readdir, unlink } from "node:fs/promises";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";
import { Heartbeat } from "./heartbeat.js";
import { ownerGone, runnerOwner } from "./owner.js";

/** Under the workspaces root; a dot name, so no session id can take it. */
export const LOCKS_DIRNAME = ".runner-locks";

/** A lock file still without its holder's line is being written (or its writer died there). */
const UNWRITTEN_GRACE_MS = 10_000;

/**
 * A lock file whose holder cannot be looked up in /proc (another container,
 * another host) is taken over once it has gone this long untouched: a runner
 * that crashed there blocks its sessions this long, not owner.ts's hour for
 * directories, which block nothing. Its holder touches it every
 * LOCK_HEARTBEAT_MS, far more often than a busy loop can miss.
 */
export const LOCK_STALE_AFTER_MS = 30_000;
const LOCK_HEARTBEAT_MS = 5_000;

/** Lock files this process holds now (any SessionLock of it), kept fresh. */
const heldHere = new Heartbeat(LOCK_HEARTBEAT_MS);

/** Touch every lock file this process holds (its heartbeat; tests call it directly). */
export function touchHeldLocks(): Promise<void> {
  return heldHere.touch();
}

/**
 * Held by the one runner taking over a session's lock file:
 * `<lock file>.takeover`, naming that runner. A session's lock file always
 * ends in `.lock`, so this name is never one. One a killed taker left is
 * removed by the next runner to take that session over (removeLeftoverGuard).
 */
const TAKEOVER_SUFFIX = ".takeover";

/** A takeover guard this old is a leftover, whoever made it: a taker holds it for microseconds. */
const TAKEOVER_STALE_AFTER_MS = 10_000;

/** A lock file moved aside by a takeover: `<lock file>.<owner token>.stale`. */
const STALE_SUFFIX = ".stale";
/** What names the runner that moved it aside; older runners named it by 12 random hex digits. */
const STALE_TAKER = /\.lock\.([0-9a-f]{8}-\d+-\d+-\d+|[0-9a-f]{12})\.stale$/;

/** The lock file of `sessionId` (a valid id: a plain file name). */
export function sessionLockFile(root: string, sessionId: string): string {
  return path.join(root, LOCKS_DIRNAME, `${sessionId}.lock`);
}

const codeOf = (err: unknown) => (err as NodeJS.ErrnoException).code;

function holdFailed(file: string, err: unknown): RunnerError {
  return new RunnerError(
    "WORKSPACE_SETUP_FAILED",
    `Could not lock the session at ${file}: ${(err as Error).message}`,
    { cause: err },
  );
}

/**
 * Hold `sessionId` for this process: its release (idempotent, removes the
 * file only while it is still this hold's), or null while another live
 * runner holds it. The caller holds the in-process lock of the session.
 */
export function holdSession(root: string, sessionId: string): (() => void) | null {
  const file = sessionLockFile(root, sessionId);
  const mine = `${runnerOwner()}\n`;
  // A few tries: the directory may be missing, and a holder taken over leaves room for a racer.
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, "wx", 0o600);
    } catch (err) {
      if (codeOf(err) === "ENOENT") {
        try {
          mkdirSync(path.dirname(file), { recursive: true });
        } catch (mkErr) {
          throw holdFailed(file, mkErr);
        }
        continue;
      }
      if (codeOf(err) !== "EEXIST") throw holdFailed(file, err);
      if (!takeOverIfGone(file)) return null;
      continue;
    }
    let made: { ino: number; birthtimeMs: number };
    try {
      writeSync(fd, mine);
      made = fstatSync(fd);
    } catch (err) {
      // A file without its holder's line would hold the session for UNWRITTEN_GRACE_MS.
      unlinkQuietly(file);
      throw holdFailed(file, err);
    } finally {
      closeSync(fd);
    }
    heldHere.add(file);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      heldHere.delete(file);
      try {
        // Still the file made here (a stat, where reading it back costs four calls): a runner that
        // took it for gone made its own, another inode, which a reused number would not share
        // with this one's birth time.
        const st = lstatSync(file);
        if (st.ino === made.ino && st.birthtimeMs === made.birthtimeMs) unlinkSync(file);
      } catch {
        // Gone already, or unreadable: a file left naming this process is taken over by its next
        // run on the session (not held here), and others see it go stale once it is not touched.
      }
    };
  }
  return null;
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // Gone already.
  }
}

/** The first line of an open file (null while it has none) and the file's stat. */
function firstLine(fd: number): { line: string | null; st: Stats } {
  const st = fstatSync(fd);
  const text = readFileSync(fd, "latin1");
  const end = text.indexOf("\n");
  return { line: end < 0 ? null : text.slice(0, end), st };
}

/**
 * Whether `file`'s holder is gone: its inode number when it is, "absent"
 * when there is no file, "held" while its holder lives.
 */
function judge(file: string): number | "absent" | "held" {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (err) {
    return codeOf(err) === "ENOENT" ? "absent" : "held";
  }
  try {
    const { line: owner, st } = firstLine(fd);
    const gone =
      owner === null
        ? Date.now() - st.mtimeMs >= UNWRITTEN_GRACE_MS
        : owner === runnerOwner()
          ? !heldHere.has(file)
          : ownerGone(owner, st.mtimeMs, Date.now(), LOCK_STALE_AFTER_MS);
    return gone ? st.ino : "held";
  } finally {
    closeSync(fd);
  }
}

/**
 * Remove `file` when its holder is gone; true when it is gone (removed here
 * or meanwhile), false while its holder lives or another runner takes it
 * over now.
 */
function takeOverIfGone(file: string): boolean {
  const first = judge(file);
  if (typeof first === "string") return first === "absent";
  // One taker at a time: two that judged one dead holder gone would otherwise both move the lock
  // file aside, the later one the lock the quicker one just made, and a third runner could create
  // its own while that one is aside, so that two held the session.
  const guard = `${file}${TAKEOVER_SUFFIX}`;
  const entered = enterTakeover(guard);
  if (entered === null) return false;
  try {
    // Judged again: the quicker taker may have removed it, and a new holder made its own.
    const ino = judge(file);
    return typeof ino === "string" ? ino === "absent" : removeIfStill(file, ino);
  } finally {
    leaveTakeover(guard, entered);
  }
}

/**
 * Remove `file` if it is still inode `ino`. Among runners that take over
 * one at a time nothing replaces it meanwhile; runners from before session
 * 23 take over without the guard, hence the move aside, then the check.
 * Named by this runner, so that what a kill here leaves is known to be
 * nobody's once this runner is gone (sweepTakeoverLeftovers).
 */
function removeIfStill(file: string, ino: number): boolean {
  const aside = `${file}.${runnerOwner()}${STALE_SUFFIX}`;
  try {
    renameSync(file, aside);
  } catch (err) {
    return codeOf(err) === "ENOENT";
  }
  try {
    if (lstatSync(aside).ino !== ino) {
      linkSync(aside, file);
      return false;
    }
    return true;
  } catch {
    return false;
  } finally {
    unlinkQuietly(aside);
  }
}

/** The takeover guard made by this runner (its stat), or null while another runner takes over. */
function enterTakeover(guard: string): Stats | null {
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(guard, "wx", 0o600);
    } catch (err) {
      if (codeOf(err) !== "EEXIST" || attempt > 0 || !removeLeftoverGuard(guard)) return null;
      continue;
    }
    try {
      writeSync(fd, `${runnerOwner()}\n`);
      return fstatSync(fd);
    } catch (err) {
      unlinkQuietly(guard);
      throw holdFailed(guard, err);
    } finally {
      closeSync(fd);
    }
  }
  return null;
}

/**
 * Remove a takeover guard its taker left (killed during the microseconds
 * it holds one): its taker is gone, or it is TAKEOVER_STALE_AFTER_MS old.
 * True when it is gone.
 */
function removeLeftoverGuard(guard: string): boolean {
  let fd: number;
  try {
    fd = openSync(guard, "r");
  } catch (err) {
    return codeOf(err) === "ENOENT";
  }
  let judged: Stats;
  try {
    const { line: taker, st } = firstLine(fd);
    const now = Date.now();
    const leftOver =
      now - st.mtimeMs > TAKEOVER_STALE_AFTER_MS ||
      (taker !== null && ownerGone(taker, st.mtimeMs, now, TAKEOVER_STALE_AFTER_MS));
    if (!leftOver) return false;
    judged = st;
  } finally {
    closeSync(fd);
  }
  leaveTakeover(guard, judged);
  return true;
}

/** Remove `guard` if it is still the one `made` describes. */
function leaveTakeover(guard: string, made: Stats): void {
  try {
    const st = lstatSync(guard);
    if (st.ino === made.ino && st.birthtimeMs === made.birthtimeMs) unlinkSync(guard);
  } catch {
    // Gone already: removed as a leftover by a runner that judged this one gone.
  }
}

/**
 * Remove what takeovers cut short by a kill left in `root`'s lock directory
 * (start-up calls it): a lock file moved aside and never removed. A takeover
 * holds its file aside for microseconds, so one is left over once the runner
 * that moved it is gone (owner.ts, judged by the time of the move), or once
 * it was moved LOCK_STALE_AFTER_MS ago, whoever moved it. Returns the files
 * removed.
 */
export async function sweepTakeoverLeftovers(root: string, nowMs = Date.now()): Promise<string[]> {
  const dir = path.join(root, LOCKS_DIRNAME);
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    const taker = STALE_TAKER.exec(name)?.[1];
    if (taker === undefined) continue;
    const file = path.join(dir, name);
    // ctime: the move aside (a rename sets it); mtime is still the holder's last touch.
    const st = await lstat(file).catch(() => null);
    if (st === null) continue;
    const leftOver =
      nowMs - st.ctimeMs > LOCK_STALE_AFTER_MS ||
      // An older runner's random name names no one: only its age tells.
      (taker.includes("-") && ownerGone(taker, st.ctimeMs, nowMs, LOCK_STALE_AFTER_MS));
    // Failing: another runner starting at the same time removed it first.
    if (
      leftOver &&
      (await unlink(file).then(
        () => true,
        () => false,
      ))
    )
      removed.push(file);
  }
  return removed;
}
