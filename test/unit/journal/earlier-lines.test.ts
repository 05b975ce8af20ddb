/**
 * The look-back's bounds (journal/earlier-lines.ts): the same events, the
 * same order and the same character budget whether they are in memory or
 * read from the store a page at a time.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { RunEvent } from "../../../src/events/run-event.js";
import {
  LOOK_BACK_CHARS,
  newBudget,
  searchEvents,
  searchStored,
} from "../../../src/journal/earlier-lines.js";
import { SqliteRunStore } from "../../../src/journal/sqlite-run-store.js";
import { runRecord } from "../../helpers/run-record.js";

let dir: string;
let store: SqliteRunStore;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "flr-earlier-"));
  store = new SqliteRunStore(path.join(dir, "runs.sqlite3"));
});
afterEach(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true, maxRetries: 5 });
});

const agent = (seq: number, raw: string): RunEvent => ({
  runId: "r",
  seq,
  timeMs: 0,
  body: { type: "agent", raw, items: [], truncated: false },
});
const log = (seq: number, text: string): RunEvent => ({
  runId: "r",
  seq,
  timeMs: 0,
  body: { type: "log", text, truncated: false },
});

/** Both searches over `events` (seq 1..n), for the line after the last: [in memory, from the store]. */
let runs = 0;
function bothWays(events: RunEvent[], needle: string): [number | null, number | null] {
  const pick = (raw: string) => Number(/^(\d+)/.exec(raw)?.[1] ?? Number.NaN);
  const runId = `r${++runs}`;
  store.createRun(runRecord(runId));
  store.appendEvents(
    runId,
    events.map((e) => ({ ...e, runId })),
  );
  return [
    searchEvents(events, needle, pick, newBudget()),
    searchStored(store, runId, 1, events.length, needle, pick, newBudget()),
  ];
}

describe("the look-back through a run's earlier lines", () => {
  it("finds the newest line holding the needle across store pages, skipping stderr lines", () => {
    const events = Array.from({ length: 100 }, (_, i) =>
      i % 3 === 0
        ? log(i + 1, `${i + 1} call`)
        : agent(i + 1, `${i + 1} ${i === 10 ? "call" : "x"}`),
    );
    // Line 11 is the only stdout line with "call"; the newer stderr lines holding it do not count.
    expect(bothWays(events, "call")).toEqual([11, 11]);
  });

  it("stops after LOOK_BACK_CHARS of text, at the same line in memory and in the store", () => {
    const big = "y".repeat(1024 * 1024);
    const lines = (behind: number) => [
      agent(1, "1 call"),
      ...Array.from({ length: behind }, (_, i) => agent(i + 2, `${i + 2} ${big}`)),
    ];
    // Three such lines and then the call fit the budget; with a fourth, it runs out first.
    const fits = Math.floor(LOOK_BACK_CHARS / big.length) - 1;
    expect(bothWays(lines(fits), "call")).toEqual([1, 1]);
    expect(bothWays(lines(fits + 1), "call")).toEqual([null, null]);
  });
});
