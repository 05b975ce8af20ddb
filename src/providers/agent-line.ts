/**
 * A provider's stdout line as the run's `agent` event. Its typed reading
 * (JSON.parse, then the adapter's normaliser) is left to the typed viewers
 * (Connect, gRPC): the journal gives the items to a line when such a viewer
 * reads it (`journal/rehydrate.ts`, as for lines read back from the store);
 * SSE viewers send the raw line and never need them. Only lines naming one
 * of the adapter's result event types are read at once, for the run's
 * outcome. Parsing every line cost the SSE face about a fifth of its CPU per
 * event, and V8 interns every short string value it parses (each line's own
 * item id), which grew a fresh runner's string table by megabytes over its
 * first large run.
 */
import {
  type AgentItem,
  type EarlierLines,
  NO_EARLIER_LINES,
  type RunEventBody,
} from "../events/run-event.js";
import type { ProviderAdapter } from "./provider-adapter.js";

type AgentBody = Extract<RunEventBody, { type: "agent" }>;

/** The adapter's reading of a line; a normaliser bug never loses the raw line, which always travels. */
export function readLine(
  adapter: ProviderAdapter,
  line: string,
  earlier: EarlierLines = NO_EARLIER_LINES,
): AgentItem[] {
  try {
    return adapter.normalize(line, earlier);
  } catch {
    return [];
  }
}

/**
 * The `agent` event body of a stdout line: items read now only when it may
 * hold a result. `earlier`: the run's lines before it.
 */
export function agentLineBody(
  adapter: ProviderAdapter,
  raw: string,
  truncated: boolean,
  earlier: EarlierLines = NO_EARLIER_LINES,
): AgentBody {
  const mayHoldResult = adapter.resultEventTypes.some((t) => raw.includes(t));
  const items = mayHoldResult ? readLine(adapter, raw, earlier) : [];
  return { type: "agent", raw, items, truncated };
}

/** The line's final-result reading (its last `result` item), or null. */
export function resultOf(body: AgentBody): boolean | null {
  let result: boolean | null = null;
  for (const item of body.items) if (item.kind === "result") result = item.success;
  return result;
}
