import type { RunEvent } from "../events/run-event.js";

/** What a viewer reads a run from: a live journal or a finished run in the store. */
export interface RunEventSource {
  /**
   * Up to `max` events after `afterSeq`, ascending. With `typedItems` false,
   * agent events read back from the store may come without their typed items
   * (re-deriving them is most of a read-back's cost, and the SSE face sends
   * only the raw line).
   */
  read(afterSeq: number, max: number, typedItems: boolean): RunEvent[];
  /** Resolves when there may be more after `afterSeq`, the run ended, or `signal` aborted. */
  waitForMore(afterSeq: number, signal?: AbortSignal): Promise<void>;
  /** No event will be added any more. */
  readonly isEnded: boolean;
  /**
   * Told when a viewer starts (+1) and stops (-1) following: a live run's
   * viewers read its tail from memory, which the store does not see.
   */
  follow?(delta: 1 | -1): void;
}

/** Events read per step: small enough to keep a viewer's memory flat, big enough to be cheap. */
const READ_BATCH = 256;

/**
 * A viewer of one run: replays every event after `afterSeq`, then follows
 * live ones until the run's journal ends, in batches of what is available
 * (a transport can write a batch at once). The viewer holds only a cursor, so
 * however slowly it is consumed nothing piles up in memory and the producer
 * never waits for it. Each event is yielded exactly once, in `seq` order.
 */
export async function* followRunBatches(
  source: RunEventSource,
  afterSeq: number,
  typedItems = true,
  /** The viewer left: the follow ends at once, even while the run is quiet. */
  signal?: AbortSignal,
): AsyncGenerator<readonly RunEvent[]> {
  let cursor = afterSeq;
  source.follow?.(1);
  try {
    for (;;) {
      if (signal?.aborted) return;
      const batch = source.read(cursor, READ_BATCH, typedItems);
      if (batch.length === 0) {
        if (source.isEnded) return;
        await source.waitForMore(cursor, signal);
        continue;
      }
      const last = batch[batch.length - 1];
      cursor = last?.seq ?? cursor;
      yield batch;
      // The exit is a run's last event: nothing is left to read (reading again could only find
      // the run deleted by retention meanwhile, and report a complete stream as incomplete).
      if (last?.body.type === "exit") return;
    }
  } finally {
    source.follow?.(-1);
  }
}

/** `followRunBatches`, one event at a time. */
export async function* followRun(
  source: RunEventSource,
  afterSeq: number,
): AsyncGenerator<RunEvent> {
  for await (const batch of followRunBatches(source, afterSeq)) yield* batch;
}
