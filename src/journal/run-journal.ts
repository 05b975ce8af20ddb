import type { RunEvent, RunEventBody } from "../events/run-event.js";
import { LOOK_BACK_LINES, newBudget, searchEvents, searchStored } from "./earlier-lines.js";
import { type LineHistory, type LineReader, readBack, rehydrate } from "./rehydrate.js";
import type { RunRecord, RunStore, RunUpdate } from "./run-store.js";

/** Limits of one run's in-memory tail and write batching. */
export interface JournalLimits {
  /**
   * Bytes of recent events kept in memory for live viewers (older ones are read from the
   * store), as V8 holds their text: 1 byte a character for Latin-1 text, else 2.
   */
  tailBytes: number;
  /** Write pending events at least this often. */
  flushIntervalMs: number;
  /** Write at once when this many events are pending. */
  flushMaxEvents: number;
}

/**
 * The journal's promise to crash recovery: while a run is live, no viewer is
 * shown an event whose seq is more than this beyond the run's `lastSeq` in the
 * store. Writes go in batches of at most `flushMaxEvents` (which may not exceed
 * this), so normally at most `flushMaxEvents - 1` shown events are unwritten;
 * while the store refuses writes, `read` holds viewers at this bound. Recovery
 * after a crash (`recover-interrupted.ts`) numbers the `interrupted` exit past it,
 * so a viewer resuming from anything it was shown still gets the exit, and no
 * seq ever names two different events (the price: a gap in seq before that exit).
 */
export const MAX_UNSTORED_SHOWN = 512;

export const DEFAULT_JOURNAL_LIMITS: JournalLimits = {
  tailBytes: 512 * 1024,
  flushIntervalMs: 25,
  flushMaxEvents: MAX_UNSTORED_SHOWN,
};

/** Longest wait between retries of a write the store refused. */
const MAX_RETRY_MS = 1000;

/** A UTF-16 unit beyond Latin-1: V8 then keeps the whole string at 2 bytes a character. */
const TWO_BYTE = /[\u0100-\uffff]/;

/**
 * Bytes a line takes in memory: V8 keeps a string of Latin-1 characters at 1
 * byte each, any other at 2 bytes per UTF-16 unit (`length` alone counted a
 * CJK or emoji line at half its size). The test is ~12 ns whatever the
 * line's length for a one-byte string (irregexp rejects at once a class no
 * Latin-1 character is in), ~50 ns for a two-byte one, where
 * `Buffer.byteLength` costs 25-130 ns and counts a CJK character as 3.
 */
function textBytes(s: string): number {
  return TWO_BYTE.test(s) ? 2 * s.length : s.length;
}

/** What an event is counted against the tail's byte budget. */
function sizeOf(body: RunEventBody): number {
  if (body.type === "agent") return textBytes(body.raw) + 64;
  if (body.type === "log") return textBytes(body.text) + 64;
  return 512;
}

/** The run's row as `event` changes it: running from `meta`, finished at `exit`. */
function statusChange(event: RunEvent): RunUpdate | null {
  const body = event.body;
  if (body.type === "meta") {
    return {
      status: "running",
      startedAtMs: event.timeMs,
      packageId: body.package?.package_id ?? null,
    };
  }
  if (body.type === "exit") {
    return {
      status: "finished",
      endedAtMs: event.timeMs,
      exitReason: body.reason,
      returnCode: body.returnCode,
      exitMessage: body.message,
      succeeded: body.succeeded,
    };
  }
  return null;
}

/**
 * One run's journal: every event gets the next `seq` and is written to the
 * store in batches; a bounded tail of recent events stays in memory so live
 * viewers rarely touch the store. Appending never waits for a viewer (a slow
 * or paused viewer only moves its own cursor), so the provider is never held
 * up and memory stays flat: the store is the buffer.
 *
 * A store that refuses a write (disk full, I/O error) never costs an event:
 * appending goes on (seq and tail as always), what is unwritten stays pending
 * and in the tail (never evicted) and is written again on a timer until the
 * store takes it, and `onWriteError` is told once, so the run can be ended.
 */
