/**
 * A literal, deliberately naive transcription of FermiLink's admission
 * algorithm (spec §3): rescans from the head for every grant, plain arrays.
 * The random test drives it side by side with `AdmissionController` and
 * demands the same grants in the same order, so the controller's one-pass
 * dispatch and incremental bookkeeping are checked against the spec's text.
 */

/** What the model expects a request's promise to have become. */
export type ModelOutcome =
  | { kind: "queued" }
  | { kind: "active"; queued: boolean; waitedMs: number }
  | { kind: "released" }
  | { kind: "full"; message: string }
  | { kind: "aborted" };

/** The controller's limits, already clamped. */
export interface ModelLimits {
  globalLimit: number;
  perUserLimit: number;
  maxQueueSize: number;
  maxPendingPerUser: number;
}

interface Pending {
  id: number;
  user: string;
  enqueuedAt: number;
}

/** FermiLink's controller state and transitions, request by request. */
export class ReferenceAdmission {
  readonly outcome = new Map<number, ModelOutcome>();
  /** Ids in the order their grants happened. */
  readonly grants: number[] = [];
  /** Ids that were still waiting when their `acquire` call returned. */
  readonly waited = new Set<number>();
  readonly activeByUser = new Map<string, number>();
  readonly userOf = new Map<number, string>();
  pending: Pending[] = [];
  activeTotal = 0;

  constructor(readonly limits: ModelLimits) {}

  /** `can_run(user)`. */
  canRun(user: string): boolean {
    return (
      this.activeTotal < this.limits.globalLimit &&
      (this.activeByUser.get(user) ?? 0) < this.limits.perUserLimit
    );
  }

  /** Waiters of `user`. */
  pendingOf(user: string): number {
    return this.pending.filter((p) => p.user === user).length;
  }

  /** `acquire(user)`, spec §3 steps 1 to 3 (an already-aborted signal first). */
  acquire(id: number, user: string, now: number, preAborted: boolean): void {
    this.userOf.set(id, user);
    if (preAborted) {
      this.outcome.set(id, { kind: "aborted" });
      return;
    }
    if (this.pending.length === 0 && this.canRun(user)) {
      this.grant(id, user, false, 0);
      return;
    }
    const { maxPendingPerUser, maxQueueSize } = this.limits;
    const mine = this.pendingOf(user);
    if (maxPendingPerUser > 0 && mine >= maxPendingPerUser) {
      const message = `Runner queue is full for this user (${mine} pending requests).`;
      this.outcome.set(id, { kind: "full", message });
      return;
    }
    if (maxQueueSize > 0 && this.pending.length >= maxQueueSize) {
      const message = `Runner queue is full (${this.pending.length} pending requests).`;
      this.outcome.set(id, { kind: "full", message });
      return;
    }
    this.pending.push({ id, user, enqueuedAt: now });
    this.outcome.set(id, { kind: "queued" });
    this.dispatch(now);
    if (this.outcome.get(id)?.kind === "queued") this.waited.add(id);
  }

  /** The waiter's signal fired: remove it if still queued, then dispatch. */
  abort(id: number, now: number): void {
    const i = this.pending.findIndex((p) => p.id === id);
    if (i < 0) return;
    this.pending.splice(i, 1);
    this.outcome.set(id, { kind: "aborted" });
    this.dispatch(now);
  }

  /** `release(user)` for one lease, then dispatch. */
  release(id: number, now: number): void {
    if (this.outcome.get(id)?.kind !== "active") return;
    const user = this.userOf.get(id) ?? "";
    this.activeByUser.set(user, (this.activeByUser.get(user) ?? 0) - 1);
    this.activeTotal--;
    this.outcome.set(id, { kind: "released" });
    this.dispatch(now);
  }

  /** Dispatch as the spec words it: rescan from the head for each grant. */
  dispatch(now: number): void {
    while (this.activeTotal < this.limits.globalLimit && this.pending.length > 0) {
      const i = this.pending.findIndex(
        (p) => (this.activeByUser.get(p.user) ?? 0) < this.limits.perUserLimit,
      );
      if (i < 0) return;
      const [p] = this.pending.splice(i, 1);
      if (p) this.grant(p.id, p.user, true, now - p.enqueuedAt);
    }
  }

  private grant(id: number, user: string, queued: boolean, waitedMs: number): void {
    this.activeTotal++;
    this.activeByUser.set(user, (this.activeByUser.get(user) ?? 0) + 1);
    this.outcome.set(id, { kind: "active", queued, waitedMs });
    this.grants.push(id);
  }
}
