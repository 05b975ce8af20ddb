import { getEventListeners } from "node:events";
import { describe, expect, it, vi } from "vitest";
import type { Lease } from "../../../src/admission/lease.js";
import { flush, leaseOf, makeController, track } from "./helpers.js";

// Spec §10 items 7 and 8, design §4: no slot leaks on any cancellation path.
describe("admission: abort and release paths never leak a slot", () => {
  it("abort while queued: removed at once, counts back to 0, promise rejects with the reason", async () => {
    const c = makeController({ globalLimit: 1, perUserLimit: 1 });
    const held = await c.acquire("user:a");
    const ac = new AbortController();
    const updates: [number, number][] = [];
    const b = track(c.acquire("user:b", { signal: ac.signal }));
    const cc = track(c.acquire("user:c", { onQueueUpdate: (p, s) => updates.push([p, s]) }));
    expect(c.snapshotForUser("user:b").per_user_pending).toBe(1);
    const reason = new Error("gone");
    ac.abort(reason);
    expect(c.pendingTotal).toBe(1);
    expect(c.snapshotForUser("user:b").per_user_pending).toBe(0);
    // c moved up from 2nd of 2 to 1st of 1, synchronously.
    expect(updates).toEqual([
      [2, 2],
      [1, 1],
    ]);
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(0);
    await flush();
    expect(b.state).toBe("rejected");
    expect(b.reason).toBe(reason);
    held.release();
    await flush();
    leaseOf(cc).release();
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
  });

  it("abort before acquire: rejects without queuing, even when a slot is free", async () => {
    const observer = { onAdmitted: vi.fn(), onRejected: vi.fn(), onReleased: vi.fn() };
    const c = makeController({ globalLimit: 1, perUserLimit: 1, observer });
    const ac = new AbortController();
    ac.abort(new Error("already gone"));
    const onQueueUpdate = vi.fn();
    await expect(c.acquire("user:a", { signal: ac.signal, onQueueUpdate })).rejects.toThrow(
      "already gone",
    );
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
    expect(onQueueUpdate).not.toHaveBeenCalled();
    expect(observer.onAdmitted).not.toHaveBeenCalled();
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(0);
  });

  it("abort at the instant of grant (the race): the lease is handed over with the grant, the caller releases it", async () => {
    const c = makeController({ globalLimit: 1, perUserLimit: 1 });
    const held = await c.acquire("user:a");
    const ac = new AbortController();
    const b = track(c.acquire("user:b", { signal: ac.signal }));
    // Same synchronous tick: the release grants b, then b's signal fires before
    // b's caller has resumed. FermiLink leaked this slot forever (spec §3).
    held.release();
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(0); // detached by the grant
    ac.abort(new Error("late"));
    expect(c.snapshot()).toMatchObject({ active_total: 1, pending_total: 0 });
    await flush();
    // Hand-over happened at the grant: the caller owns a lease, its slot is counted once.
    const lease = leaseOf(b);
    expect(lease.userKey).toBe("user:b");
    lease.release();
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
  });

  it("abort at the instant of grant, with the pipeline's pattern (await, throwIfAborted, finally release)", async () => {
    const c = makeController({ globalLimit: 1, perUserLimit: 1 });
    const held = await c.acquire("user:a");
    const ac = new AbortController();
    const run = async () => {
      let lease: Lease | undefined;
      try {
        lease = await c.acquire("user:b", { signal: ac.signal });
        ac.signal.throwIfAborted();
        return "ran";
      } finally {
        lease?.release();
      }
    };
    const outcome = run().catch((e: unknown) => e);
    held.release();
    ac.abort(new Error("client gone"));
    expect(await outcome).toEqual(new Error("client gone"));
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
  });

  it("abort just before the grant: the waiter is gone and the slot goes to the next one", async () => {
    const c = makeController({ globalLimit: 1, perUserLimit: 1 });
    const held = await c.acquire("user:a");
    const ac = new AbortController();
    const b = track(c.acquire("user:b", { signal: ac.signal }));
    const d = track(c.acquire("user:d"));
    ac.abort(new Error("gone"));
    held.release();
    await flush();
    expect(b.state).toBe("rejected");
    expect(leaseOf(d).userKey).toBe("user:d");
    expect(c.snapshot()).toMatchObject({ active_total: 1, pending_total: 0 });
    leaseOf(d).release();
    expect(c.activeTotal).toBe(0);
  });

  it("abort fired from inside an admission callback during the grant stays consistent", async () => {
    const ac = new AbortController();
    const c = makeController({
      globalLimit: 1,
      perUserLimit: 1,
      // Re-entrancy: the grant's own metrics hook aborts the granted waiter's signal.
      observer: {
        onAdmitted: (_waited, queued) => {
          if (queued) ac.abort(new Error("x"));
        },
        onRejected() {},
        onReleased() {},
      },
    });
    const held = await c.acquire("user:a");
    const b = track(c.acquire("user:b", { signal: ac.signal }));
    held.release();
    expect(ac.signal.aborted).toBe(true);
    await flush();
    expect(c.snapshot()).toMatchObject({ active_total: 1, pending_total: 0 });
    leaseOf(b).release();
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
  });

  it("double release returns one slot only, never another lease's slot of the same user", async () => {
    const onReleased = vi.fn();
    const c = makeController({
      globalLimit: 3,
      perUserLimit: 2,
      observer: { onAdmitted() {}, onRejected() {}, onReleased },
    });
    const first = await c.acquire("user:alice");
    const second = await c.acquire("user:alice");
    first.release();
    first.release();
    first.release();
    // FermiLink's release(user) would have taken alice's second slot here too.
    expect(c.snapshotForUser("user:alice").per_user_active).toBe(1);
    expect(c.activeTotal).toBe(1);
    expect(onReleased).toHaveBeenCalledTimes(1);
    expect(first.released).toBe(true);
    expect(second.released).toBe(false);
    second.release();
    expect(c.activeTotal).toBe(0);
  });

  it("release after abort: an abort after the grant changes nothing, release works once", async () => {
    const onReleased = vi.fn();
    const c = makeController({
      globalLimit: 1,
      perUserLimit: 1,
      observer: { onAdmitted() {}, onRejected() {}, onReleased },
    });
    const ac = new AbortController();
    const held = await c.acquire("user:a");
    const b = track(c.acquire("user:b", { signal: ac.signal }));
    held.release();
    await flush();
    ac.abort(new Error("after grant"));
    expect(c.activeTotal).toBe(1);
    leaseOf(b).release();
    leaseOf(b).release();
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
    expect(onReleased).toHaveBeenCalledTimes(2); // held once, b once
  });

  it("a fast-path grant never registers an abort listener", async () => {
    const c = makeController({ globalLimit: 1, perUserLimit: 1 });
    const ac = new AbortController();
    const lease = await c.acquire("user:a", { signal: ac.signal });
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(0);
    lease.release();
  });

  it("a throwing callback neither corrupts the state nor stops other callbacks", async () => {
    // The controller rethrows callback errors from a microtask; capture them
    // instead of letting them reach vitest's uncaught-exception handler.
    const deferred: (() => void)[] = [];
    const spy = vi.spyOn(globalThis, "queueMicrotask").mockImplementation((cb) => {
      deferred.push(cb);
    });
    try {
      const c = makeController({ globalLimit: 1, perUserLimit: 1 });
      const held = await c.acquire("user:a");
      const boom = new Error("callback bug");
      const updates: number[] = [];
      const b = track(
        c.acquire("user:b", {
          onQueueUpdate: () => {
            throw boom;
          },
        }),
      );
      void c.acquire("user:c", { onQueueUpdate: (p) => updates.push(p) });
      expect(updates).toEqual([2]);
      held.release();
      expect(updates).toEqual([2, 1]);
      await flush();
      expect(leaseOf(b).userKey).toBe("user:b");
      expect(c.snapshot()).toMatchObject({ active_total: 1, pending_total: 1 });
      // b's callback ran twice (queued, then the queue grew): two deferred rethrows.
      expect(deferred).toHaveLength(2);
      for (const rethrow of deferred) expect(rethrow).toThrow(boom);
    } finally {
      spy.mockRestore();
    }
  });
});