export class RunJournal {
  private seq = 0;
  /** Recent events; `tail[tailHead]` is the oldest kept (a moving head avoids O(n) shifts). */
  private tail: RunEvent[] = [];
  private tailHead = 0;
  private tailBytes = 0;
  /** Events not yet written: exactly those with seq in (flushedSeq, seq]. */
  private pending: RunEvent[] = [];
  /** Seq of the last event the store has (advanced only by a write that succeeded). */
  private flushedSeq = 0;
  /** The run's row changes not yet written (meta's and exit's, merged), written with `pending`. */
  private pendingUpdate: RunUpdate | null = null;
  private flushTimer: NodeJS.Timeout | undefined;
  private waiters: (() => void)[] = [];
  private created = false;
  private ended = false;
  /** Pending size that writes at once: `flushMaxEvents`, or never while the store refuses (the retry timer writes). */
  private flushAt: number;
  /** Delay of the next retry of a refused write; 0 while writes succeed. */
  private retryMs = 0;
  private writeErrorReported = false;
  /** Viewers following this journal now (`followRunBatches`). */
  private followers = 0;
  /** Told once the journal ended and the store took its every write (`whenWritten`). */
  private onWritten: (() => void) | undefined;

  private readonly readLine: LineReader;
  private readonly limits: JournalLimits;
  private readonly onReadBack: (events: number) => void;
  private readonly onWriteError: (err: unknown) => void;
  private readonly onFlushTimer = () => this.flush();

  constructor(
    private readonly record: RunRecord,
    private readonly store: RunStore,
    private readonly now: () => number,
    opts: {
      /** Re-derives typed items for lines read back from the store. */
      readLine?: LineReader;
      limits?: JournalLimits;
      /** Told how many events a viewer behind the tail read from the store. */
      onReadBack?: (events: number) => void;
      /**
       * Told (once, never inside `append`) that the store refused a write. The
       * journal keeps every event and retries; the run should end.
       */
      onWriteError?: (err: unknown) => void;
    } = {},
  ) {
    this.readLine = opts.readLine ?? (() => []);
    this.limits = opts.limits ?? DEFAULT_JOURNAL_LIMITS;
    this.onReadBack = opts.onReadBack ?? (() => {});
    this.onWriteError = opts.onWriteError ?? (() => {});
    if (!(this.limits.flushMaxEvents >= 1 && this.limits.flushMaxEvents <= MAX_UNSTORED_SHOWN)) {
      throw new Error(
        `flushMaxEvents must be 1-${MAX_UNSTORED_SHOWN} (crash recovery relies on it), not ${this.limits.flushMaxEvents}`,
      );
    }
    this.flushAt = this.limits.flushMaxEvents;
  }

  get runId(): string {
    return this.record.runId;
  }

