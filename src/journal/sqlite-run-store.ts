import { randomBytes } from "node:crypto";
import { mkdirSync, statSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { RunnerError } from "../errors/runner-error.js";
import type { RunEvent, RunEventBody } from "../events/run-event.js";
import { Checkpointer } from "./checkpointer.js";
import {
  normalizeUser,
  type RunQuery,
  type RunRecord,
  type RunStore,
  type RunUpdate,
} from "./run-store.js";

/**
 * Bump with a step in `migrate` whenever SCHEMA changes. 2: events are keyed
 * by the run's integer `run_key`, not its 36-character id. 3: events are
 * stored in chunks (`event_chunks`), not a row each. 4: `sessions` records
 * who owns a session (claimed by its first run while auth is on). An index
 * or a table an older runner never reads (`meta`) needs no bump: a runner of
 * the same version reads the file as before (SCHEMA's `IF NOT EXISTS` adds it
 * to a store at this version).
 */
const SCHEMA_VERSION = 4;

/**
 * Schema 2's events table, one row per event, keyed by the run's `run_key`
 * (an integer given at `createRun`), not the run id. Only migrations make it.
 */
const EVENTS_TABLE = (name: string) => `
CREATE TABLE IF NOT EXISTS ${name} (
  run_key INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  -- agent and log lines (nearly every event) are stored as their text, no JSON;
  -- other events as the JSON of their body. truncated: 1 when the line was cut.
  kind TEXT NOT NULL,
  text TEXT NOT NULL,
  truncated INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (run_key, seq)
) WITHOUT ROWID;
`;

/**
 * Events, up to CHUNK_EVENTS consecutive ones of a run to a row: a row per
 * event cost SQLite ≈ 2.6 µs per event to insert (a B-tree insert each, the
 * largest share of the runner's time per line), a row per 64 ≈ 1 µs, and
 * reading back costs about half as much. The row id is the run's key and the
 * chunk's first seq (`run_key << 32 | first_seq`): a run's chunks are one id
 * range, in seq order, and the chunk holding a seq is the last one starting
 * at or before it. `events` is the chunk's records (see `encodeRecord`).
 */
const CHUNKS_TABLE = `
CREATE TABLE IF NOT EXISTS event_chunks (
  id INTEGER PRIMARY KEY,
  last_seq INTEGER NOT NULL,
  events TEXT NOT NULL
);
`;

/** The largest seq a chunk id holds. */
const MAX_SEQ = 2 ** 32 - 1;

/** Events per chunk row at most (one journal write of 512 is 8 rows). */
const CHUNK_EVENTS = 64;

/**
 * A chunk is closed once its text reaches this many characters, whatever its
 * count: 64 lines at the line cap would make one string (and SQLite copy) of
 * tens of MB.
 */
const CHUNK_MAX_CHARS = 256 * 1024;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  user_id TEXT,
  user_norm TEXT NOT NULL,
  session_id TEXT NOT NULL,
  provider TEXT NOT NULL,
  policy_json TEXT NOT NULL,
  package_id TEXT,
  detached INTEGER NOT NULL,
  prompt_preview TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL,
  started_at_ms INTEGER,
  ended_at_ms INTEGER,
  exit_reason TEXT,
  return_code INTEGER,
  exit_message TEXT NOT NULL DEFAULT '',
  succeeded INTEGER,
  last_seq INTEGER NOT NULL DEFAULT 0,
  event_bytes INTEGER NOT NULL DEFAULT 0,
  run_key INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_user ON runs (user_norm, created_at_ms DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE UNIQUE INDEX IF NOT EXISTS runs_by_key ON runs (run_key);
-- A session's runs, oldest first: its owner's backfill and the pruning of owners of sessions
-- with no runs left are index lookups, not scans of every run.
CREATE INDEX IF NOT EXISTS runs_by_session ON runs (session_id, created_at_ms, run_id);
CREATE TABLE IF NOT EXISTS sessions (
  session_id TEXT PRIMARY KEY,
  owner_norm TEXT NOT NULL,
  claimed_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- Values kept for every runner that opens the store: page_token_key (RunStore.pageTokenKey).
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value BLOB NOT NULL
) WITHOUT ROWID;
${CHUNKS_TABLE}`;

interface RunRow {
  run_id: string;
  user_id: string | null;
  session_id: string;
  provider: string;
  policy_json: string;
  package_id: string | null;
  detached: number;
  prompt_preview: string;
  status: RunRecord["status"];
  created_at_ms: number;
  started_at_ms: number | null;
  ended_at_ms: number | null;
  exit_reason: RunRecord["exitReason"];
  return_code: number | null;
  exit_message: string;
  succeeded: number | null;
  last_seq: number;
  event_bytes: number;
}

function fromRow(r: RunRow): RunRecord {
  return {
    runId: r.run_id,
    userId: r.user_id,
    sessionId: r.session_id,
    provider: r.provider,
    policy: JSON.parse(r.policy_json) as RunRecord["policy"],
    packageId: r.package_id,
    detached: r.detached === 1,
    promptPreview: r.prompt_preview,
    status: r.status,
    createdAtMs: r.created_at_ms,
    startedAtMs: r.started_at_ms,
    endedAtMs: r.ended_at_ms,
    exitReason: r.exit_reason,
    returnCode: r.return_code,
    exitMessage: r.exit_message,
    succeeded: r.succeeded === null ? null : r.succeeded === 1,
    lastSeq: r.last_seq,
    eventBytes: r.event_bytes,
  };
}

/**
 * The connection's page cache, KiB. better-sqlite3 builds SQLite with a 16 MB default, and under
 * the exclusive lock the cache is never invalidated, so it grew to 16 MB of the runner's RSS
 * within its first 100,000-line run. Appends touch only the right edge of the events key and a
 * lagging viewer reads recent pages, which the OS page cache holds anyway: at 512 KiB and 2 MiB
 * (SQLite's own default) the stream benches measured the same as at 16 MB. 512 KiB: what a fresh
 * runner's first busy run adds to its RSS counts against the paused-client budget.
 */
const PAGE_CACHE_KIB = 512;

/**
 * SQLite's own checkpoint, left on as a backstop: at this many log pages (≈ 100 MB) a commit
 * checkpoints if the checkpointer has fallen that far behind. Back to SQLite's default (1,000)
 * if the checkpointer fails.
 */
const BACKSTOP_CHECKPOINT_PAGES = 25_000;

/**
 * The log file's size kept on disk when the log restarts: it grows past this only under a writer
 * that never pauses long enough for the checkpointer to copy the log to its end (then up to the
 * backstop above).
 */
const WAL_FILE_LIMIT_BYTES = 16 * 1024 * 1024;

/**
 * How often the store looks that its lock file is still the one it holds. A lock file removed
 * (by hand, or by a cleaner of old files: it is never written after its creation) would let
 * another runner take a new one at that path, then close this runner's live runs as a crashed
 * runner's and kill their providers.
 */
const LOCK_CHECK_MS = 1000;

/**
 * The one-runner-per-store lock at `lockPath`, taken: a database of its own held exclusively
 * until closed. Throws SQLite's error (SQLITE_BUSY: another runner holds it).
 */
function takeLock(lockPath: string): Database.Database {
  const lock = new Database(lockPath);
  try {
    lock.pragma("locking_mode = EXCLUSIVE");
    // First: setting the journal mode reads the file, which another runner's lock refuses.
    lock.pragma("busy_timeout = 200");
    // The lock's one write (a new file's first page) needs no rollback journal on disk: in
    // exclusive mode SQLite keeps a journal file open until close, a stray `.lock-journal`.
    lock.pragma("journal_mode = MEMORY");
    lock.exec("BEGIN EXCLUSIVE; COMMIT;");
    return lock;
  } catch (err) {
    lock.close();
    throw err;
  }
}

/** The file at `p` (device and inode), or null when there is none or it cannot be looked at. */
function fileIdentity(p: string): string | null {
  try {
    const st = statSync(p, { throwIfNoEntry: false });
    return st === undefined ? null : `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/** What the log takes beyond the text: per event (its record's fields) and per transaction (pages). */
const LOG_BYTES_PER_EVENT = 24;
const LOG_BYTES_PER_TX = 3 * 4096;

/** Bytes of the text written by the last `encodeRecord` (no tuple allocated per event). */
let recordTextBytes = 0;

/**
 * One event as a chunk record: `seq \t time_ms \t kind \t truncated \t text`,
 * the text last so it may hold tabs; records are joined with "\n". Agent and
 * log lines (nearly every event) are their text, no JSON (a line never holds
 * a "\n": lines are split on it); other events the JSON of their body (which
 * never holds one either). A text that does anyway is stored as a JSON string,
 * its kind marked with "~". Sets `recordTextBytes` to the text's UTF-8 bytes,
 * what `event_bytes` counts (`string.length` counts UTF-16 units, a third of a
 * CJK line's bytes; `Buffer.byteLength` is ~25 ns for a 200-byte ASCII line).
 */
function encodeRecord(e: RunEvent): string {
  const b = e.body;
  let kind: string = b.type;
  let text: string;
  let truncated = 0;
  if (b.type === "agent" || b.type === "log") {
    text = b.type === "agent" ? b.raw : b.text;
    truncated = b.truncated ? 1 : 0;
  } else {
    text = JSON.stringify(b);
  }
  recordTextBytes = Buffer.byteLength(text, "utf8");
  if (text.includes("\n")) {
    kind = `~${kind}`;
    text = JSON.stringify(text);
  }
  return `${e.seq}\t${e.timeMs}\t${kind}\t${truncated}\t${text}`;
}

/**
 * Append to `out` the events of one chunk with seq > afterSeq, until `out`
 * holds `limit`. The texts are slices of the chunk's string (no copy).
 */
function decodeChunk(
  runId: string,
  chunk: string,
  afterSeq: number,
  limit: number,
  out: RunEvent[],
): void {
  const n = chunk.length;
  let at = 0;
  while (at < n && out.length < limit) {
    let end = chunk.indexOf("\n", at);
    if (end === -1) end = n;
    const t1 = chunk.indexOf("\t", at);
    const seq = Number(chunk.slice(at, t1));
    if (seq > afterSeq) {
      const t2 = chunk.indexOf("\t", t1 + 1);
      const t3 = chunk.indexOf("\t", t2 + 1);
      let kind = chunk.slice(t2 + 1, t3);
      let text = chunk.slice(t3 + 3, end);
      if (kind.charCodeAt(0) === 0x7e) {
        kind = kind.slice(1);
        text = JSON.parse(text) as string;
      }
      const truncated = chunk.charCodeAt(t3 + 1) === 0x31 ? 1 : 0;
      out.push({
        runId,
        seq,
        timeMs: Number(chunk.slice(t1 + 1, t2)),
        body: bodyOf(kind, text, truncated),
      });
    }
    at = end + 1;
  }
}

/**
 * An event read back. Agent lines come back raw with no typed items: the
 * items are a pure function of the raw line and the provider, re-derived by
 * the reader (`journal/rehydrate.ts`), so they are not stored twice.
 */
function bodyOf(kind: string, text: string, truncated: number): RunEventBody {
  if (kind === "agent") return { type: "agent", raw: text, items: [], truncated: truncated === 1 };
  if (kind === "log") return { type: "log", text, truncated: truncated === 1 };
  return JSON.parse(text) as RunEventBody;
}

const UPDATE_COLUMNS: Record<keyof RunUpdate, string> = {
  status: "status",
  packageId: "package_id",
  startedAtMs: "started_at_ms",
  endedAtMs: "ended_at_ms",
  exitReason: "exit_reason",
  returnCode: "return_code",
  exitMessage: "exit_message",
  succeeded: "succeeded",
};

/**
 * Why the store at `file` cannot be opened, as the operator can act on it:
 * SQLite's code tells a store another runner holds from one that is not a
 * database, or a file or directory this process cannot use.
 */
function storeOpenError(file: string, err: unknown): RunnerError {
  const code = (err as { code?: unknown }).code;
  const detail = (err as Error).message;
  const which = `The run store ${file} (with its lock file ${file}.lock)`;
  let message: string;
  if (code === "SQLITE_BUSY" || code === "SQLITE_LOCKED") {
    message = `The run store ${file} is in use by another runner process; give each runner its own FERMILINK_RUNNER_STORE_PATH.`;
  } else if (code === "SQLITE_NOTADB" || code === "SQLITE_CORRUPT") {
    message = `${which} is not a readable SQLite database (${detail}); move the file aside, or set FERMILINK_RUNNER_STORE_PATH to a new file.`;
  } else if (code === "SQLITE_FULL") {
    message = `${which} cannot be written: the disk is full (${detail}); free space, or set FERMILINK_RUNNER_STORE_PATH to another disk.`;
  } else {
    message = `${which} cannot be opened (${detail}); check that the files and their directory are readable and writable by this process, or set FERMILINK_RUNNER_STORE_PATH elsewhere.`;
  }
  return new RunnerError("INTERNAL", message, { cause: err });
}

/**
 * The embedded run store: one SQLite file (WAL, so readers never wait for the
 * writer and a `kill -9` never corrupts it; synchronous=NORMAL, so a commit
 * costs no fsync while a crash of this process still loses nothing committed).
 */
export class SqliteRunStore implements RunStore {
  private readonly db: Database.Database;
  private readonly insertChunk: Database.Statement;
  private readonly bumpRun: Database.Statement;
  private readonly selectChunks: Database.Statement;
  private readonly selectKey: Database.Statement;
  private readonly selectKeyAndLast: Database.Statement;
  private readonly statements = new Map<string, Database.Statement>();
  /** Returns the UTF-8 bytes of the text written. */
  private readonly appendTx: (runId: string, events: readonly RunEvent[]) => number;
  /** `atomically`'s transaction (better-sqlite3 nests appendTx inside it as a savepoint). */
  private readonly atomicTx: (fn: () => void) => void;
  /**
   * When each run's events were last read (`now()`): a viewer is reading it
   * back, so `prune` leaves it to a later pass. Entries older than prune's
   * `readSinceMs` are dropped there.
   */
  private readonly lastReadMs = new Map<string, number>();
  /**
   * The clock read times are stamped with. Retention computes `readSinceMs`
   * from its own clock (`startRetention`'s `now`): the two must be the same
   * one, or a read is held too long or not at all.
   */
  private readonly now: () => number;
  /** Holds the one-runner-per-store lock (`<file>.lock`) while this store is open. */
  private lock: Database.Database;
  private readonly lockPath: string;
  /** `fileIdentity` of the lock file held, compared with what its path names (`keepLock`). */
  private lockId: string | null;
  private readonly lockTimer: NodeJS.Timeout;
  /**
   * Told when the lock's path names another file that cannot be taken (once until it can), or
   * the store's path no longer names the file open here (once).
   */
  private readonly onProblem: (message: string) => void;
  private lockLostReported = false;
  /** `fileIdentity` of the store file opened, null once its loss was reported. */
  private storeId: string | null;
  private readonly checkpointer: Checkpointer;
  readonly pageTokenKey: Uint8Array;

  constructor(
    file: string,
    opts: {
      now?: () => number;
      /**
       * Told when the lock file was removed or replaced and another process holds the new one,
       * or when the store file was removed or replaced.
       */
      onProblem?: (message: string) => void;
      /** How often the lock file is checked (tests); LOCK_CHECK_MS by default. */
      lockCheckMs?: number;
    } = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.onProblem = opts.onProblem ?? (() => {});
    this.lockPath = `${file}.lock`;
    mkdirSync(path.dirname(file), { recursive: true });
    // One runner per store: at start-up a runner closes the runs it finds live and kills their
    // processes, which must never hit another runner's runs. The store itself is shared with this
    // runner's checkpointer, so the lock is a database of its own beside it, held exclusively from
    // its first write until close. (A runner from before session 15 holds the store itself
    // exclusively: reading it fails below, with the same message.)
    let lock: Database.Database | undefined;
    let db: Database.Database | undefined;
    try {
      lock = takeLock(this.lockPath);
      db = new Database(file);
      db.pragma("busy_timeout = 200");
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = NORMAL");
      db.pragma(`cache_size = -${PAGE_CACHE_KIB}`);
      this.lock = lock;
      this.db = db;
      this.migrate(file);
      this.pageTokenKey = this.db
        .prepare("SELECT value FROM meta WHERE key = 'page_token_key'")
        .pluck(true)
        .get() as Buffer;
    } catch (err) {
      // Whatever failed (the lock, the file, a store refused or a migration), both are let go.
      db?.close();
      lock?.close();
      throw err instanceof RunnerError ? err : storeOpenError(file, err);
    }
    this.lockId = fileIdentity(this.lockPath);
    this.storeId = fileIdentity(file);
    this.lockTimer = setInterval(() => {
      this.keepLock();
      this.checkStoreFile(file);
    }, opts.lockCheckMs ?? LOCK_CHECK_MS).unref();
    this.db.pragma(`wal_autocheckpoint = ${BACKSTOP_CHECKPOINT_PAGES}`);
    // The log restarts from its beginning once checkpointed; its file is then cut back to this.
    this.db.pragma(`journal_size_limit = ${WAL_FILE_LIMIT_BYTES}`);
    this.checkpointer = new Checkpointer(file, () => {
      if (this.db.open) this.db.pragma("wal_autocheckpoint = 1000");
    });
    this.insertChunk = this.db.prepare(
      "INSERT INTO event_chunks (id, last_seq, events) VALUES ((? << 32) | ?, ?, ?)",
    );
    // A run's chunks from the one holding `from` on, in seq order. Rows as arrays.
    this.selectChunks = this.db
      .prepare(
        `SELECT events FROM event_chunks
          WHERE id >= COALESCE((SELECT MAX(id) FROM event_chunks
                                 WHERE id BETWEEN (@key << 32) AND (@key << 32) + @from), @key << 32)
            AND id < ((@key + 1) << 32)
          ORDER BY id`,
      )
      .raw(true);
    this.bumpRun = this.db.prepare(
      "UPDATE runs SET last_seq = ?, event_bytes = event_bytes + ? WHERE run_id = ?",
    );
    // Once per batch of events written or read (up to 512 or 256), not per event.
    this.selectKey = this.db.prepare("SELECT run_key FROM runs WHERE run_id = ?").pluck(true);
    this.selectKeyAndLast = this.db
      .prepare("SELECT run_key, last_seq FROM runs WHERE run_id = ?")
      .raw(true);
    this.appendTx = this.db.transaction((runId: string, events: readonly RunEvent[]) => {
      const run = this.selectKeyAndLast.get(runId) as [number, number] | undefined;
      // The journal creates the row with (or before) the first event: a bug, never the caller's.
      if (run === undefined) throw new Error(`run ${runId} has no row to append events to`);
      const [runKey, lastSeq] = run;
      const first = events[0];
      // A chunk is found by its first seq: one that overlapped the stored ones would be read twice.
      if (first !== undefined && first.seq <= lastSeq) {
        throw new Error(`run ${runId}: event ${first.seq} is not after the stored ${lastSeq}`);
      }
      // The seq is the id's low 32 bits (four billion events a run, far past any store cap).
      const last = events[events.length - 1];
      if (last !== undefined && last.seq > MAX_SEQ)
        throw new Error(`run ${runId}: seq ${last.seq} is past ${MAX_SEQ}`);
      let bytes = 0;
      let chunk = "";
      let head: RunEvent | undefined;
      let tail: RunEvent | undefined;
      let count = 0;
      const put = () => {
        if (head && tail) this.insertChunk.run(runKey, head.seq, tail.seq, chunk);
        head = undefined;
        count = 0;
      };
      for (const e of events) {
        const record = encodeRecord(e);
        bytes += recordTextBytes;
        chunk = head === undefined ? record : `${chunk}\n${record}`;
        head ??= e;
        tail = e;
        count += 1;
        if (count === CHUNK_EVENTS || chunk.length >= CHUNK_MAX_CHARS) put();
      }
      put();
      if (last) this.bumpRun.run(last.seq, bytes, runId);
      return bytes;
    });
    this.atomicTx = this.db.transaction((fn: () => void) => fn());
  }

  /**
   * When the lock's path no longer names the file held (LOCK_CHECK_MS), the lock is taken
   * again there, so a runner started later still finds the store in use. If another process
   * holds that path's lock already, two runners share the store: told once.
   */
  private keepLock(): void {
    if (!this.lock.open || fileIdentity(this.lockPath) === this.lockId) return;
    let fresh: Database.Database;
    try {
      fresh = takeLock(this.lockPath);
    } catch (err) {
      if (this.lockLostReported) return;
      this.lockLostReported = true;
      this.onProblem(
        `The run store's lock file ${this.lockPath} was removed or replaced while this runner held it, and it cannot be taken again (${(err as Error).message}): another runner may be using the same store and closing this one's runs. Stop the other runner; give each runner its own FERMILINK_RUNNER_STORE_PATH.`,
      );
      return;
    }
    this.lock.close();
    this.lock = fresh;
    this.lockId = fileIdentity(this.lockPath);
    this.lockLostReported = false;
  }

  /**
   * SQLite goes on writing to a store file removed or replaced under it (a cleaner, a restore
   * done while the runner runs), and the next runner to start never sees those writes: said
   * once, so the operator can restart it before more is written there.
   */
  private checkStoreFile(file: string): void {
    if (this.storeId === null || !this.db.open || fileIdentity(file) === this.storeId) return;
    this.storeId = null;
    this.onProblem(
      `The run store ${file} was removed or replaced while this runner had it open: what it writes from now on goes to the file it opened, which the next runner to start will not see. Restart the runner to open the store at that path.`,
    );
  }

  atomically(fn: () => void): void {
    // The log bytes are counted by the writes fn makes (each counts its own transaction's pages).
    this.atomicTx(fn);
  }

  /**
   * Bring the file to SCHEMA_VERSION (PRAGMA user_version), in one transaction.
   * Version 0 with tables is a store made while the schema was being settled:
   * a missing column is added; the first events layout (JSON `body`) is
   * refused with what to do, as its rows cannot be read as today's. Version 1
   * keyed events by the run id: each run gets its key, its events are copied
   * under it (events of no run are dropped: nothing could read them), and
   * `event_bytes` is counted again in UTF-8 (version 1 counted UTF-16 units).
   * Version 2's events become chunks (schema 3), in one statement.
   */
  private migrate(file: string): void {
    const version = this.db.pragma("user_version", { simple: true }) as number;
    const columns = (table: string) =>
      (this.db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map(
        (c) => c.name,
      );
    const refuse = (why: string): never => {
      throw new RunnerError("INTERNAL", `The run store ${file} ${why}`);
    };
    if (version > SCHEMA_VERSION) refuse(`was written by a newer runner (schema ${version}).`);
    const eventColumns = columns("events");
    if (version === 0 && eventColumns.includes("body"))
      refuse("has an old layout; move it away (or delete it) and start again.");
    const runColumns = columns("runs");
    this.db.transaction(() => {
      if (runColumns.length > 0 && !runColumns.includes("succeeded"))
        this.db.exec("ALTER TABLE runs ADD COLUMN succeeded INTEGER");
      if (runColumns.length > 0 && !runColumns.includes("run_key"))
        this.db.exec(
          "ALTER TABLE runs ADD COLUMN run_key INTEGER; UPDATE runs SET run_key = rowid;",
        );
      if (eventColumns.includes("run_id")) {
        this.db.exec(`${EVENTS_TABLE("events_by_key")}
          INSERT INTO events_by_key (run_key, seq, time_ms, kind, text, truncated)
            SELECT r.run_key, e.seq, e.time_ms, e.kind, e.text, e.truncated
              FROM events e JOIN runs r ON r.run_id = e.run_id;
          DROP TABLE events;
          ALTER TABLE events_by_key RENAME TO events;
          UPDATE runs SET event_bytes = (SELECT COALESCE(SUM(length(CAST(text AS BLOB))), 0)
                                           FROM events WHERE events.run_key = runs.run_key);`);
      }
      if (eventColumns.length > 0) {
        // Schema 2's rows into chunks of CHUNK_EVENTS, records as encodeRecord writes them.
        this.db.exec(`${CHUNKS_TABLE}
          INSERT INTO event_chunks (id, last_seq, events)
            SELECT (run_key << 32) | MIN(seq), MAX(seq),
                   group_concat(seq || char(9) || time_ms || char(9)
                                || CASE WHEN instr(text, char(10)) > 0
                                        THEN '~' || kind || char(9) || truncated || char(9) || json_quote(text)
                                        ELSE kind || char(9) || truncated || char(9) || text END,
                                char(10) ORDER BY seq)
              FROM events GROUP BY run_key, (seq - 1) / ${CHUNK_EVENTS};
          DROP TABLE events;`);
      }
      this.db.exec(SCHEMA);
      // Made once, with the store (or the first time a runner that knows it opens an older one).
      this.db
        .prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('page_token_key', ?)")
        .run(randomBytes(32));
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    })();
  }

  /** Statements are prepared once per SQL text: readers call these for every batch. */
  private stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  claimSession(sessionId: string, ownerNorm: string, nowMs: number): string {
    const recorded = this.stmt("SELECT owner_norm FROM sessions WHERE session_id = ?")
      .pluck(true)
      .get(sessionId) as string | undefined;
    if (recorded !== undefined) return recorded;
    // No owner yet, but runs while auth was off may have named one: the session is the first
    // such user's (their workspace and history are in it), not whoever comes first now.
    const earliest = this.stmt(
      `SELECT user_norm FROM runs WHERE session_id = ? AND user_norm <> ''
        ORDER BY created_at_ms, run_id LIMIT 1`,
    )
      .pluck(true)
      .get(sessionId) as string | undefined;
    const owner = earliest ?? ownerNorm;
    // Synchronous from the lookup on, so no other claim comes between.
    this.stmt("INSERT INTO sessions (session_id, owner_norm, claimed_at_ms) VALUES (?, ?, ?)").run(
      sessionId,
      owner,
      nowMs,
    );
    return owner;
  }

  pruneSessions(
    keep: (sessionId: string) => boolean,
    page: { after: string; limit: number } = { after: "", limit: -1 },
  ): { deleted: number; next: string | null } {
    let deleted = 0;
    let next: string | null = null;
    this.db.transaction(() => {
      const rows = this.stmt(
        `SELECT session_id, EXISTS (SELECT 1 FROM runs r WHERE r.session_id = s.session_id)
           FROM sessions s WHERE session_id > ? ORDER BY session_id LIMIT ?`,
      )
        .raw(true)
        .all(page.after, page.limit) as [string, number][];
      const del = this.stmt("DELETE FROM sessions WHERE session_id = ?");
      for (const [id, stored] of rows)
        if (stored === 0 && !keep(id)) deleted += del.run(id).changes;
      if (page.limit >= 0 && rows.length === page.limit) next = rows[rows.length - 1]?.[0] ?? null;
    })();
    return { deleted, next };
  }

  createRun(r: RunRecord): void {
    // The next run key: above every key in use, rows and events alike (both are index lookups),
    // so a new run never meets events of another.
    this.stmt(
      `INSERT INTO runs (run_id, user_id, user_norm, session_id, provider, policy_json, package_id,
           detached, prompt_preview, status, created_at_ms, started_at_ms, ended_at_ms, exit_reason,
           return_code, exit_message, succeeded, last_seq, event_bytes, run_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
           MAX(COALESCE((SELECT MAX(run_key) FROM runs), 0),
               COALESCE((SELECT MAX(id) >> 32 FROM event_chunks), 0)) + 1)`,
    ).run(
      r.runId,
      r.userId,
      normalizeUser(r.userId),
      r.sessionId,
      r.provider,
      JSON.stringify(r.policy),
      r.packageId,
      r.detached ? 1 : 0,
      r.promptPreview,
      r.status,
      r.createdAtMs,
      r.startedAtMs,
      r.endedAtMs,
      r.exitReason,
      r.returnCode,
      r.exitMessage,
      r.succeeded === null ? null : r.succeeded ? 1 : 0,
      r.lastSeq,
      r.eventBytes,
    );
    this.checkpointer.wrote(LOG_BYTES_PER_TX);
  }

  updateRun(runId: string, update: RunUpdate): void {
    const entries = Object.entries(update).filter(([, v]) => v !== undefined) as [
      keyof RunUpdate,
      unknown,
    ][];
    if (entries.length === 0) return;
    const sets = entries.map(([k]) => `${UPDATE_COLUMNS[k]} = ?`).join(", ");
    this.stmt(`UPDATE runs SET ${sets} WHERE run_id = ?`).run(
      ...entries.map(([, v]) => (typeof v === "boolean" ? (v ? 1 : 0) : v)),
      runId,
    );
    this.checkpointer.wrote(LOG_BYTES_PER_TX);
  }

  appendEvents(runId: string, events: readonly RunEvent[]): void {
    const bytes = this.appendTx(runId, events);
    this.checkpointer.wrote(bytes + LOG_BYTES_PER_EVENT * events.length + LOG_BYTES_PER_TX);
  }

  readEvents(runId: string, afterSeq: number, limit: number, viewer = true): RunEvent[] {
    // Once per batch of up to `limit` events (a viewer reads 256 at a time).
    if (viewer) this.lastReadMs.set(runId, this.now());
    const runKey = this.selectKey.get(runId) as number | undefined;
    const out: RunEvent[] = [];
    if (runKey === undefined || limit <= 0) return out;
    for (const [chunk] of this.selectChunks.iterate({
      key: runKey,
      from: afterSeq + 1,
    }) as IterableIterator<[string]>) {
      decodeChunk(runId, chunk, afterSeq, limit, out);
      if (out.length >= limit) break;
    }
    return out;
  }

  noteRead(runId: string): void {
    this.lastReadMs.set(runId, this.now());
  }

  getRun(runId: string): RunRecord | null {
    const row = this.stmt("SELECT * FROM runs WHERE run_id = ?").get(runId) as RunRow | undefined;
    return row ? fromRow(row) : null;
  }

  listRuns(q: RunQuery): RunRecord[] {
    const where = ["user_norm = ?"];
    const args: unknown[] = [q.userNorm];
    if (q.sessionId !== null) {
      where.push("session_id = ?");
      args.push(q.sessionId);
    }
    if (q.after) {
      where.push("(created_at_ms < ? OR (created_at_ms = ? AND run_id < ?))");
      args.push(q.after.createdAtMs, q.after.createdAtMs, q.after.runId);
    }
    const rows = this.stmt(
      `SELECT * FROM runs WHERE ${where.join(" AND ")} ORDER BY created_at_ms DESC, run_id DESC LIMIT ?`,
    ).all(...args, q.limit) as RunRow[];
    return rows.map(fromRow);
  }

  liveRuns(): RunRecord[] {
    const rows = this.stmt(
      "SELECT * FROM runs WHERE status IN ('queued', 'running')",
    ).all() as RunRow[];
    return rows.map(fromRow);
  }

  prune(opts: { endedBeforeMs: number; maxBytes: number; readSinceMs?: number }): number {
    const readSince = opts.readSinceMs ?? Number.POSITIVE_INFINITY;
    for (const [id, at] of this.lastReadMs) if (at < readSince) this.lastReadMs.delete(id);
    // A run read since `readSince` has a viewer reading it back: deleting it would cut that
    // stream short, so it waits for a later pass (its bytes still count towards the total).
    const beingRead = (id: string) => this.lastReadMs.has(id);
    const finished = "status = 'finished'";
    type Row = { run_id: string; event_bytes: number };
    const total =
      (this.stmt("SELECT SUM(event_bytes) AS b FROM runs").get() as { b: number | null }).b ?? 0;
    let excess = total - opts.maxBytes;
    const victims = new Set<string>();
    const aged = this.stmt(
      `SELECT run_id, event_bytes FROM runs WHERE ${finished} AND ended_at_ms < ?`,
    ).all(opts.endedBeforeMs) as Row[];
    for (const r of aged) {
      if (beingRead(r.run_id)) continue;
      victims.add(r.run_id);
      excess -= r.event_bytes;
    }
    if (excess > 0) {
      const oldest = this.stmt(
        `SELECT run_id, event_bytes FROM runs WHERE ${finished} ORDER BY ended_at_ms`,
      ).iterate() as IterableIterator<Row>;
      for (const r of oldest) {
        if (excess <= 0) break;
        if (victims.has(r.run_id) || beingRead(r.run_id)) continue;
        victims.add(r.run_id);
        excess -= r.event_bytes;
      }
    }
    const delEvents = this.stmt(
      `DELETE FROM event_chunks
        WHERE id >= ((SELECT run_key FROM runs WHERE run_id = @id) << 32)
          AND id < (((SELECT run_key FROM runs WHERE run_id = @id) + 1) << 32)`,
    );
    const delRun = this.stmt("DELETE FROM runs WHERE run_id = ?");
    this.db.transaction(() => {
      for (const id of victims) {
        delEvents.run({ id });
        delRun.run(id);
      }
    })();
    return victims.size;
  }

  /**
   * Close now (every later call fails); resolves once the checkpointer has
   * stopped. Its connection closes after this one, so it is the store's last:
   * it empties the log into the file as it closes, as this one did when it was
   * the only connection. (A process that exits before leaves the log to the
   * next runner; nothing is lost either way.)
   */
  close(): Promise<void> {
    clearInterval(this.lockTimer);
    const stopped = this.checkpointer.close();
    if (this.db.open) this.db.close();
    if (this.lock.open) this.lock.close();
    return stopped;
  }

  get isClosed(): boolean {
    return !this.db.open;
  }
}
