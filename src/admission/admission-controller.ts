import { RunnerError } from "../errors/runner-error.js";
import type {
  AcquireOptions,
  AdmissionControllerOptions,
  AdmissionObserver,
  AdmissionSnapshot,
  UserAdmissionSnapshot,
} from "./admission-types.js";
import { Lease } from "./lease.js";
import { normalizeAdmissionKey } from "./user-key.js";
import { decrement, increment, safeCall, type Waiter, WaitQueue } from "./wait-queue.js";

export type {
  AcquireOptions,
  AdmissionControllerOptions,
  AdmissionObserver,
  AdmissionSnapshot,
  UserAdmissionSnapshot,
} from "./admission-types.js";

/** Spec §3 clamps limits like FermiLink; a non-finite value is a configuration bug, so it throws. */
function clampInt(name: string, value: number, min: number): number {
  if (!Number.isFinite(value))
    throw new RangeError(`${name} must be a finite number, got ${value}.`);
  return Math.max(min, Math.floor(value));
}

/**
 * FermiLink's admission controller (spec §3, design §4): a global limit, a
 * per-key limit, a bounded queue with a per-key pending cap, FIFO among
 * eligible waiters, and the same 429 messages.
 *
 * All state changes are synchronous. JavaScript runs one thing at a time and
 * no method awaits between its check and its update, so FermiLink's lock is
 * not needed, and the interleavings behind its cancel race (§10 item 7) cannot
 * happen. Hand-over rule (the race): a grant and its hand-over are one step.
 * Dispatch removes the waiter, counts the slot, detaches the abort listener
 * and resolves the promise together, and an aborted waiter is never granted
 * (its listener removed it from the queue the moment its signal fired). From
 * then on the lease belongs to the caller, whatever its signal does later:
 * the caller releases it (a `finally` around the code after `await`). So no
 * slot is ever counted without an owner. Abort before the grant = rejected,
 * no slot; abort after = a lease the caller must release.
 *
 * Callbacks (`onQueueUpdate`, observer) run only once the state is consistent
 * and may re-enter the controller (acquire, release, abort) safely.
 */
export class AdmissionController {
  /** Clamped global limit (≥ 1). */
  readonly globalLimit: number;
  /** Clamped per-key limit (≥ 1). */
  readonly perUserLimit: number;
  /** Clamped queue capacity (≥ 0, 0 = unbounded). */
  readonly maxQueueSize: number;
  /** Clamped per-key pending cap (≥ 0, 0 = unbounded). */
  readonly maxPendingPerUser: number;

  readonly #now: () => number;
  readonly #observer: AdmissionObserver | undefined;
  #active = 0;
  readonly #activeByUser = new Map<string, number>();
  readonly #queue = new WaitQueue();
  /** Observer calls waiting to run once the state is consistent. */
  readonly #outbox: (() => void)[] = [];
  #flushing = false;
  #draining = false;

  /** Builds a controller with no active runs and an empty queue. */
  constructor(options: AdmissionControllerOptions) {
    this.globalLimit = clampInt("globalLimit", options.globalLimit, 1);
    this.perUserLimit = clampInt("perUserLimit", options.perUserLimit, 1);
    this.maxQueueSize = clampInt("maxQueueSize", options.maxQueueSize, 0);
    this.maxPendingPerUser = clampInt("maxPendingPerUser", options.maxPendingPerUser, 0);
    this.#now = options.now ?? (() => performance.now());
    this.#observer = options.observer;
  }

  /** Slots held right now, over all keys. */
  /**
   * The runner is shutting down: no run is admitted any more (the pipeline
   * answers 503 before asking), so `can_run_now` must not promise one.
   */
  markDraining(): void {
    this.#draining = true;
  }

  get activeTotal(): number {
    return this.#active;
  }

  /** Requests waiting in the queue right now. */
  get pendingTotal(): number {
    return this.#queue.size;
  }

  /**
   * The refusal `acquire` would give right now (reported to the observer as
   * one), or null. Lets a caller answer 429 before any other work, as
   * FermiLink does (admission comes before setup); `acquire` still decides.
   */
  refusal(userKey: string): RunnerError | null {
    return this.#refusal(normalizeAdmissionKey(userKey));
  }

