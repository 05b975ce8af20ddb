import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { RunEvent } from "../../../src/events/run-event.js";
import { recoverInterruptedRuns } from "../../../src/journal/recover-interrupted.js";
import { startRetention } from "../../../src/journal/retention.js";
import { MAX_UNSTORED_SHOWN } from "../../../src/journal/run-journal.js";
import type { RunUpdate } from "../../../src/journal/run-store.js";
import { SqliteRunStore } from "../../../src/journal/sqlite-run-store.js";
import { runRecord as record } from "../../helpers/run-record.js";

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const src = (file: string) => pathToFileURL(path.join(ROOT, "src", file)).href;

let dir: string;
let file: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "flr-recover-"));
  file = path.join(dir, "runs.sqlite3");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true, maxRetries: 5 });
});

const log = (runId: string, seq: number): RunEvent => ({
  runId,
  seq,
  timeMs: 5,
  body: { type: "log", text: `line ${seq}`, truncated: false },
});

function exitsOf(store: SqliteRunStore, runId: string) {
  return store.readEvents(runId, 0, 100_000).flatMap((e) => (e.body.type === "exit" ? [e] : []));
}

describe("recoverInterruptedRuns", () => {
  it("after kill -9, numbers the exit past every event a live viewer was shown, so resuming from any of them gets it", async () => {
    // A runner process streams a run, a viewer reads everything it is shown, then the process
    // is killed -9 with a batch still unwritten (flushed every 60 s here, or every 512 events).
    const child = `
      import { writeSync } from "node:fs";
      import { RunJournal } from ${JSON.stringify(src("journal/run-journal.ts"))};
      import { SqliteRunStore } from ${JSON.stringify(src("journal/sqlite-run-store.ts"))};
      const store = new SqliteRunStore(${JSON.stringify(file)});
      const record = ${JSON.stringify(record("r", { status: "queued" }))};
      const j = new RunJournal(record, store, Date.now, {
        limits: { tailBytes: 1 << 20, flushIntervalMs: 60000, flushMaxEvents: 512 },
      });
      j.append({ type: "meta", sessionId: "s", agent: record.policy, workspacePath: "/w", package: null });
      for (let i = 0; i < 700; i++) j.append({ type: "log", text: "line " + i, truncated: false });
      let shown = 0;
      for (;;) {
        const batch = j.read(shown, 256, false);
        if (batch.length === 0) break;
        shown = batch[batch.length - 1].seq;
      }
      writeSync(1, JSON.stringify({ shown }) + "\\n");
      process.kill(process.pid, "SIGKILL");
    `;
    const out = await run(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", child],
      {
        cwd: ROOT,
      },
    ).catch((err: { stdout: string; signal: string }) => {
      expect(err.signal).toBe("SIGKILL");
      return err;
    });
    const { shown } = JSON.parse(out.stdout) as { shown: number };
    expect(shown).toBe(701);

    const store = new SqliteRunStore(file);
    try {
      const stored = store.getRun("r")?.lastSeq ?? 0;
      expect(stored).toBe(513); // meta, then one full batch of 512: the last 188 lines were lost
      expect(recoverInterruptedRuns(store, 9000, new Set())).toEqual(new Set(["r"]));
      const rec = store.getRun("r");
      expect(rec).toMatchObject({ status: "finished", exitReason: "interrupted" });
      expect(rec?.lastSeq).toBe(stored + MAX_UNSTORED_SHOWN + 1);
      expect(rec?.lastSeq).toBeGreaterThan(shown);
      // The viewer resumes after the last seq it saw (Attach after_seq, SSE Last-Event-ID).
      const resumed = store.readEvents("r", shown, 10);
      expect(resumed.map((e) => e.body.type)).toEqual(["exit"]);
      expect(resumed[0]?.seq).toBe(rec?.lastSeq);
      // Every stored event is in order, and only the exit follows a gap.
      const seqs = store.readEvents("r", 0, 10_000).map((e) => e.seq);
      expect(seqs).toEqual([...Array.from({ length: 513 }, (_, i) => i + 1), rec?.lastSeq]);
    } finally {
      await store.close();
    }
  });

  it("writes a run's exit and status in one transaction: a crash in between never leaves two exits", async () => {
    let store = new SqliteRunStore(file);
    store.createRun(record("r", { status: "running" }));
    store.appendEvents("r", [log("r", 1), log("r", 2)]);
    await store.close();
    // The first restart dies after writing the exit, before the status.
    const dying = new (class extends SqliteRunStore {
      override updateRun(_runId: string, _update: RunUpdate): void {
        throw new Error("kill -9 right here");
      }
    })(file);
    expect(() => recoverInterruptedRuns(dying, 5000, new Set())).toThrow("kill -9 right here");
    await dying.close();
    store = new SqliteRunStore(file);
    try {
      recoverInterruptedRuns(store, 6000, new Set());
      expect(exitsOf(store, "r")).toHaveLength(1);
      expect(store.getRun("r")).toMatchObject({ status: "finished", exitReason: "interrupted" });
      // Started once more: nothing is live, nothing changes.
      expect(recoverInterruptedRuns(store, 7000, new Set()).size).toBe(0);
      expect(exitsOf(store, "r")).toHaveLength(1);
    } finally {
      await store.close();
    }
  });

  it("only sets the status of a run whose last stored event is already an exit", async () => {
    const store = new SqliteRunStore(file);
    try {
      // What a recovery that committed its exit and then died (an older runner) left behind.
      store.createRun(record("r", { status: "running" }));
      store.appendEvents("r", [
        log("r", 1),
        {
          runId: "r",
          seq: 2,
          timeMs: 4000,
          body: {
            type: "exit",
            reason: "interrupted",
            returnCode: null,
            signal: null,
            durationMs: 3000,
            message: "The runner stopped.",
            killedByRunner: true,
            succeeded: false,
          },
        },
      ]);
      expect(recoverInterruptedRuns(store, 9000, new Set())).toEqual(new Set(["r"]));
      expect(store.readEvents("r", 0, 10).map((e) => e.seq)).toEqual([1, 2]);
      expect(store.getRun("r")).toMatchObject({
        status: "finished",
        lastSeq: 2,
        endedAtMs: 4000,
        exitReason: "interrupted",
        exitMessage: "The runner stopped.",
        succeeded: false,
      });
    } finally {
      await store.close();
    }
  });

  it("says a provider was killed only for a run whose processes the restart found, or that printed", async () => {
    const store = new SqliteRunStore(file);
    const meta = (runId: string): RunEvent => ({
      runId,
      seq: 1,
      timeMs: 2,
      body: {
        type: "meta",
        sessionId: "s",
        agent: record(runId).policy,
        workspacePath: "/w",
        package: null,
      },
    });
    try {
      store.createRun(record("waiting", { status: "queued" }));
      store.appendEvents("waiting", [
        {
          runId: "waiting",
          seq: 1,
          timeMs: 2,
          body: { type: "queued", position: 1, queueSize: 1 },
        },
      ]);
      // Its meta is stored before its spawn: the runner may have died before that.
      for (const id of ["found", "unstarted"]) {
        store.createRun(record(id, { status: "running" }));
        store.appendEvents(id, [meta(id)]);
      }
      store.createRun(record("printed", { status: "running" }));
      store.appendEvents("printed", [meta("printed"), log("printed", 2)]);
      recoverInterruptedRuns(store, 9000, new Set(["found"]));
      const exit = (id: string) => exitsOf(store, id)[0]?.body;
      expect(exit("waiting")).toMatchObject({ reason: "interrupted", killedByRunner: false });
      // Queued in the store: waiting, or its start (meta) refused; both said, and why no provider ran.
      expect(exit("waiting")).toMatchObject({
        message: expect.stringMatching(
          /before the store recorded this run's start \(it was waiting, or the store refused the record\); no provider process was started/,
        ),
      });
      expect(store.getRun("waiting")?.exitMessage).toMatch(/no provider process was started/);
      // Nothing found, nothing printed: no claim that a provider ran, or that the runner killed one.
      expect(exit("unstarted")).toMatchObject({
        reason: "interrupted",
        killedByRunner: false,
        message: expect.stringMatching(
          /no provider process of it was found .*: the runner stopped before starting the provider, or the provider ended with it before printing anything/,
        ),
      });
      expect(store.getRun("unstarted")?.exitMessage).not.toMatch(/killed/);
      expect(exit("found")).toMatchObject({
        reason: "interrupted",
        killedByRunner: true,
        message: expect.stringMatching(
          /were still running and were killed when the runner started again/,
        ),
      });
      // It printed, so it ran: the spawn helper kills a provider when the runner dies.
      expect(exit("printed")).toMatchObject({
        reason: "interrupted",
        killedByRunner: true,
        message: expect.stringMatching(/the provider had ended when the runner started again/),
      });
    } finally {
      await store.close();
    }
  });
});

describe("recoverInterruptedRuns and retention", () => {
  it("its own look at a run's last event is no viewer's read: retention's start-up pass may still delete the run by size", async () => {
    const store = new SqliteRunStore(file);
    try {
      store.createRun(record("crashed", { status: "running" }));
      store.appendEvents("crashed", [
        {
          runId: "crashed",
          seq: 1,
          timeMs: 5,
          body: { type: "log", text: "x".repeat(10_000), truncated: false },
        },
      ]);
      // As app.ts starts: recovery, then retention (here a store capped far below that run).
      expect(recoverInterruptedRuns(store, Date.now(), new Set())).toEqual(new Set(["crashed"]));
      const logged: unknown[] = [];
      const logger = {
        info: (o: unknown) => logged.push(o),
        error: (o: unknown) => logged.push(o),
      };
      startRetention(store, { retentionMs: 3_600_000, maxBytes: 1000 }, logger as never).stop();
      expect(store.getRun("crashed")).toBeNull();
      expect(logged).toEqual([{ removed: 1 }]);
    } finally {
      await store.close();
    }
  });
});
