import { RunnerError } from "../errors/runner-error.js";
import type { AgentItem, EarlierLines, RunEvent } from "../events/run-event.js";
import { LOOK_BACK_LINES, newBudget, searchStored } from "./earlier-lines.js";
import type { RunStore } from "./run-store.js";

/** Reads a provider line into typed items (a provider adapter's `normalize`). */
export type LineReader = (raw: string, earlier: EarlierLines) => AgentItem[];

/** `EarlierLines` for the event at `seq`: the run's lines before it. */
export type LineHistory = <T>(
  seq: number,
  needle: string,
  pick: (raw: string) => T | null,
) => T | null;

/**
 * Give agent events their typed items (live lines get them when a typed
 * viewer first reads them; the store keeps only the raw line). A reader that
 * throws yields no items: the raw line always travels.
 */
export function rehydrate(events: RunEvent[], read: LineReader, history: LineHistory): RunEvent[] {
  // One function for the batch, not one per line: most readers never call it.
  let seq = 0;
  const earlier: EarlierLines = (needle, pick) => history(seq, needle, pick);
  for (const e of events) {
    if (e.body.type === "agent" && e.body.items.length === 0) {
      seq = e.seq;
      try {
        e.body.items = read(e.body.raw, earlier);
      } catch {
        e.body.items = [];
      }
    }
  }
  return events;
}

/** A stored run's lines before a seq: read from the store only when a reader asks. */
export function storedHistory(store: RunStore, runId: string): LineHistory {
  return (seq, needle, pick) =>
    searchStored(
      store,
      runId,
      Math.max(1, seq - LOOK_BACK_LINES),
      seq - 1,
      needle,
      pick,
      newBudget(),
    );
}

/**
 * Up to `max` stored events of a run after `afterSeq`, their typed items
 * re-derived by `read`, or left empty when `read` is null (a viewer that
 * sends raw lines only).
 *
 * Throws RUN_NOT_FOUND when the run is no longer in the store (retention
 * deleted it while a viewer was reading it back): fewer events than asked for
 * would otherwise end the viewer's stream as if it were complete, without its
 * exit. Only a short read costs the extra look-up: the end of a run, once or
 * twice per viewer.
 */
export function readBack(
  store: RunStore,
  runId: string,
  afterSeq: number,
  max: number,
  read: LineReader | null,
): RunEvent[] {
  const events = store.readEvents(runId, afterSeq, max);
  if (events.length < max && store.getRun(runId) === null) throw deletedWhileRead(runId, afterSeq);
  return read ? rehydrate(events, read, storedHistory(store, runId)) : events;
}

/** The run's events after `afterSeq` were deleted by retention under a viewer reading them. */
export function deletedWhileRead(runId: string, afterSeq: number): RunnerError {
  return new RunnerError(
    "RUN_NOT_FOUND",
    `Run ${runId} was deleted by retention while it was being read (after event ${afterSeq}); the stream is incomplete.`,
  );
}
