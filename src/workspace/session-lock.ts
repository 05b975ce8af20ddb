/**
 * Per-session FIFO mutex: two runs on one session never race on its
 * workspace (spec §10 item 26). An idle session has no entry (no leak); a
 * waiter whose signal aborts leaves the queue at once.
 */
export class SessionLock {
  private readonly queues = new Map<string, (() => void)[]>();

  /** Sessions with a holder or waiters (tests check it returns to 0). */
  get size(): number {
    return this.queues.size;
  }

  /**
   * Resolves with an idempotent release function once the session is ours.
   * When it has to wait, `onWait` hears at once its place among the
   * session's waiters (1 = next) and how many wait.
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
        if (next) next();
        else this.queues.delete(sessionId);
      };
      const grant = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve(release);
      };
      const onAbort = () => {
        const q = this.queues.get(sessionId);
        const i = q ? q.indexOf(grant) : -1;
        if (q && i > 0) {
          q.splice(i, 1);
          reject(signal?.reason);
        }
      };
      const q = this.queues.get(sessionId);
      if (!q) {
        this.queues.set(sessionId, [grant]);
        grant();
        return;
      }
      q.push(grant);
      signal?.addEventListener("abort", onAbort, { once: true });
      // The holder is q[0]; everyone after it waits.
      onWait?.(q.length - 1, q.length - 1);
    });
  }
}
