import { execFile } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { RunEvent, RunEventBody } from "../../../src/events/run-event.js";
import { followRun, followRunBatches } from "../../../src/fanout/follow-run.js";
import { readBack } from "../../../src/journal/rehydrate.js";
import { READ_GRACE_MS, startRetention } from "../../../src/journal/retention.js";
import { RunJournal } from "../../../src/journal/run-journal.js";
import type { RunRecord, RunUpdate } from "../../../src/journal/run-store.js";
import { SqliteRunStore } from "../../../src/journal/sqlite-run-store.js";
import { runRecord as record } from "../../helpers/run-record.js";
import { until } from "../../helpers/until.js";

const run = promisify(execFile);

let dir: string;
let store: SqliteRunStore;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "flr-journal-"));
  store = new SqliteRunStore(path.join(dir, "runs.sqlite3"));
});
afterEach(async () => {
  // Awaited: the store's checkpoint worker empties and removes the log as it closes.
  await store.close();
  await rm(dir, { recursive: true, force: true, maxRetries: 5 });
});

const line = (i: number) => ({
  type: "agent" as const,
  raw: `{"i":${i},"pad":"${"x".repeat(150)}"}`,
  items: [],
  truncated: false,
});
const exit = {
  type: "exit" as const,
  killedByRunner: false,
  succeeded: true,
  reason: "completed" as const,
  returnCode: 0,
  signal: null,
  durationMs: 5,
  message: "",
};

const meta = {
  type: "meta" as const,
  sessionId: "s",
  agent: {
    provider: "codex",
    sandboxPolicy: "enforce",
    sandboxMode: null,
    model: null,
    reasoningEffort: null,
  },
  workspacePath: "/w",
  package: null,
} satisfies RunEventBody;

