import type { RunEvent, RunEventBody } from "../events/run-event.js";
import { EventChannel } from "../fanout/event-channel.js";
import type { RunAborted } from "./run-abort.js";

/** How far a run has got; shutdown treats waiting and running runs differently. */
export type RunPhase = "admitting" | "preparing" | "running" | "finished";

/** Bytes a subscriber may lag behind before the producer (and so the provider) waits. */
const CHANNEL_MAX_BUFFERED_BYTES = 1024 * 1024;

/**
 * Per-run mutable state: the abort controller whose reason decides the exit
 * reason, the journal sequence, and the channel to the subscriber. The first
 * emitted event resolves `firstEvent`, which is when a transport commits to
 * streaming (before it, failures are plain errors with a status code).
 */
export class RunState {
  readonly controller = new AbortController();
  readonly channel: EventChannel<RunEvent>;
  phase: RunPhase = "admitting";
  /** Set when the provider exited: later aborts no longer change the exit reason. */
  processExited = false;
  private seq = 0;
  private resolveFirst!: () => void;
  private rejectFirst!: (err: unknown) => void;
  /** Settles when the first event is emitted, or rejects if the run fails before any. */
  readonly firstEvent: Promise<void>;

  constructor(
    readonly runId: string,
    readonly sessionId: string,
    private readonly now: () => number,
  ) {
    this.channel = new EventChannel<RunEvent>(CHANNEL_MAX_BUFFERED_BYTES, () =>
      this.onSubscriberGone(),
    );
    this.firstEvent = new Promise<void>((resolve, reject) => {
      this.resolveFirst = resolve;
      this.rejectFirst = reject;
    });
    // The rejection is observed by start(); this keeps Node from reporting it twice.
    this.firstEvent.catch(() => {});
  }

  /** Set by the pipeline: what a subscriber leaving means for this run. */
  onSubscriberGone: () => void = () => {};

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get emittedAny(): boolean {
    return this.seq > 0;
  }

  /** The abort that ended the run early, if any (first reason wins). */
  get abortReason(): RunAborted | null {
    return this.controller.signal.aborted ? (this.controller.signal.reason as RunAborted) : null;
  }

  abort(reason: RunAborted): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }

  /** Append one journal entry; waits while the subscriber lags (backpressure). */
  async emit(body: RunEventBody): Promise<void> {
    this.seq += 1;
    const event: RunEvent = { runId: this.runId, seq: this.seq, timeMs: this.now(), body };
    const bytes =
      body.type === "agent" ? body.raw.length : body.type === "log" ? body.text.length : 256;
    const pushed = this.channel.push(event, bytes);
    if (this.seq === 1) this.resolveFirst();
    await pushed;
  }

  /** The producer failed before emitting anything: the transport answers with an error status. */
  failBeforeFirstEvent(err: unknown): void {
    this.rejectFirst(err);
  }
}
