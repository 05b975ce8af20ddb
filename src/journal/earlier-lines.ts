/**
 * The search behind `EarlierLines`: a run's lines before a given one, newest
 * first, within the `LOOK_BACK_LINES` events before it and `LOOK_BACK_CHARS`
 * of their text. Both bounds count the same events in the same order wherever
 * they are (the journal's tail or the store), so a line reads the same for
 * every viewer; the second bounds the work and memory of one search however
 * large the lines are (the store is read a page at a time).
 */
import type { RunEvent } from "../events/run-event.js";
import type { RunStore } from "./run-store.js";

/** How many events before a line are searched. */
export const LOOK_BACK_LINES = 256;

/** How many characters of earlier lines one search may look at. */
export const LOOK_BACK_CHARS = 4 * 1024 * 1024;

/** Events read from the store at a time. */
const STORE_PAGE = 16;

/** What one search has left to look at. */
export interface LookBackBudget {
  chars: number;
}

export const newBudget = (): LookBackBudget => ({ chars: LOOK_BACK_CHARS });

/**
 * Newest first over `events[from, to)` (ascending, all before the line):
 * the first agent line holding `needle` that `pick` reads as non-null.
 * Stops, with null, once `budget` is spent.
 */
export function searchEvents<T>(
  events: readonly RunEvent[],
  needle: string,
  pick: (raw: string) => T | null,
  budget: LookBackBudget,
  from = 0,
  to = events.length,
): T | null {
  for (let i = to - 1; i >= from && budget.chars > 0; i--) {
    const body = (events[i] as RunEvent).body;
    if (body.type !== "agent") continue;
    budget.chars -= body.raw.length;
    if (!body.raw.includes(needle)) continue;
    const found = pick(body.raw);
    if (found !== null) return found;
  }
  return null;
}

/**
 * The same over the stored events with seq in `[lo, hi]`, newest first, a
 * page at a time. A store error reads as no events (a look-back never fails
 * the reading of a line), and the read is the runner's own: retention is
 * not told of it.
 */
export function searchStored<T>(
  store: RunStore,
  runId: string,
  lo: number,
  hi: number,
  needle: string,
  pick: (raw: string) => T | null,
  budget: LookBackBudget,
): T | null {
  for (let top = hi; top >= lo && budget.chars > 0; top -= STORE_PAGE) {
    const first = Math.max(lo, top - STORE_PAGE + 1);
    let page: RunEvent[];
    try {
      page = store.readEvents(runId, first - 1, top - first + 1, false);
    } catch {
      page = [];
    }
    const found = searchEvents(page, needle, pick, budget);
    if (found !== null) return found;
  }
  return null;
}
