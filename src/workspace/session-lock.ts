/** One caller of `acquire`: the holder (first in its session's queue) or a waiter. */
interface Waiter {
  grant: () => void;
  onWait: ((position: number, waiting: number) => void) | undefined;
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
      // The holder is q[0]; everyone after it waits.
      onWait?.(q.length - 1, q.length - 1);
    });
  }
}

/** Every waiter (all but the holder, q[0]) hears its place and how many wait. */
function tellWaiters(q: readonly Waiter[]): void {
  for (let i = 1; i < q.length; i++) q[i]?.onWait?.(i, q.length - 1);
}