  get lastSeq(): number {
    return this.seq;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** The store has the run's row (its first write was taken). */
  get hasRow(): boolean {
    return this.created;
  }

  /** Ended, and the store has every event and the run's final row. */
  get isWritten(): boolean {
    return this.ended && this.pending.length === 0 && this.pendingUpdate === null;
  }

  /**
   * Resolves once `isWritten`: a run that ended while the store refused its
   * writes is only complete in this journal until then.
   */
  whenWritten(): Promise<void> {
    if (this.isWritten) return Promise.resolve();
    return new Promise((resolve) => {
      const before = this.onWritten;
      this.onWritten = () => {
        before?.();
        resolve();
      };
    });
  }

  /**
   * The run's row as the store will have it once it took every write: `stored`
   * (null while even the row is unwritten) with the status changes still
   * pending, and the last seq appended.
   */
  recordWithPending(stored: RunRecord | null): RunRecord {
    return { ...(stored ?? this.record), ...this.pendingUpdate, lastSeq: this.seq };
  }

  /**
   * The run's lines before the event at `seq` (`EarlierLines`): from the
   * tail, then from the store for what the tail no longer holds (evicted
   * events were written first).
   */
  readonly history: LineHistory = (seq, needle, pick) => {
    const lo = Math.max(1, seq - LOOK_BACK_LINES);
    const budget = newBudget();
    // An empty tail: every event so far was evicted, so written.
    const firstSeq = this.tail[this.tailHead]?.seq ?? this.seq + 1;
    const fromTail = Math.max(lo, firstSeq);
    if (fromTail < seq) {
      const at = (s: number) => this.tailHead + s - firstSeq;
      const found = searchEvents(this.tail, needle, pick, budget, at(fromTail), at(seq));
      if (found !== null) return found;
    }
    const hi = Math.min(seq, firstSeq) - 1;
    return searchStored(this.store, this.runId, lo, hi, needle, pick, budget);
  };

  /**
   * Append one event; it never throws for the store. The run's row is created
   * with the first one (a run refused earlier leaves nothing).
   */
  append(body: RunEventBody): RunEvent {
    if (this.ended) throw new Error(`journal of run ${this.runId} has ended`);
    const event: RunEvent = { runId: this.runId, seq: this.seq + 1, timeMs: this.now(), body };
    this.seq = event.seq;
    this.tail.push(event);
    this.tailBytes += sizeOf(body);
    this.pending.push(event);
    const update = statusChange(event);
    if (update) {
      // The run's row (with its first event), what is pending, this event and the status it
      // brings: one transaction, as a burst of run starts fills the store's log and each
      // checkpoint of it stops the event loop for an fsync.
      this.pendingUpdate = this.pendingUpdate ? { ...this.pendingUpdate, ...update } : update;
      this.flush();
    } else {
      if (!this.created) this.createRow();
      if (this.pending.length >= this.flushAt) this.flush();
      else this.flushTimer ??= setTimeout(this.onFlushTimer, this.limits.flushIntervalMs);
    }
    this.evict();
    this.wakeWaiters();
    return event;
  }

  /** No more events: write what is pending (or keep retrying) and release every waiting viewer. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.flush();
    // A viewer still following now fell behind (one that kept up has read the exit and left):
    // it read the tail from memory until now, and what it has not read may be only in the
    // store, which retention must leave to it as to a viewer reading back (READ_GRACE_MS).
    if (this.followers > 0) this.store.noteRead(this.runId);
    this.wakeWaiters();
    if (this.isWritten) this.written();
  }

  /** RunEventSource: a viewer started (+1) or stopped (-1) following. */
  follow(delta: 1 | -1): void {
    this.followers += delta;
  }

  /**
   * Up to `max` events after `afterSeq`: from memory when the tail still has
   * them, else from the store; agent lines get their typed items (read once,
   * then kept on the event) only when `typedItems`.
   */
  read(afterSeq: number, max: number, typedItems = true): RunEvent[] {
    const shown = this.shownSeq();
    if (afterSeq >= shown) return [];
    const count = Math.min(max, shown - afterSeq);
    const first = this.tail[this.tailHead];
    if (first && afterSeq + 1 >= first.seq) {
      const start = this.tailHead + afterSeq + 1 - first.seq;
      const events = this.tail.slice(start, start + count);
      // Live lines carry no items until a typed viewer reads them (providers/agent-line.ts).
      return typedItems ? rehydrate(events, this.readLine, this.history) : events;
    }
    // Evicted events were flushed before eviction, so the store has them.
    const events = readBack(
      this.store,
      this.runId,
      afterSeq,
      count,
      typedItems ? this.readLine : null,
    );
    this.onReadBack(events.length);
    return events;
  }

  /**
   * Resolves when an event after `afterSeq` can be read, the journal ended, or
   * `signal` aborted (a viewer that left: its wait is dropped at once, not
   * kept until the run's next event).
   */
  waitForMore(afterSeq: number, signal?: AbortSignal): Promise<void> {
    if (afterSeq < this.shownSeq() || this.ended || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      if (signal === undefined) {
        this.waiters.push(resolve);
        return;
      }
      const wake = () => {
        signal.removeEventListener("abort", leave);
        resolve();
      };
      const leave = () => {
        const i = this.waiters.indexOf(wake);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve();
      };
      signal.addEventListener("abort", leave, { once: true });
      this.waiters.push(wake);
    });
  }