describe("RunJournal", () => {
  it("finds a line's earlier lines in the tail and in the store, newest first, within the look-back", () => {
    let readBackEvents = 0;
    const j = new RunJournal(record("rh"), store, () => 42, {
      limits: { tailBytes: 8 * 1024, flushIntervalMs: 5, flushMaxEvents: 16 },
      onReadBack: (n) => {
        readBackEvents += n;
      },
    });
    j.append(meta);
    for (let i = 1; i <= 600; i++) j.append(line(i));
    // About 45 of these 171-character lines fit the tail: the ones searched below at 346 and 501
    // were written, then evicted (a viewer reads them from the store), and 601 is in the tail.
    const fromStore = (seq: number) => {
      const before = readBackEvents;
      j.read(seq - 1, 1);
      return readBackEvents > before;
    };
    expect([fromStore(346), fromStore(501), fromStore(601)]).toEqual([true, true, false]);
    const seqOf = (raw: string) => Number(/"i":(\d+)/.exec(raw)?.[1]) + 1;
    const newest = (seq: number, needle: string) => j.history(seq, needle, (raw) => seqOf(raw));
    // Seq 602 (line 601) is next: the newest earlier line holding the needle, in the tail or not.
    expect(newest(602, '"i":600,')).toBe(601);
    expect(newest(602, '"i":500,')).toBe(501);
    expect(newest(602, '"pad"')).toBe(601);
    // `pick` decides: a line it refuses is skipped for an older one.
    expect(j.history(602, '"pad"', (raw) => (seqOf(raw) < 400 ? seqOf(raw) : null))).toBe(399);
    // Only the LOOK_BACK_LINES events before the line: 602 - 256 = 346 is the oldest searched.
    expect(newest(602, '"i":345,')).toBe(346);
    expect(newest(602, '"i":344,')).toBeNull();
    // And never the line itself or anything after it.
    expect(newest(300, '"i":299,')).toBeNull();
    expect(newest(300, '"i":300,')).toBeNull();
    expect(newest(300, '"i":298,')).toBe(299);
    j.append(exit);
    j.end();
  });

  it("keeps a bounded tail in memory and serves older events from the store, in order", () => {
    const j = new RunJournal(record("r1"), store, () => 42, {
      limits: { tailBytes: 8 * 1024, flushIntervalMs: 5, flushMaxEvents: 64 },
    });
    for (let i = 1; i <= 5000; i++) j.append(line(i));
    j.append(exit);
    j.end();
    let cursor = 0;
    const got: RunEvent[] = [];
    for (;;) {
      const batch = j.read(cursor, 333);
      if (batch.length === 0) break;
      got.push(...batch);
      cursor = batch.at(-1)?.seq ?? cursor;
    }
    expect(got.map((e) => e.seq)).toEqual(Array.from({ length: 5001 }, (_, i) => i + 1));
    expect(got[1233]?.body).toEqual(line(1234));
    const stored = store.getRun("r1");
    expect(stored).toMatchObject({
      succeeded: true,
      status: "finished",
      exitReason: "completed",
      returnCode: 0,
      lastSeq: 5001,
    });
    expect(store.readEvents("r1", 4999, 10).map((e) => e.seq)).toEqual([5000, 5001]);
  });

  it("re-derives typed items of events read back from the store only for viewers that want them", () => {
    let derived = 0;
    const reader = (raw: string) => {
      derived++;
      return [{ kind: "message" as const, text: raw.slice(0, 5), delta: false }];
    };
    const j = new RunJournal(record("r4"), store, () => 42, {
      readLine: reader,
      limits: { tailBytes: 1024, flushIntervalMs: 5, flushMaxEvents: 16 },
    });
    for (let i = 1; i <= 200; i++) j.append(line(i));
    j.end();
    // Seq 1-50 are out of the tail: read back from the store.
    const raw = j.read(0, 50, false);
    expect(raw.map((e) => e.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(raw.every((e) => e.body.type === "agent" && e.body.items.length === 0)).toBe(true);
    expect(derived).toBe(0);
    const typed = j.read(0, 50);
    expect(derived).toBe(50);
    expect(typed[0]?.body).toMatchObject({ raw: line(1).raw, items: [{ kind: "message" }] });
  });

  it("gives live lines their typed items when a typed viewer reads them, once, and never to a raw viewer", () => {
    let derived = 0;
    const reader = (raw: string) => {
      derived++;
      return [{ kind: "message" as const, text: raw.slice(0, 5), delta: false }];
    };
    const j = new RunJournal(record("r5"), store, () => 42, { readLine: reader });
    for (let i = 1; i <= 10; i++) j.append(line(i));
    const raw = j.read(0, 10, false);
    expect(raw.every((e) => e.body.type === "agent" && e.body.items.length === 0)).toBe(true);
    expect(derived).toBe(0);
    const typed = j.read(0, 10);
    expect(derived).toBe(10);
    expect(typed[9]?.body).toMatchObject({ raw: line(10).raw, items: [{ kind: "message" }] });
    // Kept on the event: a second typed viewer reads nothing again.
    j.read(0, 10);
    expect(derived).toBe(10);
    j.end();
  });

  it("delivers every event exactly once to a follower that joins mid-run and reads slowly", async () => {
    const j = new RunJournal(record("r2"), store, () => 1, {
      limits: { tailBytes: 4 * 1024, flushIntervalMs: 5, flushMaxEvents: 16 },
    });
    for (let i = 1; i <= 100; i++) j.append(line(i));
    const seen: number[] = [];
    const follower = (async () => {
      for await (const e of followRun(j, 50)) {
        seen.push(e.seq);
        if (seen.length % 97 === 0) await new Promise((r) => setTimeout(r, 1));
      }
    })();
    for (let i = 101; i <= 3000; i++) {
      j.append(line(i));
      if (i % 500 === 0) await new Promise((r) => setTimeout(r, 2));
    }
    j.append(exit);
    j.end();
    await follower;
    expect(seen).toEqual(Array.from({ length: 2951 }, (_, i) => i + 51));
  });

  it("drops a viewer that left while the run is quiet at once, not at the run's next event", async () => {
    const j = new RunJournal(record("r6"), store, () => 1);
    j.append(line(1));
    const gone = new AbortController();
    const seen: number[] = [];
    const follower = (async () => {
      for await (const batch of followRunBatches(j, 0, false, gone.signal)) {
        for (const e of batch) seen.push(e.seq);
      }
    })();
    const stays = followRunBatches(j, 1)[Symbol.asyncIterator]();
    const next = stays.next();
    for (let i = 0; i < 50 && j.waitingViewers < 2; i++) await new Promise((r) => setTimeout(r, 1));
    expect(j.waitingViewers).toBe(2);
    gone.abort();
    await follower;
    expect(seen).toEqual([1]);
    expect(j.waitingViewers).toBe(1);
    // The viewer still there hears the next event as before.
    j.append(line(2));
    expect(((await next).value as readonly RunEvent[]).map((e) => e.seq)).toEqual([2]);
    j.append(exit);
    j.end();
    await stays.return?.(undefined);
  });

  it("counts the events a viewer behind the tail reads from the store", () => {
    let readBack = 0;
    const j = new RunJournal(record("r5"), store, () => 1, {
      limits: { tailBytes: 64 * 1024, flushIntervalMs: 5, flushMaxEvents: 16 },
      onReadBack: (n) => {
        readBack += n;
      },
    });
    for (let i = 1; i <= 400; i++) j.append(line(i));
    // About 280 lines fit the 64 KB tail: the newest come from memory, uncounted.
    expect(j.read(350, 50).map((e) => e.seq)).toEqual(
      Array.from({ length: 50 }, (_, i) => i + 351),
    );
    expect(readBack).toBe(0);
    // Seq 1-100 left the tail: read back from the store, and counted.
    expect(j.read(0, 100).map((e) => e.seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(readBack).toBe(100);
  });

  it("counts a line beyond Latin-1 at 2 bytes a character against the tail budget, as V8 holds it", () => {
    // Lines of 150 characters: Latin-1 ones V8 keeps at 1 byte each, CJK and emoji ones at 2.
    const tailOf = (runId: string, pad: string) => {
      let readBack = 0;
      const j = new RunJournal(record(runId), store, () => 1, {
        limits: { tailBytes: 64 * 1024, flushIntervalMs: 5, flushMaxEvents: 16 },
        onReadBack: (n) => {
          readBack += n;
        },
      });
      for (let i = 1; i <= 400; i++)
        j.append({ type: "agent", raw: `{"i":${i},"t":"${pad}"}`, items: [], truncated: false });
      j.read(150, 50);
      return readBack;
    };
    // ~170 bytes a line: about 280 fit 64 KB, so seq 151-200 are still in memory.
    expect(tailOf("latin1", "é".repeat(150))).toBe(0);
    // ~330 bytes a line (length alone said ~170): about 190 fit, so seq 151-200 left memory.
    expect(tailOf("cjk", "漢".repeat(150))).toBe(50);
    expect(tailOf("emoji", "😀".repeat(75))).toBe(50);
  });

  it("tells a viewer behind the tail that its run was deleted under it, instead of ending as if complete", () => {
    const j = new RunJournal(record("r6"), store, () => 1, {
      limits: { tailBytes: 8 * 1024, flushIntervalMs: 5, flushMaxEvents: 16 },
    });
    for (let i = 1; i <= 400; i++) j.append(line(i));
    j.append(exit);
    j.end();
    expect(j.read(0, 10).map((e) => e.seq)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
    expect(store.prune({ endedBeforeMs: 2, maxBytes: 1e9 })).toBe(1);
    expect(() => j.read(10, 10)).toThrow(
      expect.objectContaining({
        code: "RUN_NOT_FOUND",
        message: expect.stringMatching(/r6 was deleted by retention while it was being read/),
      }),
    );
    // The tail it still has in memory is served as before.
    expect(j.read(400, 10).map((e) => e.body.type)).toEqual(["exit"]);
  });

  it("ends a viewer at the run's exit: a run deleted after the viewer got its exit is not reported incomplete", async () => {
    const j = new RunJournal(record("r7"), store, () => 1, {
      limits: { tailBytes: 8 * 1024, flushIntervalMs: 5, flushMaxEvents: 16 },
    });
    for (let i = 1; i <= 3; i++) j.append(line(i));
    j.append(exit);
    j.end();
    // A finished run's viewer reads the store, as the pipeline's stored source does.
    const stored = {
      read: (after: number, max: number) => readBack(store, "r7", after, max, null),
      waitForMore: async () => {},
      isEnded: true,
    };
    const seen: string[] = [];
    for await (const batch of followRunBatches(stored, 0, false)) {
      seen.push(...batch.map((e) => e.body.type));
      // Retention deletes the run while the viewer still writes its last batch.
      if (seen.includes("exit")) expect(store.prune({ endedBeforeMs: 2, maxBytes: 1e9 })).toBe(1);
    }
    expect(seen).toEqual(["agent", "agent", "agent", "exit"]);
  });

  it("leaves no trace of a run that never produced an event", () => {
    const j = new RunJournal(record("r3"), store, () => 1);
    j.end();
    expect(store.getRun("r3")).toBeNull();
  });
});

describe("RunJournal writes", () => {
  /** Bytes of the store's write-ahead log after 40 runs, each a start, a line and an end. */
  async function logBytesFor40Runs(file: string, runStore: SqliteRunStore): Promise<number> {
    for (let i = 0; i < 40; i++) {
      const j = new RunJournal(record(`r${i}`), runStore, () => 42);
      j.append(meta);
      j.append(line(i));
      j.append(exit);
      j.end();
    }
    return (await stat(`${file}-wal`)).size;
  }

  it("writes a run's start and its end each as one transaction: fewer log pages than the same calls one by one", async () => {
    const oneByOneFile = path.join(dir, "one-by-one.sqlite3");
    // The same store, its calls committed separately (what the journal did before).
    const oneByOne = new (class extends SqliteRunStore {
      override atomically(fn: () => void): void {
        fn();
      }
    })(oneByOneFile);
    const separate = await logBytesFor40Runs(oneByOneFile, oneByOne);
    await oneByOne.close();
    const together = await logBytesFor40Runs(path.join(dir, "runs.sqlite3"), store);
    // Each commit appends every page it touched to the log: 3 commits per start and 2 per end
    // wrote the runs table's pages again each time (≈ 14 pages a run against ≈ 10).
    expect(together).toBeLessThan(separate * 0.8);
    // All of it is in the store, as before.
    expect(store.getRun("r39")?.status).toBe("finished");
    expect(store.readEvents("r39", 0, 10).map((e) => e.body.type)).toEqual([
      "meta",
      "agent",
      "exit",
    ]);
  });

  it("writes lines in one appendEvents per batch, with a transaction only for meta and exit", async () => {
    const counting = new CountingStore(path.join(dir, "counting.sqlite3"));
    const j = new RunJournal(record("rc"), counting, () => 42, {
      limits: { tailBytes: 64 * 1024, flushIntervalMs: 1000, flushMaxEvents: 100 },
    });
    j.append(meta);
    for (let i = 1; i <= 1000; i++) j.append(line(i));
    j.append(exit);
    j.end();
    // meta (with the row) and exit each in one transaction; the lines, 10 batches, none.
    expect(counting.calls).toEqual({ appendEvents: 12, atomically: 2 });
    expect(counting.getRun("rc")).toMatchObject({ status: "finished", lastSeq: 1002 });
    await counting.close();
  });
});

/** The real store, refusing every write while `failing` (a full disk, an I/O error). */
class FlakyStore extends SqliteRunStore {
  failing = false;
  private check(): void {
    if (this.failing) throw new Error("SQLITE_FULL: database or disk is full");
  }
  override createRun(r: RunRecord): void {
    this.check();
    super.createRun(r);
  }
  override updateRun(runId: string, update: RunUpdate): void {
    this.check();
    super.updateRun(runId, update);
  }
  override appendEvents(runId: string, events: readonly RunEvent[]): void {
    this.check();
    super.appendEvents(runId, events);
  }
}

/** The real store, counting the journal's write calls. */
class CountingStore extends SqliteRunStore {
  calls = { appendEvents: 0, atomically: 0 };
  override appendEvents(runId: string, events: readonly RunEvent[]): void {
    this.calls.appendEvents++;
    super.appendEvents(runId, events);
  }
  override atomically(fn: () => void): void {
    this.calls.atomically++;
    super.atomically(fn);
  }
}

const storedSeqs = (s: SqliteRunStore, runId: string) =>
  s.readEvents(runId, 0, 100_000).map((e) => e.seq);
const upTo = (n: number, from = 1) => Array.from({ length: n - from + 1 }, (_, i) => i + from);

describe("RunJournal when the store refuses writes", () => {
  let flaky: FlakyStore;
  beforeEach(() => {
    flaky = new FlakyStore(path.join(dir, "flaky.sqlite3"));
  });
  afterEach(async () => {
    flaky.failing = false;
    await flaky.close();
  });

  it("loses no event and reuses no seq: the batch stays pending, in memory, and is written once the store takes it", async () => {
    const errors: unknown[] = [];
    const j = new RunJournal(record("rw"), flaky, () => 1, {
      limits: { tailBytes: 2048, flushIntervalMs: 5, flushMaxEvents: 10 },
      onWriteError: (err) => errors.push(err),
    });
    for (let i = 1; i <= 9; i++) j.append(line(i));
    flaky.failing = true;
    // The 10th fills a batch; its write fails. Appending goes on, every event with its own seq.
    expect(j.append(line(10)).seq).toBe(10);
    for (let i = 11; i <= 60; i++) expect(j.append(line(i)).seq).toBe(i);
    await new Promise((r) => setTimeout(r, 30)); // a few retries, all refused
    expect(storedSeqs(flaky, "rw")).toEqual([]);
    expect(errors).toHaveLength(1);
    expect(String(errors[0])).toContain("SQLITE_FULL");
    // Nothing unwritten left memory (the tail is far over its 2 KB budget).
    expect(j.read(0, 100).map((e) => e.seq)).toEqual(upTo(10));
    flaky.failing = false;
    await until(() => storedSeqs(flaky, "rw").length === 60, "the retried write");
    j.append(exit);
    j.end();
    const seen: number[] = [];
    for await (const e of followRun(j, 0)) seen.push(e.seq);
    expect(seen).toEqual(upTo(61));
    expect(storedSeqs(flaky, "rw")).toEqual(upTo(61));
    expect(flaky.getRun("rw")).toMatchObject({ status: "finished", lastSeq: 61 });
    expect(errors).toHaveLength(1);
  });

  it("holds viewers within flushMaxEvents of the store while it refuses writes, and shows every event once the journal ended", () => {
    const j = new RunJournal(record("rb"), flaky, () => 1, {
      limits: { tailBytes: 64 * 1024, flushIntervalMs: 1000, flushMaxEvents: 10 },
    });
    j.append(line(1)); // the row is created
    flaky.failing = true;
    for (let i = 2; i <= 30; i++) j.append(line(i));
    expect(j.lastSeq).toBe(30);
    // The store has nothing: a crash now must not leave a viewer beyond 0 + 10.
    expect(j.read(0, 100).map((e) => e.seq)).toEqual(upTo(10));
    expect(j.read(10, 100)).toEqual([]);
    j.append(exit);
    j.end();
    expect(j.read(10, 100).map((e) => e.seq)).toEqual(upTo(31, 11));
  });

  it("never throws from the flush timer, and end() releases waiting viewers with the final exit while the store refuses it", async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on("uncaughtException", onUncaught);
    try {
      const errors: unknown[] = [];
      const j = new RunJournal(record("rt"), flaky, () => 1, {
        limits: { tailBytes: 64 * 1024, flushIntervalMs: 5, flushMaxEvents: 64 },
        onWriteError: (err) => errors.push(err),
      });
      j.append(meta);
      const seen: string[] = [];
      const follower = (async () => {
        for await (const e of followRun(j, 0)) seen.push(`${e.seq}:${e.body.type}`);
      })();
      flaky.failing = true;
      j.append(line(1)); // written by the timer, which fails
      await new Promise((r) => setTimeout(r, 30));
      j.append(exit); // its status change fails too
      j.end();
      expect(j.isEnded).toBe(true);
      await follower;
      expect(seen).toEqual(["1:meta", "2:agent", "3:exit"]);
      expect(errors).toHaveLength(1);
      expect(uncaught).toEqual([]);
      // The store keeps what it had: the run's row is still running until the retry gets through.
      expect(flaky.getRun("rt")).toMatchObject({ status: "running", lastSeq: 1 });
      flaky.failing = false;
      await until(() => flaky.getRun("rt")?.status === "finished", "the retried end");
      expect(storedSeqs(flaky, "rt")).toEqual([1, 2, 3]);
    } finally {
      process.off("uncaughtException", onUncaught);
    }
  });

  it("stops retrying once the store is closed (the runner stopped): no timer keeps the journal alive", async () => {
    let attempts = 0;
    const realAtomically = flaky.atomically.bind(flaky);
    flaky.atomically = (fn) => {
      attempts++;
      realAtomically(fn);
    };
    const j = new RunJournal(record("rc"), flaky, () => 1, {
      limits: { tailBytes: 64 * 1024, flushIntervalMs: 5, flushMaxEvents: 64 },
    });
    flaky.failing = true;
    j.append(meta);
    j.append(line(1));
    j.append(exit);
    j.end();
    expect(j.isWritten).toBe(false);
    await new Promise((r) => setTimeout(r, 40));
    expect(attempts).toBeGreaterThan(2); // retried while the store was open
    await flaky.close();
    const atClose = attempts;
    await new Promise((r) => setTimeout(r, 1200));
    // At most the retry already scheduled when it closed (open, it retries 3-4 times in this).
    expect(attempts - atClose).toBeLessThanOrEqual(1);
  });

  it("keeps a refused start pending: no row until the store takes it, then the row, the events and the status in one go", async () => {
    const errors: unknown[] = [];
    const j = new RunJournal(record("rf"), flaky, () => 42, {
      limits: { tailBytes: 64 * 1024, flushIntervalMs: 5, flushMaxEvents: 64 },
      onWriteError: (err) => errors.push(err),
    });
    flaky.failing = true;
    expect(j.append({ type: "queued", position: 1, queueSize: 1 }).seq).toBe(1);
    expect(j.append(meta).seq).toBe(2);
    expect(j.read(0, 10).map((e) => e.body.type)).toEqual(["queued", "meta"]);
    await new Promise((r) => setTimeout(r, 20));
    expect(flaky.getRun("rf")).toBeNull();
    expect(errors).toHaveLength(1);
    flaky.failing = false;
    await until(() => flaky.getRun("rf") !== null, "the retried start");
    expect(flaky.getRun("rf")).toMatchObject({ status: "running", startedAtMs: 42, lastSeq: 2 });
    expect(storedSeqs(flaky, "rf")).toEqual([1, 2]);
    j.append(exit);
    j.end();
    expect(flaky.getRun("rf")).toMatchObject({ status: "finished", lastSeq: 3 });
  });
});

describe("SqliteRunStore retention", () => {
  it("deletes finished runs by age, then the oldest until under the size cap, never live ones", () => {
    const add = (id: string, endedAtMs: number | null, bytes: number) => {
      store.createRun(
        record(id, { status: endedAtMs === null ? "running" : "finished", endedAtMs }),
      );
      store.appendEvents(id, [
        {
          runId: id,
          seq: 1,
          timeMs: 1,
          body: { type: "log", text: "x".repeat(bytes), truncated: false },
        },
      ]);
    };
    add("old", 100, 10);
    add("mid", 2000, 5000);
    add("new", 3000, 5000);
    add("live", null, 50_000);
    expect(store.prune({ endedBeforeMs: 1000, maxBytes: 1e9 })).toBe(1);
    expect(store.getRun("old")).toBeNull();
    expect(store.readEvents("old", 0, 10)).toEqual([]);
    // Over the cap: the oldest finished run goes first; the live run stays whatever its size.
    expect(store.prune({ endedBeforeMs: 0, maxBytes: 56_000 })).toBe(1);
    expect(store.getRun("mid")).toBeNull();
    expect(store.getRun("new")).not.toBeNull();
    expect(store.prune({ endedBeforeMs: 0, maxBytes: 1 })).toBe(1);
    expect(store.getRun("live")?.status).toBe("running");
  });

  it("keeps a session's owner: claimed once, whoever comes next, and through retention", () => {
    expect(store.claimSession("s1", "alice", 1)).toBe("alice");
    expect(store.claimSession("s1", "bob", 2)).toBe("alice");
    expect(store.claimSession("s2", "", 3)).toBe("");
    expect(store.claimSession("s2", "alice", 4)).toBe("");
    const r = { ...record("r1"), sessionId: "s1", status: "finished" as const, endedAtMs: 5 };
    store.createRun(r);
    expect(store.prune({ endedBeforeMs: 1e15, maxBytes: 0 })).toBe(1);
    expect(store.claimSession("s1", "bob", 6)).toBe("alice");
  });

  it("gives a session with no owner to the user of its earliest stored run that names one, else to its first claimant", () => {
    const add = (id: string, sessionId: string, userId: string | null, createdAtMs: number) =>
      store.createRun(record(id, { sessionId, userId, createdAtMs }));
    // Runs while auth was off: an anonymous one first, then Bob's, then Alice's.
    add("a1", "s1", null, 100);
    add("a2", "s1", "Alice", 300);
    add("b1", "s1", " BOB ", 200);
    expect(store.claimSession("s1", "alice", 400)).toBe("bob");
    // Recorded: Bob's runs going does not hand the session to Alice.
    store.prune({ endedBeforeMs: 0, maxBytes: 0 });
    expect(store.claimSession("s1", "alice", 500)).toBe("bob");
    add("n1", "s2", null, 100);
    add("n2", "s2", "  ", 200);
    expect(store.claimSession("s2", "carol", 600)).toBe("carol");
    expect(store.claimSession("s2", "bob", 700)).toBe("carol");
  });

  it("prunes the owners of sessions with no stored run that nothing else keeps", () => {
    for (const id of ["gone", "kept", "stored"]) store.claimSession(id, "alice", 1);
    store.createRun(record("r", { sessionId: "stored", status: "finished", endedAtMs: 5 }));
    const asked: string[] = [];
    const keep = (id: string) => {
      asked.push(id);
      return id === "kept";
    };
    // A page at a time, in session id order: "gone" alone, then the rest.
    expect(store.pruneSessions(keep, { after: "", limit: 1 })).toEqual({
      deleted: 1,
      next: "gone",
    });
    expect(store.pruneSessions(keep, { after: "gone", limit: 5 })).toEqual({
      deleted: 0,
      next: null,
    });
    expect(asked).toEqual(["gone", "kept"]);
    expect(store.claimSession("gone", "bob", 2)).toBe("bob");
    expect(store.claimSession("kept", "bob", 2)).toBe("alice");
    expect(store.claimSession("stored", "bob", 2)).toBe("alice");
    // Once its last run went, a session's owner goes too, in the next pass.
    expect(store.prune({ endedBeforeMs: 1e15, maxBytes: 0 })).toBe(1);
    expect(store.pruneSessions(() => false)).toEqual({ deleted: 3, next: null });
    expect(store.claimSession("stored", "bob", 3)).toBe("bob");
  });
});

describe("SqliteRunStore sizes and reads", () => {
  const finishedWith = (id: string, endedAtMs: number, text: string) => {
    store.createRun(record(id, { status: "finished", endedAtMs }));
    store.appendEvents(id, [
      { runId: id, seq: 1, timeMs: 1, body: { type: "log", text, truncated: false } },
      { runId: id, seq: 2, timeMs: 2, body: { ...exit, message: text } },
    ]);
  };

  it("counts stored events in UTF-8 bytes, and retention by size uses that count", () => {
    // 1,000 CJK characters and 250 emoji: 3,000 + 1,000 bytes of UTF-8, 1,500 UTF-16 units.
    const text = "漢".repeat(1000) + "😀".repeat(250);
    finishedWith("wide", 100, text);
    const exitJson = JSON.stringify({ ...exit, message: text });
    expect(store.getRun("wide")?.eventBytes).toBe(
      Buffer.byteLength(text) + Buffer.byteLength(exitJson),
    );
    finishedWith("ascii", 200, "x".repeat(1500));
    // Under a cap the UTF-16 count (about 3,150 a run) would have met, the wide run (oldest) goes.
    expect(store.prune({ endedBeforeMs: 0, maxBytes: 7000 })).toBe(1);
    expect(store.getRun("wide")).toBeNull();
    expect(store.getRun("ascii")).not.toBeNull();
  });

  it("leaves runs read since readSinceMs to a later pass, and deletes by size no more than it must", async () => {
    finishedWith("a", 100, "x".repeat(1000));
    finishedWith("b", 200, "x".repeat(1000));
    finishedWith("c", 300, "x".repeat(1000));
    const before = Date.now();
    await new Promise((r) => setTimeout(r, 5));
    store.readEvents("a", 0, 1);
    // By age, every run is due; "a" was read since: kept.
    expect(store.prune({ endedBeforeMs: 250, maxBytes: 1e9, readSinceMs: before })).toBe(1);
    expect(store.getRun("a")).not.toBeNull();
    expect(store.getRun("b")).toBeNull();
    // By size: "a" is skipped and counted, the next oldest goes, and only that one.
    const each = store.getRun("c")?.eventBytes ?? 0;
    expect(store.prune({ endedBeforeMs: 0, maxBytes: each + 10, readSinceMs: before })).toBe(1);
    expect(store.getRun("c")).toBeNull();
    // Its reads older than readSinceMs: the run goes.
    expect(store.prune({ endedBeforeMs: 250, maxBytes: 1e9, readSinceMs: Date.now() + 1 })).toBe(1);
    expect(store.getRun("a")).toBeNull();
  });

  it("stamps a viewer's read with the clock retention runs on: held for READ_GRACE_MS of it, then deleted", async () => {
    let clock = 5_000_000;
    const now = () => clock;
    const clocked = new SqliteRunStore(path.join(dir, "clocked.sqlite3"), { now });
    try {
      clocked.createRun(record("read", { status: "finished", endedAtMs: 100 }));
      clocked.appendEvents("read", [
        { runId: "read", seq: 1, timeMs: 1, body: { type: "log", text: "x", truncated: false } },
      ]);
      clocked.readEvents("read", 0, 1);
      const logger = { info: () => {}, error: () => {} } as never;
      const pass = () =>
        startRetention(clocked, { retentionMs: 1000, maxBytes: 1e9 }, logger, now).stop();
      // Past its age, but read within the grace (on the shared clock): kept.
      clock += READ_GRACE_MS - 1;
      pass();
      expect(clocked.getRun("read")).not.toBeNull();
      // The read is older than the grace: the run goes.
      clock += 2;
      pass();
      expect(clocked.getRun("read")).toBeNull();
    } finally {
      await clocked.close();
    }
  });

  it("deletes by age, then by size only what the age pass left over the cap", () => {
    finishedWith("old", 100, "x".repeat(1000));
    finishedWith("mid", 200, "x".repeat(1000));
    finishedWith("new", 300, "x".repeat(1000));
    const each = store.getRun("new")?.eventBytes ?? 0;
    // "old" goes by age, which brings the store under the cap: "mid" stays.
    expect(store.prune({ endedBeforeMs: 150, maxBytes: 2 * each })).toBe(1);
    expect(store.getRun("mid")).not.toBeNull();
  });
});

describe("SqliteRunStore memory", () => {
  it("keeps its page cache small: writing 21 MB of events grows memory outside the V8 heap by well under 4 MB, not 10", async () => {
    // better-sqlite3's SQLite defaults to a 16 MB page cache, which the exclusive lock never drops.
    const { stdout } = await run(process.execPath, [
      "--expose-gc",
      "--max-semi-space-size=1",
      "--import",
      "tsx",
      path.join(import.meta.dirname, "../../fixtures/store-page-cache.ts"),
      path.join(dir, "child"), // this test's own store holds the lock on dir's
    ]);
    const { grewMb } = JSON.parse(stdout) as { grewMb: number };
    // Measured: 0 to 0.3 MB at the store's 512 KiB cache; about 10 MB at SQLite's 16 MB default.
    expect(grewMb).toBeLessThan(4);
  });
});

describe("SqliteRunStore schema", () => {
  it("adds a missing column to a store from before the schema version, and refuses the first events layout", async () => {
    const Database = (await import("better-sqlite3")).default;
    const older = path.join(dir, "older.sqlite3");
    const db = new Database(older);
    db.exec(
      "CREATE TABLE runs (run_id TEXT PRIMARY KEY, user_id TEXT, user_norm TEXT NOT NULL, session_id TEXT NOT NULL, provider TEXT NOT NULL, policy_json TEXT NOT NULL, package_id TEXT, detached INTEGER NOT NULL, prompt_preview TEXT NOT NULL, status TEXT NOT NULL, created_at_ms INTEGER NOT NULL, started_at_ms INTEGER, ended_at_ms INTEGER, exit_reason TEXT, return_code INTEGER, exit_message TEXT NOT NULL DEFAULT '', last_seq INTEGER NOT NULL DEFAULT 0, event_bytes INTEGER NOT NULL DEFAULT 0)",
    );
    db.close();
    const migrated = new SqliteRunStore(older);
    migrated.createRun(record("m1", { succeeded: true }));
    expect(migrated.getRun("m1")?.succeeded).toBe(true);
    await migrated.close();

    const first = path.join(dir, "first.sqlite3");
    const db2 = new Database(first);
    db2.exec("CREATE TABLE events (run_id TEXT, seq INTEGER, time_ms INTEGER, body TEXT)");
    db2.close();
    expect(() => new SqliteRunStore(first)).toThrow(/old layout; move it away/);
  });

  it("says why a store cannot be opened, and what to do: not a database, a lock path it cannot use, another runner's", async () => {
    const { mkdir, writeFile } = await import("node:fs/promises");
    const garbage = path.join(dir, "garbage.sqlite3");
    await writeFile(garbage, "not a database at all, ".repeat(20));
    expect(() => new SqliteRunStore(garbage)).toThrow(
      /garbage\.sqlite3 \(with its lock file .*\) is not a readable SQLite database \(file is not a database\); move the file aside/,
    );
    const lockIsDir = path.join(dir, "lockdir.sqlite3");
    await mkdir(`${lockIsDir}.lock`);
    expect(() => new SqliteRunStore(lockIsDir)).toThrow(
      /lockdir\.sqlite3 \(with its lock file .*lockdir\.sqlite3\.lock\) cannot be opened \(unable to open database file\); check that the files and their directory/,
    );
    // Still held by the suite's own store: another runner's, and only then is that the message.
    expect(() => new SqliteRunStore(path.join(dir, "runs.sqlite3"))).toThrow(
      /runs\.sqlite3 is in use by another runner process; give each runner its own/,
    );
    // Neither refusal kept anything open: the garbage file, replaced, opens.
    await rm(garbage);
    const fixed = new SqliteRunStore(garbage);
    fixed.createRun(record("g1"));
    expect(fixed.getRun("g1")).not.toBeNull();
    await fixed.close();
  });

  it("takes its lock again when the lock file is removed or replaced, so another runner still finds the store in use", async () => {
    const { existsSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } = await import(
      "node:fs"
    );
    const Database = (await import("better-sqlite3")).default;
    const file = path.join(dir, "relock.sqlite3");
    const lockPath = `${file}.lock`;
    const lost: string[] = [];
    const held = new SqliteRunStore(file, { lockCheckMs: 20, onProblem: (m) => lost.push(m) });
    try {
      await rm(lockPath);
      await until(() => existsSync(lockPath), "the removed lock file made again");
      expect(() => new SqliteRunStore(file)).toThrow(/in use by another runner process/);
      // Replaced (a restore from a backup): the new file is taken too.
      writeFileSync(`${lockPath}.restored`, "");
      const restored = statSync(`${lockPath}.restored`);
      renameSync(`${lockPath}.restored`, lockPath);
      // This process has the restored file open: the store took it (a try to open the store
      // instead would hold the lock for a moment, and the store would report it lost).
      const opened = () =>
        readdirSync("/proc/self/fd").some((fd) => {
          const st = statSync(`/proc/self/fd/${fd}`, { throwIfNoEntry: false });
          return st?.dev === restored.dev && st.ino === restored.ino;
        });
      await until(opened, "the replaced lock file taken");
      expect(() => new SqliteRunStore(file)).toThrow(/in use by another runner process/);
      // Another process took the path's lock first (in one go, before the next check): said once.
      rmSync(lockPath);
      const other = new Database(lockPath);
      other.pragma("locking_mode = EXCLUSIVE");
      other.exec("BEGIN EXCLUSIVE; COMMIT;");
      await until(() => lost.length > 0, "the lost lock reported");
      expect(lost[0]).toMatch(
        /lock file .*relock\.sqlite3\.lock was removed or replaced while this runner held it, and it cannot be taken again .*give each runner its own FERMILINK_RUNNER_STORE_PATH/,
      );
      await new Promise((r) => setTimeout(r, 100));
      expect(lost).toHaveLength(1);
      // Let go: this runner holds it again.
      other.close();
      await until(() => {
        try {
          new SqliteRunStore(file).close();
          return false;
        } catch {
          return true;
        }
      }, "the lock taken again once free");
    } finally {
      await held.close();
    }
  });

  it("says once that its store file was removed or replaced under it, since what it writes then is lost", async () => {
    const file = path.join(dir, "removed.sqlite3");
    const said: string[] = [];
    const store = new SqliteRunStore(file, { lockCheckMs: 20, onProblem: (m) => said.push(m) });
    try {
      await new Promise((r) => setTimeout(r, 100));
      expect(said).toEqual([]);
      await rm(file);
      await until(() => said.length > 0, "the removed store file reported");
      expect(said[0]).toMatch(
        /The run store .*removed\.sqlite3 was removed or replaced while this runner had it open: .*Restart the runner/,
      );
      await new Promise((r) => setTimeout(r, 100));
      expect(said).toHaveLength(1);
    } finally {
      await store.close();
    }
  });

  it("refuses a store of a newer schema, and lets go of it: once fixed, the next store opens it", async () => {
    const Database = (await import("better-sqlite3")).default;
    const newer = path.join(dir, "newer.sqlite3");
    const db = new Database(newer);
    db.pragma("user_version = 99");
    db.close();
    expect(() => new SqliteRunStore(newer)).toThrow(/written by a newer runner \(schema 99\)/);
    // The refusal released the store and its lock: nothing in this process holds them.
    const fix = new Database(newer);
    fix.pragma("user_version = 0");
    fix.close();
    const opened = new SqliteRunStore(newer);
    opened.createRun(record("n1"));
    expect(opened.getRun("n1")).not.toBeNull();
    await opened.close();
  });

  it("moves a schema-1 store's events under integer run keys: every event kept, byte counts in UTF-8, no key shared with a new run", async () => {
    const Database = (await import("better-sqlite3")).default;
    const v1 = path.join(dir, "v1.sqlite3");
    const db = new Database(v1);
    // Schema 1 as runners before session 15 made it: events keyed by the 36-character run id.
    db.exec(`
      CREATE TABLE runs (run_id TEXT PRIMARY KEY, user_id TEXT, user_norm TEXT NOT NULL,
        session_id TEXT NOT NULL, provider TEXT NOT NULL, policy_json TEXT NOT NULL, package_id TEXT,
        detached INTEGER NOT NULL, prompt_preview TEXT NOT NULL, status TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL, started_at_ms INTEGER, ended_at_ms INTEGER, exit_reason TEXT,
        return_code INTEGER, exit_message TEXT NOT NULL DEFAULT '', last_seq INTEGER NOT NULL DEFAULT 0,
        event_bytes INTEGER NOT NULL DEFAULT 0, succeeded INTEGER);
      CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, time_ms INTEGER NOT NULL,
        kind TEXT NOT NULL, text TEXT NOT NULL, truncated INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
      PRAGMA user_version = 1;`);
    const addRun = db.prepare(
      `INSERT INTO runs (run_id, user_norm, session_id, provider, policy_json, detached, prompt_preview,
         status, created_at_ms, ended_at_ms, last_seq, event_bytes)
       VALUES (?, 'u', 's', 'codex', '{}', 0, 'p', 'finished', 1000, ?, ?, ?)`,
    );
    const addEvent = db.prepare(
      "INSERT INTO events (run_id, seq, time_ms, kind, text) VALUES (?, ?, 1000, ?, ?)",
    );
    // "wide": two CJK lines that schema 1 counted in UTF-16 units (6), 18 bytes in UTF-8.
    addRun.run("wide", 100, 2, 6);
    addEvent.run("wide", 1, "agent", "漢字漢");
    addEvent.run("wide", 2, "log", "字漢字");
    addRun.run("plain", 200, 3, 3);
    for (const seq of [1, 2, 3]) addEvent.run("plain", seq, "agent", "x");
    addEvent.run("gone", 1, "agent", "of no run"); // deleted run's leftover: nothing reads it
    db.close();

    const migrated = new SqliteRunStore(v1);
    expect(migrated.readEvents("wide", 0, 10).map((e) => e.seq)).toEqual([1, 2]);
    expect(migrated.readEvents("wide", 1, 10)[0]?.body).toEqual({
      type: "log",
      text: "字漢字",
      truncated: false,
    });
    expect(migrated.readEvents("plain", 1, 10).map((e) => e.seq)).toEqual([2, 3]);
    expect(migrated.getRun("wide")?.eventBytes).toBe(18);
    expect(migrated.getRun("plain")?.eventBytes).toBe(3);
    // A new run's events stay its own, and the old runs' stay theirs.
    migrated.createRun(record("new"));
    migrated.appendEvents("new", [{ runId: "new", seq: 1, timeMs: 2000, body: line(1) }]);
    expect(migrated.readEvents("new", 0, 10)).toHaveLength(1);
    expect(migrated.readEvents("plain", 0, 10)).toHaveLength(3);
    // Schema 4's sessions table is there: owners can be claimed.
    expect(migrated.claimSession("s", "u", 1)).toBe("u");
    // Retention deletes a migrated run with its events.
    expect(migrated.prune({ endedBeforeMs: 150, maxBytes: 1e9 })).toBe(1);
    expect(migrated.readEvents("wide", 0, 10)).toEqual([]);
    await migrated.close();

    const after = new Database(v1, { readonly: true });
    const count = (sql: string) => (after.prepare(sql).get() as { n: number }).n;
    // plain's 3 (one chunk) and new's 1; no per-event table left.
    expect(count("SELECT COUNT(*) AS n FROM event_chunks")).toBe(2);
    expect(count("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'events'")).toBe(0);
    expect(after.pragma("user_version", { simple: true })).toBe(4);
    await after.close();
  });
});
