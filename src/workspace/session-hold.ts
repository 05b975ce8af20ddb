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
import { randomBytes } from "node:crypto";
import {
  closeSync,
  fstatSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { utimes } from "node:fs/promises";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";
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

/** Lock files this process holds now (any SessionLock of it). */
const heldHere = new Set<string>();
let heartbeat: NodeJS.Timeout | undefined;

/** Touch every lock file this process holds (its heartbeat; tests call it directly). */
export async function touchHeldLocks(): Promise<void> {
  const now = new Date();
  // A file gone or replaced meanwhile is not this hold's to revive: utimes only touches what is there.
  await Promise.all([...heldHere].map((f) => utimes(f, now, now).catch(() => {})));
}

function track(file: string): void {
  heldHere.add(file);
  heartbeat ??= setInterval(() => void touchHeldLocks(), LOCK_HEARTBEAT_MS).unref();
}

function untrack(file: string): void {
  heldHere.delete(file);
  if (heldHere.size === 0) {
    clearInterval(heartbeat);
    heartbeat = undefined;
  }
}

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
    track(file);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      untrack(file);
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

/**
 * Remove `file` when its holder is gone; true when it is gone (removed here
 * or meanwhile), false while its holder lives.
 */
function takeOverIfGone(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (err) {
    return codeOf(err) === "ENOENT";
  }
  let ino: number;
  try {
    const st = fstatSync(fd);
    ino = st.ino;
    const text = readFileSync(fd, "latin1");
    const end = text.indexOf("\n");
    if (end < 0) {
      if (Date.now() - st.mtimeMs < UNWRITTEN_GRACE_MS) return false;
    } else {
      const owner = text.slice(0, end);
      const gone =
        owner === runnerOwner()
          ? !heldHere.has(file)
          : ownerGone(owner, st.mtimeMs, Date.now(), LOCK_STALE_AFTER_MS);
      if (!gone) return false;
    }
  } finally {
    closeSync(fd);
  }
  // Moved aside, then checked to be the file judged: two runners taking over one dead holder at
  // once must not remove the hold the quicker one just made.
  const aside = `${file}.${randomBytes(6).toString("hex")}.stale`;
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
