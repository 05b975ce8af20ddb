import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Worker } from "node:worker_threads";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { RunEvent } from "../../../src/events/run-event.js";
import { CHECKPOINT_BYTES, IDLE_CATCH_UP_MS } from "../../../src/journal/checkpointer.js";
import { SqliteRunStore } from "../../../src/journal/sqlite-run-store.js";
import { runRecord } from "../../helpers/run-record.js";

let dir: string;
let file: string;
const open: SqliteRunStore[] = [];
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "flr-ckpt-"));
  file = path.join(dir, "runs.sqlite3");
});
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  await rm(dir, { recursive: true, force: true });
});

function store(): SqliteRunStore {
  const s = new SqliteRunStore(file);
  open.push(s);
  return s;
}

const raw = `{"type":"item.completed","item":{"id":"l1","type":"agent_message","text":"${"y".repeat(140)}"}}`;

/** `lines` 200-byte agent lines appended to a new run `runId`, in the journal's batches of 512. */
function stream(s: SqliteRunStore, runId: string, lines: number): void {
  s.createRun(runRecord(runId));
  for (let seq = 1; seq <= lines; ) {
    const batch: RunEvent[] = [];
    for (; batch.length < 512 && seq <= lines; seq++)
      batch.push({
        runId,
        seq,
        timeMs: 1000,
        body: { type: "agent", raw, items: [], truncated: false },
      });
    s.appendEvents(runId, batch);
  }
}

/** Block this thread (no event-loop turn at all) until `done()` or `ms` pass. */
function blockUntil(done: () => boolean, ms: number): boolean {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (done()) return true;
    Atomics.wait(cell, 0, 0, 20);
  }
  return done();
}

const fileBytes = () => statSync(file).size;

/** The store's checkpoint worker, reached into to make it fail (a fault, not a stand-in). */
function checkpointWorker(s: SqliteRunStore): Worker {
  return (s as unknown as { checkpointer: { worker: Worker } }).checkpointer.worker;
}

describe("the run store's checkpointer", () => {
  it("copies the log into the store file on its own thread, never on the event loop: the file grows while this thread is blocked", () => {
    const s = store();
    const before = fileBytes();
    // ≈ 12 MB of log: past the 4 MB that asks the worker for a checkpoint, far below SQLite's own
    // (backstop) checkpoint at ≈ 100 MB, so only the worker can have copied it.
    stream(s, "r1", 45_000);
    // This thread did not checkpoint on the way (SQLite's default would have, every ≈ 4 MB, and
    // then started the log over): the log is still all there. (The log also starts over when a
    // write finds it all copied, which a stream this fast never leaves time for.)
    expect(statSync(`${file}-wal`).size).toBeGreaterThan(5 * 1024 * 1024);
    // Growth of 1 MB proves the worker copied: its first pass (asked at 4 MB of log) may copy just
    // under 4 MB of pages, and the catch-up pass after it needs this thread's timers, which are
    // blocked here (waiting for 4 MB failed in CI, even for 20 s).
    const copied = blockUntil(() => fileBytes() > before + 1024 * 1024, 20_000);
    expect(copied, `the store file grew ${fileBytes() - before} bytes`).toBe(true);
    expect(s.readEvents("r1", 44_997, 100).map((e) => e.seq)).toEqual([44_998, 44_999, 45_000]);
  });

  it("keeps the log small across a long stream of bursts: it starts over once a pause lets it be copied to its end", async () => {
    const s = store();
    const wal = `${file}-wal`;
    let largest = 0;
    // 14 runs of ≈ 4.3 MB of log each (≈ 60 MB in all), written as the journal does (batches
    // of 512 lines, back to back: each run a burst), with a pause between them as between a
    // CLI's bursts of output. The log starts over only from a write that finds it copied to its
    // end, and each burst leaves frames behind the checkpoint its 4 MB asked for.
    for (let r = 1; r <= 14; r++) {
      stream(s, `r${r}`, 12_000);
      largest = Math.max(largest, statSync(wal).size);
      // Long enough for a catch-up pass (50 ms on) on a loaded box: a missed pause only grows the
      // file by one burst, and the bound allows two in a row.
      await sleep(300);
    }
    expect(largest).toBeGreaterThan(CHECKPOINT_BYTES / 2);
    expect(largest).toBeLessThan(4 * CHECKPOINT_BYTES);
    expect(s.readEvents("r14", 11_998, 10).map((e) => e.seq)).toEqual([11_999, 12_000]);
  });

  it("starts the log over rarely under a trickle of small writes (each start costs that commit an fsync), and still once they stop", async () => {
    const s = store();
    // The log's salt (header bytes 16-23) changes each time a write starts it over.
    const salt = () => readFileSync(`${file}-wal`).subarray(16, 24).toString("hex");
    s.createRun(runRecord("t"));
    const line = (seq: number): RunEvent => ({
      runId: "t",
      seq,
      timeMs: 1000,
      body: { type: "agent", raw, items: [], truncated: false },
    });
    const salts = new Set<string>();
    // A run's start and end, as trivial runs come one after another: small commits, with pauses
    // a catch-up pass fits in. A pass after each (the old 50 ms catch-up) started the log over at
    // nearly every one of these writes.
    for (let seq = 1; seq <= 10; seq++) {
      s.appendEvents("t", [line(seq)]);
      salts.add(salt());
      await sleep(100);
    }
    expect(salts.size).toBeLessThanOrEqual(3);
    // Once the writes stop, the log is still copied to its end: the next write starts it over.
    await sleep(IDLE_CATCH_UP_MS + 500);
    s.appendEvents("t", [line(11)]);
    expect(salts.has(salt())).toBe(false);
    expect(s.readEvents("t", 9, 5).map((e) => e.seq)).toEqual([10, 11]);
  });

  it("hands checkpoints back to SQLite when the worker fails: the log is still copied", async () => {
    const s = store();
    const worker = checkpointWorker(s);
    await new Promise((resolve) => worker.once("online", resolve));
    const exited = new Promise((resolve) => worker.once("exit", resolve));
    await worker.terminate();
    await exited;
    const before = fileBytes();
    stream(s, "r1", 30_000);
    // SQLite's own checkpoint runs inside the commits, on this thread: done when they return.
    expect(fileBytes()).toBeGreaterThan(before + 4 * 1024 * 1024);
    expect(s.readEvents("r1", 0, 5)).toHaveLength(5);
  });

  it("leaves no log behind once closed, and the next store reads every event", async () => {
    const s = store();
    stream(s, "r1", 20_000);
    await s.close();
    expect(existsSync(`${file}-wal`)).toBe(false);
    const again = store();
    expect(again.getRun("r1")?.lastSeq).toBe(20_000);
    expect(again.readEvents("r1", 19_998, 10).map((e) => e.seq)).toEqual([19_999, 20_000]);
  });

  it("keeps one runner per store: a second store on the file is refused while the first is open", async () => {
    const first = store();
    expect(() => new SqliteRunStore(file)).toThrow(/in use by another runner process/);
    await first.close();
    open.splice(0);
    expect(() => store()).not.toThrow();
  });

  it("holds that lock without a journal file beside it: the store's directory has only the store, its log and the lock", () => {
    store();
    expect(readdirSync(dir).sort()).toEqual([
      "runs.sqlite3",
      "runs.sqlite3-shm",
      "runs.sqlite3-wal",
      "runs.sqlite3.lock",
    ]);
    expect(() => new SqliteRunStore(file)).toThrow(/in use by another runner process/);
    expect(readdirSync(dir)).not.toContain("runs.sqlite3.lock-journal");
  });
});