  /** Viewers waiting for more (tests: one that left is not among them). */
  get waitingViewers(): number {
    return this.waiters.length;
  }

  private wakeWaiters(): void {
    if (this.waiters.length === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /**
   * The last seq a viewer may read (MAX_UNSTORED_SHOWN): while writes succeed
   * that is every event, as at most `flushMaxEvents - 1` are unwritten. Once
   * the journal ended every event is shown, the final exit included, even if
   * the store still refuses them (it is retried; see README, restart safety).
   */
  private shownSeq(): number {
    return this.ended ? this.seq : Math.min(this.seq, this.flushedSeq + this.limits.flushMaxEvents);
  }

  /** The run's row for a first event that changes no status (its own commit, as GetRun of a queued run needs it). */
  private createRow(): void {
    try {
      this.store.createRun(this.record);
      this.created = true;
    } catch (err) {
      this.writeFailed(err);
    }
  }

  /**
   * Write what is pending: events alone in one `appendEvents` (the fast path),
   * or with the row's creation and status change in one transaction. A write
   * the store refuses leaves everything pending, to be retried.
   */
  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const batch = this.pending;
    const last = batch[batch.length - 1];
    const update = this.pendingUpdate;
    if (last === undefined && update === null) return;
    try {
      if (this.created && update === null) {
        this.store.appendEvents(this.runId, batch);
      } else {
        this.store.atomically(() => {
          if (!this.created) this.store.createRun(this.record);
          if (last !== undefined) this.store.appendEvents(this.runId, batch);
          if (update !== null) this.store.updateRun(this.runId, update);
        });
        this.created = true;
        this.pendingUpdate = null;
      }
    } catch (err) {
      this.writeFailed(err);
      return;
    }
    this.pending = [];
    if (last !== undefined) this.flushedSeq = last.seq;
    if (this.retryMs !== 0) this.writesResumed();
    if (this.ended) this.written();
  }

  private written(): void {
    const told = this.onWritten;
    this.onWritten = undefined;
    told?.();
  }

  /** The store refused a write: keep everything, retry on a timer, tell the run once. */
  private writeFailed(err: unknown): void {
    this.flushAt = Number.POSITIVE_INFINITY;
    this.retryMs =
      this.retryMs === 0 ? this.limits.flushIntervalMs : Math.min(this.retryMs * 2, MAX_RETRY_MS);
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    // Unref'd: a store that stays broken must not keep a stopping process alive. None for a
    // closed store (the runner stopped): it never takes them, and retrying would keep a timer
    // and this journal alive for as long as the process lives.
    if (!this.store.isClosed) this.flushTimer = setTimeout(this.onFlushTimer, this.retryMs).unref();
    if (this.writeErrorReported) return;
    this.writeErrorReported = true;
    // Never inside append: the callback may end the run, which appends.
    queueMicrotask(() => {
      try {
        this.onWriteError(err);
      } catch {
        // The journal's own state is consistent; a failing callback changes nothing here.
      }
    });
  }

  /** A retried write succeeded: back to batching, and viewers held at the bound may go on. */
  private writesResumed(): void {
    this.retryMs = 0;
    this.flushAt = this.limits.flushMaxEvents;
    this.evict();
    this.wakeWaiters();
  }

  /**
   * Drop the oldest tail events beyond the byte budget, but only ones already
   * written (the store must have anything the tail forgets). Unwritten events
   * stay until the next batch, so the tail exceeds its budget by at most one
   * batch (more only while the store refuses writes).
   */
  private evict(): void {
    if (this.tailBytes <= this.limits.tailBytes) return;
    while (this.tailBytes > this.limits.tailBytes && this.tail.length - this.tailHead > 1) {
      const old = this.tail[this.tailHead];
      if (!old || old.seq > this.flushedSeq) break;
      this.tailHead += 1;
      this.tailBytes -= sizeOf(old.body);
    }
    if (this.tailHead > 1024 && this.tailHead * 2 > this.tail.length) {
      this.tail = this.tail.slice(this.tailHead);
      this.tailHead = 0;
    }
  }
}
