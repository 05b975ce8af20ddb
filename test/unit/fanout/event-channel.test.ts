import { describe, expect, it } from "vitest";
import { EventChannel } from "../../../src/fanout/event-channel.js";

describe("EventChannel", () => {
  it("delivers in order and ends after the buffered items", async () => {
    const ch = new EventChannel<number>(100);
    await ch.push(1, 1);
    await ch.push(2, 1);
    ch.end();
    const got: number[] = [];
    for await (const v of ch) got.push(v);
    expect(got).toEqual([1, 2]);
  });

  it("makes the producer wait while the subscriber lags (backpressure), then resumes", async () => {
    const ch = new EventChannel<number>(10);
    await ch.push(1, 8);
    let second = false;
    const p = ch.push(2, 8).then(() => {
      second = true;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(second).toBe(false);
    const it = ch[Symbol.asyncIterator]();
    expect((await it.next()).value).toBe(1);
    await p;
    expect(second).toBe(true);
  });

  it("drops pushes and releases a waiting producer when the subscriber leaves", async () => {
    let cancelled = 0;
    const ch = new EventChannel<number>(1, () => {
      cancelled++;
    });
    const it = ch[Symbol.asyncIterator]();
    // Over the limit with nobody reading: the producer waits.
    const blocked = ch.push(1, 5);
    await it.return?.();
    await blocked;
    await ch.push(3, 5);
    expect(cancelled).toBe(1);
    expect(ch.isCancelled).toBe(true);
    expect((await it.next()).done).toBe(true);
  });
});
