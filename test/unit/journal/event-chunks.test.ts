/** The run store keeps events in chunks of up to 64: every read and write sees them as events. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { RunEvent, RunEventBody } from "../../../src/events/run-event.js";
import { SqliteRunStore } from "../../../src/journal/sqlite-run-store.js";
import { runRecord } from "../../helpers/run-record.js";

let dir: string;
const open: SqliteRunStore[] = [];
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "flr-chunks-"));
});
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  await rm(dir, { recursive: true, force: true });
});

function store(file = path.join(dir, "runs.sqlite3")): SqliteRunStore {
  const s = new SqliteRunStore(file);
  open.push(s);
  return s;
}

/** Bodies of every kind, with texts a record format could trip on. */
function bodyFor(seq: number): RunEventBody {
  const texts = [
    `{"type":"item.completed","item":{"id":"l${seq}","type":"agent_message","text":"plain"}}`,
    "tabs\tin\tthe\tline\t",
    "a line break \n inside, and one at the end\n",
    "",
    "漢字 and emoji 😀, a ~tilde and a \\ backslash",
    "\r\n\t~",
  ];
  const text = texts[seq % texts.length] as string;
  switch (seq % 9) {
    case 0:
      return { type: "log", text, truncated: seq % 2 === 0 };
    case 4:
      return { type: "queued", position: seq, queueSize: seq + 1 };
    case 7:
      return {
        type: "exit",
        reason: "completed",
        returnCode: 0,
        signal: null,
        message: `done\n${text}`,
        durationMs: seq,
        killedByRunner: false,
        succeeded: true,
      };
    default:
      return { type: "agent", raw: text, items: [], truncated: seq % 5 === 0 };
  }
}

const event = (runId: string, seq: number): RunEvent => ({
  runId,
  seq,
  timeMs: 1_700_000_000_000 + seq,
  body: bodyFor(seq),
});

const utf8 = (e: RunEvent): number => {
  const b = e.body;
  if (b.type === "agent") return Buffer.byteLength(b.raw);
  if (b.type === "log") return Buffer.byteLength(b.text);
  return Buffer.byteLength(JSON.stringify(b));
};

