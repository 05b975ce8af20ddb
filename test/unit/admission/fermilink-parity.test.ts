import { describe, expect, it } from "vitest";
import { RunnerError } from "../../../src/errors/runner-error.js";
import { flush, leaseOf, makeController, track } from "./helpers.js";

// One test per FermiLink test in tests/test_runner_admission.py (spec §9), same names.
describe("FermiLink admission parity (spec §9 test_runner_admission.py)", () => {
  it("test_acquire_and_release_updates_active_counts", async () => {
    const c = makeController({ globalLimit: 2, perUserLimit: 1 });
    const lease = await c.acquire("user:alice");
    expect(lease.queued).toBe(false);
    expect(lease.waitedMs).toBe(0);
    expect(c.snapshot()).toEqual({
      active_total: 1,
      pending_total: 0,
      global_limit: 2,
      per_user_limit: 1,
    });
    lease.release();
    expect(c.snapshot()).toEqual({
      active_total: 0,
      pending_total: 0,
      global_limit: 2,
      per_user_limit: 1,
    });
  });

  it("test_global_limit_queues_until_slot_is_released", async () => {
    const c = makeController({ globalLimit: 1, perUserLimit: 1 });
    const first = await c.acquire("user:alice");
    const second = track(c.acquire("user:bob"));
    await flush();
    expect(second.state).toBe("pending");
    expect(c.snapshot()).toMatchObject({ active_total: 1, pending_total: 1 });
    first.release();
    await flush();
    expect(leaseOf(second).queued).toBe(true);
    expect(leaseOf(second).userKey).toBe("user:bob");
    expect(c.snapshot()).toMatchObject({ active_total: 1, pending_total: 0 });
    leaseOf(second).release();
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
  });

  it("test_per_user_limit_does_not_block_other_users", async () => {
    const c = makeController({ globalLimit: 2, perUserLimit: 1 });
    const alice1 = await c.acquire("user:alice");
    const alice2 = track(c.acquire("user:alice"));
    const bob = track(c.acquire("user:bob"));
    // bob is admitted at once, inside acquire (FermiLink's dispatch on enqueue),
    // while alice's second request waits on her per-user limit.
    expect(c.activeTotal).toBe(2);
    await flush();
    expect(alice2.state).toBe("pending");
    // FermiLink grants bob through the queue path (someone was pending), so queued=true.
    expect(leaseOf(bob).queued).toBe(true);
    expect(c.snapshotForUser("user:bob").per_user_active).toBe(1);
    expect(c.snapshotForUser("user:alice")).toMatchObject({
      per_user_active: 1,
      per_user_pending: 1,
    });
    alice1.release();
    await flush();
    expect(leaseOf(alice2).queued).toBe(true);
    expect(c.snapshot()).toMatchObject({ active_total: 2, pending_total: 0 });
    leaseOf(alice2).release();
    leaseOf(bob).release();
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
    expect(c.snapshotForUser("user:alice")).toMatchObject({
      per_user_active: 0,
      per_user_pending: 0,
    });
  });

  it("test_queue_full_raises_error", async () => {
    const c = makeController({ globalLimit: 1, perUserLimit: 1, maxQueueSize: 1 });
    await c.acquire("user:a");
    const queued = track(c.acquire("user:b"));
    const err = await c.acquire("user:c").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RunnerError);
    expect((err as RunnerError).code).toBe("QUEUE_FULL");
    expect((err as RunnerError).message).toBe("Runner queue is full (1 pending requests).");
    // The refusal changed nothing.
    expect(c.snapshot()).toMatchObject({ active_total: 1, pending_total: 1 });
    expect(queued.state).toBe("pending");
  });

  it("test_cancelled_waiter_is_removed_from_queue", async () => {
    const c = makeController({ globalLimit: 1, perUserLimit: 1 });
    const first = await c.acquire("user:a");
    const ac = new AbortController();
    const waiter = track(c.acquire("user:b", { signal: ac.signal }));
    expect(c.pendingTotal).toBe(1);
    const reason = new Error("client left");
    ac.abort(reason);
    // Removed at once, not when the waiter would have been granted.
    expect(c.pendingTotal).toBe(0);
    await flush();
    expect(waiter.state).toBe("rejected");
    expect(waiter.reason).toBe(reason);
    first.release();
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
    const later = await c.acquire("user:b");
    expect(later.queued).toBe(false);
  });

  it("test_per_user_pending_cap_blocks_spammer", async () => {
    const c = makeController({ globalLimit: 1, perUserLimit: 1, maxPendingPerUser: 2 });
    const held = await c.acquire("user:alice");
    const q1 = track(c.acquire("user:alice"));
    const q2 = track(c.acquire("user:alice"));
    const err = await c.acquire("user:alice").catch((e: unknown) => e);
    expect((err as RunnerError).code).toBe("QUEUE_FULL");
    expect((err as RunnerError).message).toBe(
      "Runner queue is full for this user (2 pending requests).",
    );
    expect(c.snapshotForUser("user:alice").per_user_pending).toBe(2);
    held.release();
    await flush();
    expect(q1.state).toBe("fulfilled");
    expect(q2.state).toBe("pending");
    leaseOf(q1).release();
    await flush();
    expect(q2.state).toBe("fulfilled");
    leaseOf(q2).release();
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
  });

  it("test_other_user_can_queue_when_spammer_hits_pending_cap", async () => {
    const c = makeController({
      globalLimit: 1,
      perUserLimit: 1,
      maxQueueSize: 3,
      maxPendingPerUser: 2,
    });
    const order: string[] = [];
    const record =
      (name: string) =>
      <T>(lease: T): T => {
        order.push(name);
        return lease;
      };
    const held = await c.acquire("user:alice");
    const a1 = track(c.acquire("user:alice").then(record("alice1")));
    const a2 = track(c.acquire("user:alice").then(record("alice2")));
    await expect(c.acquire("user:alice")).rejects.toThrow(
      "Runner queue is full for this user (2 pending requests).",
    );
    const bob = track(c.acquire("user:bob").then(record("bob")));
    expect(c.snapshot().pending_total).toBe(3);
    held.release();
    await flush();
    leaseOf(a1).release();
    await flush();
    leaseOf(a2).release();
    await flush();
    expect(order).toEqual(["alice1", "alice2", "bob"]);
    leaseOf(bob).release();
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
  });

  it("test_snapshot_for_user_reports_readiness_and_per_user_counts", async () => {
    const c = makeController({ globalLimit: 2, perUserLimit: 1 });
    await c.acquire("user:alice");
    const pending = track(c.acquire("user:alice"));
    expect(pending.state).toBe("pending");
    const alice = c.snapshotForUser("  USER:Alice ");
    expect(alice).toEqual({
      user_key: "user:alice",
      can_run_now: false, // at her per-user limit
      per_user_active: 1,
      per_user_pending: 1,
      active_total: 1,
      pending_total: 1,
      global_limit: 2,
      per_user_limit: 1,
    });
    const bob = c.snapshotForUser("user:bob");
    expect(bob.user_key).toBe("user:bob");
    expect(bob.per_user_active).toBe(0);
    expect(bob.per_user_pending).toBe(0);
    // FermiLink says false here because something is pending (spec §10 item 18).
    // The fix: a global slot is free and the only waiter (alice's) is held back by
    // her own per-user limit, so dispatch would admit bob at once: true.
    expect(bob.can_run_now).toBe(true);
    // ...and acquire agrees: bob is admitted inside the call.
    void c.acquire("user:bob");
    expect(c.snapshotForUser("user:bob").per_user_active).toBe(1);
    expect(c.snapshotForUser("user:bob").can_run_now).toBe(false);
  });
});
