/**
 * Limits of an `AdmissionController` (spec §3 constructor table). Values below
 * the minimum are clamped, as FermiLink does; fractions are floored.
 */
export interface AdmissionControllerOptions {
  /** Runs admitted at once across all users; clamped to ≥ 1. */
  readonly globalLimit: number;
  /** Runs admitted at once for one admission key; clamped to ≥ 1. */
  readonly perUserLimit: number;
  /** Waiters allowed in the queue; clamped to ≥ 0, 0 = unbounded. */
  readonly maxQueueSize: number;
  /** Waiters allowed per admission key; clamped to ≥ 0, 0 = unbounded. */
  readonly maxPendingPerUser: number;
  /** Monotonic clock in milliseconds, for `Lease.waitedMs`; defaults to `performance.now`. */
  readonly now?: () => number;
  /** Metrics hooks; called after the state change they report is complete. */
  readonly observer?: AdmissionObserver;
}

/**
 * Hooks for metrics. They run after the controller's state is consistent; one
 * that throws cannot corrupt admission (the error is rethrown from a microtask).
 */
export interface AdmissionObserver {
  /** A slot was granted, after `waitedMs` in the queue (`queued` as on the lease). */
  onAdmitted(waitedMs: number, queued: boolean): void;
  /** A request was refused with QUEUE_FULL, by the per-user cap or the global one. */
  onRejected(scope: "user" | "global"): void;
  /** A lease returned its slot (once per lease). */
  onReleased(): void;
}

/** Per-call options of `AdmissionController.acquire`. */
export interface AcquireOptions {
  /**
   * Aborting it withdraws the request while it waits: the waiter leaves the
   * queue at once and the promise rejects with `signal.reason`. It has no
   * effect once the promise has resolved: the lease then belongs to the caller.
   */
  readonly signal?: AbortSignal;
  /**
   * Called synchronously when the request is queued (before `acquire`
   * returns; when `acquire` is itself called from inside an admission
   * callback, right after that callback), then each time its 1-based
   * `position` (1 = head of the queue) or the `queueSize` (all pending
   * requests) changes. Never called for a request admitted without waiting,
   * and never twice in a row with the same values.
   */
  readonly onQueueUpdate?: (position: number, queueSize: number) => void;
}

/** FermiLink's `snapshot()` (spec §3), field names as on the wire (spec §1.2). */
export interface AdmissionSnapshot {
  active_total: number;
  pending_total: number;
  global_limit: number;
  per_user_limit: number;
}

/** FermiLink's `snapshot_for_user()` (spec §3, §1.4), with `can_run_now` fixed (§10 item 18). */
export interface UserAdmissionSnapshot {
  /** The normalised admission key. */
  user_key: string;
  /** Whether a request from this key made now would be admitted immediately. */
  can_run_now: boolean;
  per_user_active: number;
  per_user_pending: number;
  active_total: number;
  pending_total: number;
  global_limit: number;
  per_user_limit: number;
}
