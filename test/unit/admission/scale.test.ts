import { describe, expect, it } from "vitest";
import type { Lease } from "../../../src/admission/lease.js";
import { flush, makeController } from "./helpers.js";

describe("admission at scale (2,000 waiters)", () => {
  it("drains 2,000 waiters in FIFO order with position updates, in linear passes", async () => {
    const n = 2_000;
    const c = makeController({ globalLimit: 4, perUserLimit: 1 });
    const granted: number[] = [];
    const leases: Lease[] = [];
    let updates = 0;
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      void c
        .acquire(`user:u${i}`, {
          onQueueUpdate: () => {
            updates++;
          },
        })
        .then((l) => {
          granted.push(i);
          leases.push(l);
        });
    }
    expect(c.snapshot()).toMatchObject({ active_total: 4, pending_total: n - 4 });
    while (granted.length < n || leases.length > 0) {
      await flush();
      leases.shift()?.release();
    }
    const elapsedMs = performance.now() - started;
    expect(granted).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
    // m = n - 4 waiters. Filling: the s-th arrival tells all s waiters (new size), sum = m(m+1)/2.
    // Draining: each grant removes the head and tells the k left, sum = m(m-1)/2. Total m^2.
    const m = n - 4;
    expect(updates).toBe(m * m);
    // Generous bound: quadratic rescans per dispatch (O(n^3) overall) would take minutes.
    expect(elapsedMs).toBeLessThan(10_000);
  });
});
