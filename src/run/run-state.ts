import type { RunEventBody } from "../events/run-event.js";
import type { RunJournal } from "../journal/run-journal.js";
import type { RunAborted } from "./run-abort.js";

/** How far a run has got; shutdown treats waiting and running runs differently. */
export type RunPhase = "admitting" | "preparing" | "running" | "finished";

/**
 * Per-run mutable state: the abort controller whose reason decides the exit
 * reason, and the run's journal. The first event resolves `firstEvent`,
 * which is when a transport commits to streaming (before it, failures are
 * plain errors with a status code).
 */
export class RunState {
  readonly controller = new AbortController();
  phase: RunPhase = "admitting";
  /** Set when the provider exited: later aborts no longer change the exit reason. */
  processExited = false;
  private resolveFirst!: () => void;
  private rejectFirst!: (err: unknown) => void;
  /** Settles when the first event is emitted, or rejects if the run fails before any. */
  readonly firstEvent: Promise<void>;

  constructor(
    readonly journal: RunJournal,
    readonly sessionId: string,
    readonly userId: string | null,
  ) {
    this.firstEvent = new Promise<void>((resolve, reject) => {
      this.resolveFirst = resolve;
      this.rejectFirst = reject;
    });
    // The rejection is observed by start(); this keeps Node from reporting it twice.
    this.firstEvent.catch(() => {});
  }

  get runId(): string {
    return this.journal.runId;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get emittedAny(): boolean {
    return this.journal.lastSeq > 0;
  }

  /** The abort that ended the run early, if any (first reason wins). */
  get abortReason(): RunAborted | null {
    return this.controller.signal.aborted ? (this.controller.signal.reason as RunAborted) : null;
  }

  abort(reason: RunAborted): void {
    if (!this.controller.signal.aborted && !this.processExited) this.controller.abort(reason);
  }

  /** Append one journal entry. It never waits for a viewer: the journal is the buffer. */
  emit(body: RunEventBody): void {
    const event = this.journal.append(body);
    if (event.seq === 1) this.resolveFirst();
  }

  /** The producer failed before emitting anything: the transport answers with an error status. */
  failBeforeFirstEvent(err: unknown): void {
    this.rejectFirst(err);
  }
}
