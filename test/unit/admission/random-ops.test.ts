import { getEventListeners } from "node:events";
import { isDeepStrictEqual } from "node:util";
import { describe, expect, it } from "vitest";
import { AdmissionController } from "../../../src/admission/admission-controller.js";
import type { Lease } from "../../../src/admission/lease.js";
import { RunnerError } from "../../../src/errors/runner-error.js";
import { flush, rng, type Tracked, track } from "./helpers.js";
import { ReferenceAdmission } from "./reference-model.js";

interface Req {
  id: number;
  user: string;
  ac: AbortController;
  reason: Error;
  t: Tracked<Lease>;
  updates: [number, number][];
}

/**
 * Thousands of random acquire / abort / release steps, compared after every
 * step with the spec's algorithm (reference-model.ts) and with the live leases
 * and waiters the test itself holds. Replay a failure with its seed.
 */
async function runSeed(seed: number, steps: number): Promise<void> {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T | undefined => xs[Math.floor(r() * xs.length)];
  const limits = {
    globalLimit: 1 + Math.floor(r() * 4),
    perUserLimit: 1 + Math.floor(r() * 3),
    maxQueueSize: Math.floor(r() * 8),
    maxPendingPerUser: Math.floor(r() * 4),
  };
  const users = Array.from({ length: 1 + Math.floor(r() * 5) }, (_, i) => `user:u${i}`);
  let now = 0;
  const c = new AdmissionController({ ...limits, now: () => now });
  const model = new ReferenceAdmission(limits);
  const reqs: Req[] = [];
  const granted: number[] = [];
  const where = (step: number) => `seed ${seed} step ${step} ${JSON.stringify(limits)}`;
  const withKind = (kind: string) => reqs.filter((q) => model.outcome.get(q.id)?.kind === kind);

  const acquire = (step: number) => {
    const user = pick(users) ?? "user:u0";
    // Keys are normalised (spec §3): vary case and padding.
    const raw = r() < 0.3 ? `  ${user.toUpperCase()} ` : user;
    const preAborted = r() < 0.05;
    const req: Req = {
      id: reqs.length,
      user,
      ac: new AbortController(),
      reason: new Error(`abort ${reqs.length}`),
      t: { state: "pending", value: undefined, reason: undefined },
      updates: [],
    };
    reqs.push(req);
    if (preAborted) req.ac.abort(req.reason);
    const canRunNow = c.snapshotForUser(raw).can_run_now;
    const before = c.activeTotal;
    const p = c.acquire(raw, {
      signal: req.ac.signal,
      onQueueUpdate: (pos, size) => req.updates.push([pos, size]),
    });
    req.t = track(
      p.then((l) => {
        granted.push(req.id);
        return l;
      }),
    );
    model.acquire(req.id, user, now, preAborted);
    // §10 item 18: can_run_now is exactly "this request is admitted immediately".
    if (!preAborted && (c.activeTotal === before + 1) !== canRunNow) {
      expect(c.activeTotal === before + 1, where(step)).toBe(canRunNow);
    }
  };
  const abortWaiter = () => {
    const q = pick(withKind("queued"));
    if (!q) return;
    q.ac.abort(q.reason);
    model.abort(q.id, now);
  };
  const release = (kind: "active" | "released") => {
    const q = pick(withKind(kind));
    if (!q?.t.value) return;
    q.t.value.release();
    model.release(q.id, now);
  };
  const race = () => {
    // A release that may grant a waiter, and that waiter's abort, in one tick.
    const holder = pick(withKind("active"));
    const waiter = pick(withKind("queued"));
    if (!holder?.t.value || !waiter) return;
    holder.t.value.release();
    model.release(holder.id, now);
    waiter.ac.abort(waiter.reason);
    model.abort(waiter.id, now);
  };

  // Checks run after every step, so they stay cheap: expect() only on a mismatch,
  // and a request whose outcome is final is verified once.
  const eq = (actual: unknown, expected: unknown, msg: string) => {
    if (!isDeepStrictEqual(actual, expected)) expect(actual, msg).toEqual(expected);
  };
  const done = new Set<number>();
  const checkReq = (q: Req, msg: string) => {
    const o = model.outcome.get(q.id);
    const lease = q.t.value;
    if (o?.kind === "queued") eq(q.t.state, "pending", msg);
    if (o?.kind === "aborted") eq(q.t.reason === q.reason, true, msg);
    if (o?.kind === "full") {
      eq(q.t.reason instanceof RunnerError, true, msg);
      eq((q.t.reason as RunnerError).message, o.message, msg);
    }
    if (o?.kind === "active" || o?.kind === "released") {
      eq(
        [q.t.state, lease?.released, lease?.userKey],
        ["fulfilled", o.kind === "released", q.user],
        msg,
      );
    }
    if (o?.kind === "active") eq([lease?.queued, lease?.waitedMs], [o.queued, o.waitedMs], msg);
    // Never told the same thing twice in a row; never told anything if it never waited.
    for (let i = 1; i < q.updates.length; i++) {
      if (isDeepStrictEqual(q.updates[i], q.updates[i - 1])) eq(q.updates, "no repeats", msg);
    }
    if (!model.waited.has(q.id)) eq(q.updates, [], msg);
    if (o?.kind === "aborted" || o?.kind === "full" || o?.kind === "released") done.add(q.id);
  };
  const check = (step: number) => {
    const msg = where(step);
    for (const q of reqs) if (!done.has(q.id)) checkReq(q, msg);
    model.pending.forEach((p, i) => {
      eq(reqs[p.id]?.updates.at(-1), [i + 1, model.pending.length], msg);
    });
    const live = withKind("active").length;
    eq([c.activeTotal, model.activeTotal], [live, live], msg);
    eq(c.pendingTotal, withKind("queued").length, msg);
    eq(c.activeTotal <= c.globalLimit, true, msg);
    eq(granted, model.grants, msg);
    for (const u of users) {
      const s = c.snapshotForUser(u);
      eq(
        [s.per_user_active, s.per_user_pending],
        [model.activeByUser.get(u) ?? 0, model.pendingOf(u)],
        msg,
      );
      eq(s.per_user_active <= c.perUserLimit, true, msg);
    }
    // Settled after every operation: a free global slot means every waiter is
    // held back by its own per-user limit (what can_run_now relies on).
    if (c.activeTotal < c.globalLimit) {
      for (const p of model.pending) eq(model.canRun(p.user), false, msg);
    }
  };

  for (let step = 0; step < steps; step++) {
    now += 1 + Math.floor(r() * 10);
    const x = r();
    if (x < 0.42) acquire(step);
    else if (x < 0.6) abortWaiter();
    else if (x < 0.65)
      pick(withKind("active"))?.ac.abort(); // after the grant: no effect
    else if (x < 0.88) release("active");
    else if (x < 0.93)
      release("released"); // double release: no effect
    else race();
    await flush();
    check(step);
  }
  for (const q of withKind("queued")) {
    q.ac.abort(q.reason);
    model.abort(q.id, now);
  }
  for (const q of withKind("active")) {
    q.t.value?.release();
    model.release(q.id, now);
  }
  await flush();
  check(steps);
  expect(c.snapshot()).toMatchObject({ active_total: 0, pending_total: 0 });
  for (const u of users) {
    expect(c.snapshotForUser(u)).toMatchObject({ per_user_active: 0, per_user_pending: 0 });
  }
  expect(reqs.filter((q) => q.t.state === "pending")).toEqual([]);
  for (const q of reqs) expect(getEventListeners(q.ac.signal, "abort")).toHaveLength(0);
}

describe("admission: random operations against the spec's algorithm", () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) {
    it(`seed ${seed}: 1500 steps keep limits, counters, FIFO and can_run_now exact`, async () => {
      await runSeed(seed, 1500);
    });
  }
});
