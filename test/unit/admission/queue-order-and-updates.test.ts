import { describe, expect, it, vi } from "vitest";
import type { Lease } from "../../../src/admission/lease.js";
import type { RunnerError } from "../../../src/errors/runner-error.js";
import { flush, leaseOf, makeController, type Tracked, track } from "./helpers.js";

describe("admission: FIFO among eligible, queue updates, can_run_now (spec §3, §10 item 18)", () => {
  it("FIFO among eligible with a blocked head: skips users at their limit, keeps their order", async () => {
    const c = makeController({ globalLimit: 2, perUserLimit: 1 });
    const order: string[] = [];
    const req = (user: string, name: string): Tracked<Lease> =>
      track(
        c.acquire(`user:${user}`).then((l) => {
          order.push(name);
          return l;
        }),
      );
    const a1 = await c.acquire("user:alice");
    const b1 = await c.acquire("user:bob");
    const a2 = req("alice", "a2");
    const a3 = req("alice", "a3");
    const c1 = req("carol", "c1");
    const b2 = req("bob", "b2");
    const d1 = req("dave", "d1");
    expect(c.pendingTotal).toBe(5);
    b1.release(); // alice's two are blocked by her limit: carol goes first
    await flush();
    leaseOf(c1).release(); // alice still blocked: bob's second
    await flush();
    a1.release(); // now alice's head request
    await flush();
    leaseOf(b2).release(); // a3 blocked again (alice holds a2): dave
    await flush();
    leaseOf(a2).release();
    await flush();
    expect(order).toEqual(["c1", "b2", "a2", "d1", "a3"]);
    leaseOf(d1).release();
    leaseOf(a3).release();
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
  });

  it("onQueueUpdate reports 1-based position and queue size on every change, and only then", async () => {
    const c = makeController({ globalLimit: 1, perUserLimit: 1 });
    const held = await c.acquire("user:a");
    const calls: Record<string, [number, number][]> = { b: [], c: [], d: [] };
    const opts = (name: "b" | "c" | "d", signal?: AbortSignal) => ({
      signal,
      onQueueUpdate: (p: number, s: number) => calls[name]?.push([p, s]),
    });
    const acC = new AbortController();
    const b = track(c.acquire("user:b", opts("b")));
    expect(calls.b).toEqual([[1, 1]]); // synchronously, before acquire returned
    void c.acquire("user:c", opts("c", acC.signal)).catch(() => {});
    const d = track(c.acquire("user:d", opts("d")));
    acC.abort();
    held.release();
    await flush();
    expect(calls).toEqual({
      b: [
        [1, 1],
        [1, 2],
        [1, 3],
        [1, 2],
      ],
      c: [
        [2, 2],
        [2, 3],
      ],
      d: [
        [3, 3],
        [2, 2],
        [1, 1],
      ],
    });
    leaseOf(b).release();
    await flush();
    leaseOf(d).release();
    expect(calls.d).toHaveLength(3); // granted: no more updates
  });

  it("onQueueUpdate is not called when nothing changed, nor for a request admitted without waiting", async () => {
    const c = makeController({ globalLimit: 2, perUserLimit: 1, maxPendingPerUser: 1 });
    const a1 = await c.acquire("user:alice");
    const b1 = await c.acquire("user:bob");
    const onA2 = vi.fn();
    const a2 = track(c.acquire("user:alice", { onQueueUpdate: onA2 }));
    expect(onA2.mock.calls).toEqual([[1, 1]]);
    b1.release(); // a free slot, but alice is at her limit: queue unchanged
    await expect(c.acquire("user:alice")).rejects.toThrow(
      "Runner queue is full for this user (1 pending requests).",
    );
    c.snapshotForUser("user:alice");
    expect(onA2).toHaveBeenCalledTimes(1);
    // carol is queued behind alice's waiter, and dispatch admits her in the same call.
    const onCarol = vi.fn();
    const carol = await c.acquire("user:carol", { onQueueUpdate: onCarol });
    expect(carol.queued).toBe(true);
    expect(onCarol).not.toHaveBeenCalled();
    expect(onA2).toHaveBeenCalledTimes(1);
    a1.release();
    await flush();
    expect(leaseOf(a2).queued).toBe(true);
    expect(onA2).toHaveBeenCalledTimes(1);
  });

  it("can_run_now matches what acquire would do, in each case", async () => {
    const c = makeController({ globalLimit: 2, perUserLimit: 1, maxQueueSize: 1 });
    expect(c.snapshotForUser("user:bob").can_run_now).toBe(true); // empty: fast path
    const a1 = await c.acquire("user:alice");
    void c.acquire("user:alice"); // pending, blocked by alice's limit
    // Queue full (1/1) and a slot free: FermiLink checks caps before queuing, so
    // bob would get 429, not a slot. can_run_now says so.
    expect(c.snapshotForUser("user:bob").can_run_now).toBe(false);
    const err = (await c.acquire("user:bob").catch((e: unknown) => e)) as RunnerError;
    expect(err.code).toBe("QUEUE_FULL");
    expect(c.activeTotal).toBe(1);

    const d = makeController({ globalLimit: 1, perUserLimit: 1 });
    await d.acquire("user:alice");
    void d.acquire("user:carol");
    expect(d.snapshotForUser("user:bob").can_run_now).toBe(false); // global limit reached
    a1.release();
  });

  it("waitedMs and the observer use the injected clock", async () => {
    let now = 1_000;
    const admitted: [number, boolean][] = [];
    const rejected: string[] = [];
    const c = makeController({
      globalLimit: 1,
      perUserLimit: 1,
      maxPendingPerUser: 1,
      maxQueueSize: 2,
      now: () => now,
      observer: {
        onAdmitted: (w, q) => admitted.push([w, q]),
        onRejected: (s) => rejected.push(s),
        onReleased() {},
      },
    });
    const a = await c.acquire("user:a");
    const b = track(c.acquire("user:b"));
    await expect(c.acquire("user:b")).rejects.toThrow(
      "Runner queue is full for this user (1 pending requests).",
    );
    void c.acquire("user:c");
    await expect(c.acquire("user:d")).rejects.toThrow("Runner queue is full (2 pending requests).");
    now = 1_250;
    a.release();
    await flush();
    expect(leaseOf(b).waitedMs).toBe(250);
    expect(admitted).toEqual([
      [0, false],
      [250, true],
    ]);
    expect(rejected).toEqual(["user", "global"]);
  });
});
