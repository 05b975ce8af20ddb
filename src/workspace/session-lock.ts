import { holdSession } from "./session-hold.js";

/** One caller of `acquire`: the holder (first in its session's queue) or a waiter. */
interface Waiter {
  grant: () => void;
  onWait: ((position: number, waiting: number) => void) | undefined;
  /** What it last heard ("position/waiting"), so an unchanged place is not told again. */
  told: string;
}

/** A session's callers in this process, the first its holder (or next, while `peer`). */
interface Queue {
  waiters: Waiter[];
  /** The first waits for another runner's run on the session (session-hold.ts). */
  peer: boolean;
}

export interface SessionLockOptions {
  /** The workspaces root, where a session is also held against other runners sharing it. */
  root?: string;
  /** How often a run waiting for another runner's run on its session looks again. */
  pollMs?: number;
}

const POLL_MS = 250;

/**
 * Per-session FIFO mutex: two runs on one session never race on its
 * workspace (spec §10 item 26). An idle session has no entry (no leak); a
 * waiter whose signal aborts leaves the queue at once. With a `root`, the
 * session is then also held in the file system (session-hold.ts) for other
 * runner processes sharing that root: until the one holding it is done (or
 * gone), the first in line waits there, told it is first of those waiting.
 */
export class SessionLock {
  private readonly queues = new Map<string, Queue>();

  constructor(private readonly opts: SessionLockOptions = {}) {}

  /** Sessions with a holder or waiters (tests check it returns to 0). */
  get size(): number {
    return this.queues.size;
  }

  /**
   * Resolves with an idempotent release function once the session is ours.
   * While it waits, `onWait` hears its place among the session's waiters
   * (1 = next) and how many wait: at once, and again whenever that changes.
   */
  acquire(
    sessionId: string,
    signal?: AbortSignal,
    onWait?: (position: number, waiting: number) => void,
  ): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const { root } = this.opts;
    const pollMs = this.opts.pollMs ?? POLL_MS;
    return new Promise((resolve, reject) => {
      /** Set once this caller is done: resolved (then released) or rejected. */
      let settled = false;
      let released = false;
      let releaseHold: (() => void) | null = null;
      let poll: NodeJS.Timeout | undefined;
      /** Out of the queue as its first: the next caller in this process is granted. */
      const leave = () => {
        const q = this.queues.get(sessionId);
        if (!q || q.waiters[0] !== me) return;
        q.waiters.shift();
        q.peer = false;
        const next = q.waiters[0];
        if (!next) {
          this.queues.delete(sessionId);
          return;
        }
        next.grant();
        tellWaiters(q);
      };
      const release = () => {
        if (released) return;
        released = true;
        releaseHold?.();
        leave();
      };
      const fail = (err: unknown) => {
        settled = true;
        clearTimeout(poll);
        signal?.removeEventListener("abort", onAbort);
        leave();
        reject(err);
      };
      const me: Waiter = {
        grant: () => {
          poll = undefined;
          if (settled) return;
          const q = this.queues.get(sessionId);
          if (root !== undefined) {
            try {
              releaseHold = holdSession(root, sessionId);
            } catch (err) {
              fail(err);
              return;
            }
            if (releaseHold === null) {
              if (q && !q.peer) {
                q.peer = true;
                tellWaiters(q);
              }
              poll = setTimeout(me.grant, pollMs);
              return;
            }
          }
          settled = true;
          signal?.removeEventListener("abort", onAbort);
          if (q?.peer) {
            // Those behind it move up: the run ahead of them is now this one.
            q.peer = false;
            tellWaiters(q);
          }
          resolve(release);
        },
        onWait,
        told: "",
      };
      const onAbort = () => {
        if (settled) return;
        const q = this.queues.get(sessionId);
        const i = q ? q.waiters.indexOf(me) : -1;
        if (!q || i < 0) return;
        if (i === 0) {
          // First here, waiting for another runner: its place goes to the next of this process.
          fail(signal?.reason);
          return;
        }
        settled = true;
        q.waiters.splice(i, 1);
        reject(signal?.reason);
        tellWaiters(q);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      const q = this.queues.get(sessionId);
      if (!q) {
        this.queues.set(sessionId, { waiters: [me], peer: false });
        me.grant();
        return;
      }
      q.waiters.push(me);
      // The newcomer hears its place; those ahead of it hear that one more waits.
      tellWaiters(q);
    });
  }
}

/**
 * Every waiter hears its place and how many wait, when that changed: all but
 * the holder (the first), or all of them while the first waits for another runner.
 */
function tellWaiters(q: Queue): void {
  const { waiters } = q;
  const ahead = q.peer ? 1 : 0;
  const waiting = waiters.length - 1 + ahead;
  for (let i = 1 - ahead; i < waiters.length; i++) {
    const w = waiters[i];
    if (!w) continue;
    const report = `${i + ahead}/${waiting}`;
    if (w.told === report) continue;
    w.told = report;
    try {
      w.onWait?.(i + ahead, waiting);
    } catch {
      // A report that failed must not break the hand-over or strand the other waiters.
    }
  }
}
