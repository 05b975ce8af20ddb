/**
 * A provider's stdout lines read in order, as the journal reads a run's: each
 * line with the lines before it as its `EarlierLines` (the same look-back
 * window), so a result finds its call.
 */
import type { AgentItem, EarlierLines, RunEvent } from "../../src/events/run-event.js";
import { LOOK_BACK_LINES, newBudget, searchEvents } from "../../src/journal/earlier-lines.js";

type Normalize = (line: string, earlier?: EarlierLines) => AgentItem[];

/** One array of items per line. */
export function readLines(normalize: Normalize, lines: readonly string[]): AgentItem[][] {
  const events: RunEvent[] = [];
  return lines.map((raw, i) => {
    const from = Math.max(0, i - LOOK_BACK_LINES);
    const items = normalize(raw, (needle, pick) =>
      searchEvents(events, needle, pick, newBudget(), from, i),
    );
    events.push({
      runId: "r",
      seq: i + 1,
      timeMs: 0,
      body: { type: "agent", raw, items: [], truncated: false },
    });
    return items;
  });
}