describe("the run store's event chunks", () => {
  it("reads back exactly what was appended, from any seq and for any limit, across chunk and batch edges", () => {
    const s = store();
    s.createRun(runRecord("a"));
    s.createRun(runRecord("b"));
    const all: RunEvent[] = [];
    const bSeqs: number[] = [];
    let seq = 0;
    // Batches that end inside, at and past a 64-event chunk, interleaved with another run's.
    for (const size of [1, 70, 3, 64, 130, 2]) {
      const batch = Array.from({ length: size }, () => event("a", ++seq));
      s.appendEvents("a", batch);
      bSeqs.push(all.length + 1);
      s.appendEvents("b", [event("b", all.length + 1)]);
      all.push(...batch);
    }
    expect(s.getRun("a")?.lastSeq).toBe(seq);
    expect(s.getRun("a")?.eventBytes).toBe(all.reduce((n, e) => n + utf8(e), 0));
    for (let after = 0; after <= seq; after++) {
      for (const limit of [1, 7, 64, 65, 256]) {
        expect(s.readEvents("a", after, limit), `after ${after}, limit ${limit}`).toEqual(
          all.slice(after, after + limit),
        );
      }
    }
    expect(s.readEvents("a", 0, 0)).toEqual([]);
    expect(s.readEvents("b", 0, 100).map((e) => e.seq)).toEqual(bSeqs);
    // Retention takes a run's chunks, and only its own.
    s.updateRun("a", { status: "finished", endedAtMs: 1 });
    expect(s.prune({ endedBeforeMs: 10, maxBytes: 1e12 })).toBe(1);
    expect(s.readEvents("a", 0, 10)).toEqual([]);
    expect(s.readEvents("b", 0, 100)).toHaveLength(6);
  });

  it("closes a chunk at 256 K characters whatever its count: long lines read back whole from any seq", () => {
    const file = path.join(dir, "runs.sqlite3");
    const s = store(file);
    s.createRun(runRecord("long"));
    const long = (seq: number): RunEvent => ({
      runId: "long",
      seq,
      timeMs: seq,
      body: { type: "agent", raw: `${seq}:${"z".repeat(100_000)}`, items: [], truncated: false },
    });
    const all = Array.from({ length: 20 }, (_, i) => long(i + 1));
    s.appendEvents("long", all);
    for (let after = 0; after < 20; after++) {
      expect(s.readEvents("long", after, 2), `after ${after}`).toEqual(all.slice(after, after + 2));
    }
    const db = new Database(file, { readonly: true });
    // Three 100 KB lines reach 256 K characters: 7 chunks for 20, not one.
    expect((db.prepare("SELECT COUNT(*) AS n FROM event_chunks").get() as { n: number }).n).toBe(7);
    db.close();
  });

  it("refuses events that do not follow the stored ones (a chunk is found by its first seq)", () => {
    const s = store();
    s.createRun(runRecord("a"));
    s.appendEvents("a", [event("a", 1), event("a", 2), event("a", 3)]);
    expect(() => s.appendEvents("a", [event("a", 3)])).toThrow(/not after the stored 3/);
    expect(() => s.appendEvents("a", [event("a", 2), event("a", 4)])).toThrow(/not after/);
    expect(s.readEvents("a", 0, 10).map((e) => e.seq)).toEqual([1, 2, 3]);
    // A gap is fine: crash recovery numbers its exit past what viewers may have seen.
    s.appendEvents("a", [event("a", 600)]);
    expect(s.readEvents("a", 2, 10).map((e) => e.seq)).toEqual([3, 600]);
    expect(s.readEvents("a", 3, 10).map((e) => e.seq)).toEqual([600]);
  });

  it("moves a schema-2 store's events into chunks: every event as it was, byte counts kept, new keys above", async () => {
    const file = path.join(dir, "v2.sqlite3");
    // A schema-2 store as session 15-17 runners left it.
    const first = store(file);
    first.createRun(runRecord("old"));
    await first.close();
    open.splice(0);
    const db = new Database(file);
    db.exec(`DROP TABLE event_chunks;
      CREATE TABLE events (run_key INTEGER NOT NULL, seq INTEGER NOT NULL, time_ms INTEGER NOT NULL,
        kind TEXT NOT NULL, text TEXT NOT NULL, truncated INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_key, seq)) WITHOUT ROWID;
      PRAGMA user_version = 2;`);
    const key = (
      db.prepare("SELECT run_key FROM runs WHERE run_id = 'old'").get() as { run_key: number }
    ).run_key;
    const add = db.prepare(
      "INSERT INTO events (run_key, seq, time_ms, kind, text, truncated) VALUES (?, ?, ?, ?, ?, ?)",
    );
    const events = Array.from({ length: 150 }, (_, i) => event("old", i + 1));
    let bytes = 0;
    for (const e of events) {
      const b = e.body;
      const text = b.type === "agent" ? b.raw : b.type === "log" ? b.text : JSON.stringify(b);
      const truncated = (b.type === "agent" || b.type === "log") && b.truncated ? 1 : 0;
      add.run(key, e.seq, e.timeMs, b.type, text, truncated);
      bytes += Buffer.byteLength(text);
    }
    db.prepare("UPDATE runs SET last_seq = 150, event_bytes = ? WHERE run_id = 'old'").run(bytes);
    db.close();

    const migrated = store(file);
    expect(migrated.readEvents("old", 0, 1000)).toEqual(events);
    expect(migrated.readEvents("old", 63, 3)).toEqual(events.slice(63, 66));
    expect(migrated.getRun("old")?.eventBytes).toBe(bytes);
    migrated.createRun(runRecord("new"));
    migrated.appendEvents("new", [event("new", 1)]);
    expect(migrated.readEvents("new", 0, 10)).toEqual([event("new", 1)]);
    expect(migrated.readEvents("old", 149, 10)).toEqual([events[149]]);
    await migrated.close();
    open.splice(0);
    const after = new Database(file, { readonly: true });
    expect(after.pragma("user_version", { simple: true })).toBe(4);
    // 150 events in chunks of up to 64 (3), and the new run's one.
    expect((after.prepare("SELECT COUNT(*) AS n FROM event_chunks").get() as { n: number }).n).toBe(
      4,
    );
    after.close();
  });
});
