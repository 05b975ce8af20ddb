import type { RunEvent, RunEventBody } from "../events/run-event.js";
import { type LineReader, readBack, rehydrate } from "./rehydrate.js";
import type { RunRecord, RunStore, RunUpdate } from "./run-store.js";

/** Limits of one run's in-memory tail and write batching. */
export interface JournalLimits {
  /** Bytes of recent events kept in memory for live viewers (older ones are read from the store). */
  tailBytes: number;
  /** Write pending events at least this often. */
  flushIntervalMs: number;
  /** Write at once when this many events are pending. */
  flushMaxEvents: number;
}

export const DEFAULT_JOURNAL_LIMITS: JournalLimits = {
  tailBytes: 512 * 1024,
  flushIntervalMs: 25,
  flushMaxEvents: 512,
};

function sizeOf(body: RunEventBody): number {
  if (body.type === "agent") return body.raw.length + 64;
  if (body.type === "log") return body.text.length + 64;
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
 */
export class RunJournal {
  private seq = 0;
  /** Recent events; `tail[tailHead]` is the oldest kept (a moving head avoids O(n) shifts). */
  private tail: RunEvent[] = [];
  private tailHead = 0;
  private tailBytes = 0;
  private pending: RunEvent[] = [];
  private flushedSeq = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private waiters: (() => void)[] = [];
  private created = false;
  private ended = false;

  private readonly readLine: LineReader;
  private readonly limits: JournalLimits;
  private readonly onReadBack: (events: number) => void;

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
    } = {},
  ) {
    this.readLine = opts.readLine ?? (() => []);
    this.limits = opts.limits ?? DEFAULT_JOURNAL_LIMITS;
    this.onReadBack = opts.onReadBack ?? (() => {});
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

  /** Append one event. The run's row is created with the first one (a run refused earlier leaves nothing). */
  append(body: RunEventBody): RunEvent {
    if (this.ended) throw new Error(`journal of run ${this.runId} has ended`);
    const event: RunEvent = { runId: this.runId, seq: this.seq + 1, timeMs: this.now(), body };
    const update = statusChange(event);
    if (update) {
      // The run's row (with its first event), what is pending, this event and the status it
      // brings: one transaction, as a burst of run starts fills the store's log and each
      // checkpoint of it stops the event loop for an fsync.
      const batch = [...this.pending, event];
      this.store.atomically(() => {
        if (!this.created) this.store.createRun(this.record);
        this.store.appendEvents(this.runId, batch);
        this.store.updateRun(this.runId, update);
      });
      this.created = true;
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
      this.pending = [];
      this.flushedSeq = event.seq;
    } else {
      if (!this.created) {
        this.store.createRun(this.record);
        this.created = true;
      }
      this.pending.push(event);
      if (this.pending.length >= this.limits.flushMaxEvents) this.flush();
      else this.flushTimer ??= setTimeout(() => this.flush(), this.limits.flushIntervalMs);
    }
    this.seq = event.seq;
    this.tail.push(event);
    this.tailBytes += sizeOf(body);
    this.evict();
    for (const w of this.waiters.splice(0)) w();
    return event;
  }

  /** No more events: write what is pending and release every waiting viewer. */
  end(): void {
    if (this.ended) return;
    this.flush();
    this.ended = true;
    for (const w of this.waiters.splice(0)) w();
  }

  /**
   * Up to `max` events after `afterSeq`: from memory when the tail still has
   * them, else from the store; agent lines get their typed items (read once,
   * then kept on the event) only when `typedItems`.
   */
  read(afterSeq: number, max: number, typedItems = true): RunEvent[] {
    const first = this.tail[this.tailHead];
    if (first && afterSeq + 1 >= first.seq) {
      const start = this.tailHead + afterSeq + 1 - first.seq;
      const events = this.tail.slice(start, start + max);
      // Live lines carry no items until a typed viewer reads them (providers/agent-line.ts).
      return typedItems ? rehydrate(events, this.readLine) : events;
    }
    if (afterSeq >= this.seq) return [];
    // Evicted events were flushed before eviction, so the store has them.
    const events = readBack(
      this.store,
      this.runId,
      afterSeq,
      max,
      typedItems ? this.readLine : null,
    );
    this.onReadBack(events.length);
    return events;
  }

  /** Resolves when an event after `afterSeq` exists or the journal ended. */
  waitForMore(afterSeq: number): Promise<void> {
    if (afterSeq < this.seq || this.ended) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.store.appendEvents(this.runId, batch);
    this.flushedSeq = batch[batch.length - 1]?.seq ?? this.flushedSeq;
  }

  /**
   * Drop the oldest tail events beyond the byte budget, but only ones already
   * written (the store must have anything the tail forgets). Unwritten events
   * stay until the next batch, so the tail exceeds its budget by at most one batch.
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