  /** `refusal` for a normalised key. */
  #refusal(key: string): RunnerError | null {
    if (this.#queue.size === 0 && this.#canRun(key)) return null;
    const scope = this.#capScope(key);
    if (scope === null) return null;
    const observer = this.#observer;
    if (observer) this.#outbox.push(() => observer.onRejected(scope));
    this.#flush();
    return new RunnerError("QUEUE_FULL", this.#capMessage(scope, key));
  }

  /**
   * Waits for a slot for `userKey` (normalised as in spec §3). FermiLink's
   * order (spec §3): an already-aborted signal rejects with its reason, nothing
   * queued; the fast path (`queued: false`) only when the key can run and
   * nobody waits, which keeps the queue FIFO; otherwise the per-key cap, then
   * the global cap, each a `RunnerError("QUEUE_FULL")` with FermiLink's message
   * and no state change; otherwise the request is queued and dispatch runs at
   * once, so it may be granted (`queued: true`) before this method returns.
   * As in FermiLink, a full queue refuses even a request dispatch would have
   * admitted at once (the caps come first); `can_run_now` is false then.
   * See the class comment for what an abort does before and after the grant.
   */
  acquire(userKey: string, opts: AcquireOptions = {}): Promise<Lease> {
    const key = normalizeAdmissionKey(userKey);
    const { signal, onQueueUpdate } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#queue.size === 0 && this.#canRun(key)) {
      const lease = this.#grant(key, false, 0);
      this.#flush();
      return Promise.resolve(lease);
    }
    const refused = this.#refusal(key);
    if (refused) return Promise.reject(refused);
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        userKey: key,
        enqueuedAt: this.#now(),
        resolve,
        reject,
        signal,
        onAbort: () => this.#withdraw(waiter),
        onQueueUpdate,
        lastPosition: 0,
        lastSize: 0,
      };
      this.#queue.push(waiter);
      signal?.addEventListener("abort", waiter.onAbort, { once: true });
      this.#dispatch();
      this.#flush();
    });
  }

  /** FermiLink's `snapshot()` (spec §3). */
  snapshot(): AdmissionSnapshot {
    return {
      active_total: this.#active,
      pending_total: this.#queue.size,
      global_limit: this.globalLimit,
      per_user_limit: this.perUserLimit,
    };
  }

  /**
   * FermiLink's `snapshot_for_user()` (spec §3), with `can_run_now` telling
   * the truth (§10 item 18): it is what `acquire` would do now. With nobody
   * queued that is the fast path. With waiters, the newcomer is queued and
   * dispatch admits it at once iff the key can run: dispatch ran after every
   * change, so while a global slot is free every waiter is held back by its
   * own per-key limit and dispatch skips them all. Unless a cap refuses the
   * newcomer first (FermiLink checks the caps before queuing).
   */
  snapshotForUser(userKey: string): UserAdmissionSnapshot {
    const key = normalizeAdmissionKey(userKey);
    const canRunNow =
      !this.#draining &&
      this.#canRun(key) &&
      (this.#queue.size === 0 || this.#capScope(key) === null);
    return {
      user_key: key,
      can_run_now: canRunNow,
      per_user_active: this.#activeByUser.get(key) ?? 0,
      per_user_pending: this.#queue.pendingFor(key),
      ...this.snapshot(),
    };
  }

  /** FermiLink's `can_run(user)` (spec §3). */
  #canRun(key: string): boolean {
    return (
      this.#active < this.globalLimit && (this.#activeByUser.get(key) ?? 0) < this.perUserLimit
    );
  }

  /** Which cap refuses a new waiter for `key`, in FermiLink's order (spec §3 step 2). */
  #capScope(key: string): "user" | "global" | null {
    const userPending = this.#queue.pendingFor(key);
    if (this.maxPendingPerUser > 0 && userPending >= this.maxPendingPerUser) return "user";
    if (this.maxQueueSize > 0 && this.#queue.size >= this.maxQueueSize) return "global";
    return null;
  }

  /** FermiLink's exact 429 texts (spec §1.1, §3). */
  #capMessage(scope: "user" | "global", key: string): string {
    return scope === "user"
      ? `Runner queue is full for this user (${this.#queue.pendingFor(key)} pending requests).`
      : `Runner queue is full (${this.#queue.size} pending requests).`;
  }

  /** Counts a slot and builds its lease; the observer hears of it at the next flush. */
  #grant(key: string, queued: boolean, waitedMs: number): Lease {
    this.#active++;
    increment(this.#activeByUser, key);
    const observer = this.#observer;
    if (observer) this.#outbox.push(() => observer.onAdmitted(waitedMs, queued));
    return new Lease({ userKey: key, queued, waitedMs }, () => this.#release(key));
  }

  /** FermiLink's `release(user)` (spec §3); called once per lease by `Lease.release`. */
  #release(key: string): void {
    if ((this.#activeByUser.get(key) ?? 0) <= 0) return;
    decrement(this.#activeByUser, key);
    this.#active = Math.max(0, this.#active - 1);
    const observer = this.#observer;
    if (observer) this.#outbox.push(() => observer.onReleased());
    this.#dispatch();
    this.#flush();
  }

  /** The waiter's signal fired while it was queued: leave at once (§10 items 7, 8). */
  #withdraw(waiter: Waiter): void {
    // Not queued means already granted; the grant detaches this listener, so this is defensive.
    if (!this.#queue.remove(waiter)) return;
    waiter.reject(waiter.signal?.reason);
    this.#dispatch();
    this.#flush();
  }

  /**
   * FermiLink's dispatch (spec §3) in one pass: FermiLink rescans from the
   * head for each grant, but a key skipped in a pass stays at its limit for
   * the rest of it (counts only grow), so one ordered pass grants exactly the
   * same waiters in the same order, in O(queue). Runs no caller code.
   */
  #dispatch(): void {
    if (this.#queue.size === 0 || this.#active >= this.globalLimit) return;
    this.#queue.drain((w) => {
      if (this.#active >= this.globalLimit) return false;
      if ((this.#activeByUser.get(w.userKey) ?? 0) >= this.perUserLimit) return false;
      w.signal?.removeEventListener("abort", w.onAbort);
      w.resolve(this.#grant(w.userKey, true, Math.max(0, this.#now() - w.enqueuedAt)));
      return true;
    });
  }

  /**
   * Runs pending observer calls, then position updates, until nothing changes.
   * A callback that re-enters the controller finds `#flushing` set: its own
   * state change is complete, and this loop delivers its notifications.
   */
  #flush(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      for (;;) {
        const call = this.#outbox.shift();
        if (call) {
          safeCall(call);
        } else if (this.#queue.moved) {
          this.#queue.notifyPositions();
        } else {
          return;
        }
      }
    } finally {
      this.#flushing = false;
    }
  }
}
