import type { AgentItem, RunEvent } from "../events/run-event.js";
import type { RunStore } from "./run-store.js";

/** Reads a provider line into typed items (a provider adapter's `normalize`). */
export type LineReader = (raw: string) => AgentItem[];

/**
 * Give agent events read from the store their typed items again (the store
 * keeps only the raw line). A reader that throws yields no items: the raw
 * line always travels.
 */
export function rehydrate(events: RunEvent[], read: LineReader): RunEvent[] {
  for (const e of events) {
    if (e.body.type === "agent" && e.body.items.length === 0) {
      try {
        e.body.items = read(e.body.raw);
      } catch {
        e.body.items = [];
      }
    }
  }
  return events;
}

/**
 * Up to `max` stored events of a run after `afterSeq`, their typed items
 * re-derived by `read`, or left empty when `read` is null (a viewer that
 * sends raw lines only).
 */
export function readBack(
  store: RunStore,
  runId: string,
  afterSeq: number,
  max: number,
  read: LineReader | null,
): RunEvent[] {
  const events = store.readEvents(runId, afterSeq, max);
  return read ? rehydrate(events, read) : events;
}
