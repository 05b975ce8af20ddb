/** What a lease records about its grant. */
export interface LeaseInit {
  /** The normalised admission key the slot is counted against (spec §3). */
  readonly userKey: string;
  /** False for FermiLink's fast path, true when the request went through the queue (spec §3). */
  readonly queued: boolean;
  /** Milliseconds between the call to `acquire` and the grant (0 on the fast path). */
  readonly waitedMs: number;
}

/**
 * One admission slot held by one run. Spec §3 guards FermiLink's release with
 * `_release_slot_once` in the route; here the guard lives in the lease itself,
 * so every path (setup failure, cancel, end of stream, shutdown) can call
 * `release()` and the slot is returned exactly once (spec §10 items 7, 8).
 *
 * Only `AdmissionController` creates leases that hold real slots; the
 * constructor is public so tests can build stand-ins.
 */
export class Lease implements LeaseInit {
  readonly userKey: string;
  readonly queued: boolean;
  readonly waitedMs: number;
  /** Returns the slot to the controller; null once it has been called. */
  #onRelease: (() => void) | null;

  /** `onRelease` is called at most once, on the first `release()`. */
  constructor(init: LeaseInit, onRelease: () => void) {
    this.userKey = init.userKey;
    this.queued = init.queued;
    this.waitedMs = init.waitedMs;
    this.#onRelease = onRelease;
  }

  /** True once `release()` has been called. */
  get released(): boolean {
    return this.#onRelease === null;
  }

  /**
   * Returns the slot. Idempotent: the first call releases, later calls do
   * nothing. The callback is cleared before it runs, so a re-entrant call
   * (e.g. from an observer) cannot release twice.
   */
  release(): void {
    const onRelease = this.#onRelease;
    if (onRelease === null) return;
    this.#onRelease = null;
    onRelease();
  }
}
