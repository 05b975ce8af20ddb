import { describe, expect, it } from "vitest";
import {
  callersArrivingSince,
  nextSpawnTurn,
  noteCallerArrival,
  notePreparing,
  runsPreparing,
  runsPreparingBefore,
} from "../../../src/process/spawn-turns.js";

describe("spawn turns", () => {
  it("grants turns in request order, one event-loop iteration apart", async () => {
    const order: string[] = [];
    const turns = [1, 2, 3].map((n) => nextSpawnTurn().then(() => order.push(`spawn ${n}`)));
    // I/O that becomes ready meanwhile (here: immediates queued after each grant) runs between spawns.
    const io = (async () => {
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setImmediate(r));
        order.push(`io ${i}`);
      }
    })();
    await Promise.all([...turns, io]);
    expect(order.filter((o) => o.startsWith("spawn"))).toEqual(["spawn 1", "spawn 2", "spawn 3"]);
    // Never two spawns back to back without the loop turning in between.
    const firstSpawn = order.indexOf("spawn 1");
    const lastSpawn = order.indexOf("spawn 3");
    expect(order.slice(firstSpawn, lastSpawn + 1).some((o) => o.startsWith("io"))).toBe(true);
  });

  it("lets pending first events go before a spawn, for a bounded time", async () => {
    let pending = true;
    const start = Date.now();
    setTimeout(() => {
      pending = false;
    }, 30);
    await nextSpawnTurn(() => pending, 1000);
    expect(pending).toBe(false);
    // Never longer than the bound, even when the others never finish.
    const t = Date.now();
    await nextSpawnTurn(() => true, 50);
    expect(Date.now() - t).toBeLessThan(500);
    expect(Date.now() - start).toBeGreaterThanOrEqual(30);
  });

  it("lets a run that was aborted stop waiting at once, and pass its turn on", async () => {
    // An earlier turn that holds the line for its whole bound.
    const first = nextSpawnTurn(() => true, 1000);
    const gone = new AbortController();
    const t = Date.now();
    const aborted = nextSpawnTurn(() => true, 1000, gone.signal);
    const after = nextSpawnTurn(() => false, 1000);
    setTimeout(() => gone.abort(), 20);
    await aborted;
    // Not after the earlier turn's 1000 ms: when its caller left.
    expect(Date.now() - t).toBeLessThan(600);
    await first;
    const firstDone = Date.now();
    await after;
    // Its own turn, when it came, waited for nothing.
    expect(Date.now() - firstDone).toBeLessThan(300);
  });

  it("counts callers as arriving while another came in within the last 10 ms", () => {
    const t = 1_000_000;
    const own = noteCallerArrival(t);
    // A lone caller never waits for its own request.
    expect(callersArrivingSince(own, t)).toBe(false);
    expect(callersArrivingSince(own, t + 1)).toBe(false);
    noteCallerArrival(t + 5);
    expect(callersArrivingSince(own, t + 5)).toBe(true);
    expect(callersArrivingSince(own, t + 14)).toBe(true);
    // The flood is over once 10 ms pass without a caller.
    expect(callersArrivingSince(own, t + 15)).toBe(false);
    noteCallerArrival(t + 40);
    expect(callersArrivingSince(own, t + 41)).toBe(true);
    // The newest caller does not wait for itself either.
    const newest = noteCallerArrival(t + 45);
    expect(callersArrivingSince(newest, t + 46)).toBe(false);
  });

  it("holds spawns back for at most the first second of a flood that does not stop", () => {
    const t = 2_000_000;
    const own = noteCallerArrival(t);
    let at = t;
    for (; at < t + 1500; at += 5) noteCallerArrival(at);
    // Callers still come every 5 ms, but the flood began 1.5 s ago.
    expect(callersArrivingSince(own, at)).toBe(false);
    expect(callersArrivingSince(own, t + 999)).toBe(true);
    // After a quiet gap, the next flood holds spawns back again.
    const next = noteCallerArrival(at + 100);
    noteCallerArrival(at + 102);
    expect(callersArrivingSince(next, at + 103)).toBe(true);
  });

  it("gives way to the runs preparing when it became ready, not to runs that begin later", () => {
    const early = notePreparing();
    const check = runsPreparingBefore();
    const late = notePreparing();
    expect(runsPreparing()).toBe(2);
    expect(check()).toBe(true);
    early();
    expect(check()).toBe(false);
    expect(runsPreparing()).toBe(1);
    late();
    expect(runsPreparing()).toBe(0);
    // A run that fails while preparing says so once; a second call changes nothing.
    const failed = notePreparing();
    failed();
    failed();
    expect(runsPreparing()).toBe(0);
  });

  it("is not held back turn after turn by a steady stream of new runs", async () => {
    const old = notePreparing();
    const check = runsPreparingBefore();
    // From now on one run or another is always preparing (each takes 50 ms, one begins every 2 ms).
    const stream = setInterval(() => {
      const done = notePreparing();
      setTimeout(done, 50);
    }, 2);
    setTimeout(old, 30);
    const t = Date.now();
    try {
      await nextSpawnTurn(check, 1000);
    } finally {
      clearInterval(stream);
    }
    // It went once the run it found preparing was done, not at the 1 s bound.
    expect(Date.now() - t).toBeLessThan(500);
    expect(Date.now() - t).toBeGreaterThanOrEqual(25);
    expect(runsPreparing()).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 60));
    expect(runsPreparing()).toBe(0);
  });
});
