/** One caller of `acquire`: the holder (first in its session's queue) or a waiter. */
interface Waiter {
  grant: () => void;
  onWait: ((position: number, waiting: number) => void) | undefined;
  /** What it last heard ("position/waiting"), so an unchanged place is not told again. */
  told: string;
}

/**
 * Per-session FIFO mutex: two runs on one session never race on its
 * workspace (spec §10 item 26). An idle session has no entry (no leak); a
 * waiter whose signal aborts leaves the queue at once.
 */
export class SessionLock {
  private readonly queues = new Map<string, Waiter[]>();

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
    return new Promise((resolve, reject) => {
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        const q = this.queues.get(sessionId);
        if (!q) return;
        q.shift();
        const next = q[0];
        if (!next) {
          this.queues.delete(sessionId);
          return;
        }
        next.grant();
        tellWaiters(q);
      };
      const me: Waiter = {
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve(release);
        },
        onWait,
        told: "",
      };
      const onAbort = () => {
        const q = this.queues.get(sessionId);
        const i = q ? q.indexOf(me) : -1;
        if (q && i > 0) {
          q.splice(i, 1);
          reject(signal?.reason);
          tellWaiters(q);
        }
      };
      const q = this.queues.get(sessionId);
      if (!q) {
        this.queues.set(sessionId, [me]);
        me.grant();
        return;
      }
      q.push(me);
      signal?.addEventListener("abort", onAbort, { once: true });
      // The newcomer hears its place; those ahead of it hear that one more waits.
      tellWaiters(q);
    });
  }
}

/** Every waiter (all but the holder, q[0]) hears its place and how many wait, when that changed. */
function tellWaiters(q: readonly Waiter[]): void {
  const waiting = q.length - 1;
  for (let i = 1; i < q.length; i++) {
    const w = q[i];
    if (!w) continue;
    const report = `${i}/${waiting}`;
    if (w.told === report) continue;
    w.told = report;
    try {
      w.onWait?.(i, waiting);
    } catch {
      // A report that failed must not break the hand-over or strand the other waiters.
    }
  }
}
