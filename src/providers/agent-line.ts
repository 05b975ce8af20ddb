/**
 * A provider's stdout line as the run's `agent` event. Its typed reading
 * (JSON.parse, then the adapter's normaliser) is made when first asked for:
 * typed viewers (Connect, gRPC) ask when they encode the event, SSE viewers
 * send the raw line and never do. Parsing every line cost the SSE face about
 * a fifth of its CPU per event, and V8 interns every short string value it
 * parses (each line's own item id), which grew a fresh runner's string table
 * by megabytes over its first large run.
 */
import type { AgentItem, RunEventBody } from "../events/run-event.js";
import type { ProviderAdapter } from "./provider-adapter.js";

/** The adapter's reading of a line; a normaliser bug never loses the raw line, which always travels. */
export function readLine(adapter: ProviderAdapter, line: string): AgentItem[] {
  try {
    return adapter.normalize(line);
  } catch {
    return [];
  }
}

/** The `agent` event body of a stdout line, its items read on first use (and kept). */
export function agentLineBody(
  adapter: ProviderAdapter,
  raw: string,
  truncated: boolean,
): Extract<RunEventBody, { type: "agent" }> {
  let items: AgentItem[] | undefined;
  return {
    type: "agent",
    raw,
    truncated,
    get items(): AgentItem[] {
      items ??= readLine(adapter, raw);
      return items;
    },
    set items(value: AgentItem[]) {
      items = value;
    },
  };
}

/**
 * The line's final-result reading, if it has one: the last `result` item.
 * Only lines naming one of the adapter's result event types are read.
 */
export function resultOf(
  adapter: ProviderAdapter,
  body: Extract<RunEventBody, { type: "agent" }>,
): boolean | null {
  if (!adapter.resultEventTypes.some((t) => body.raw.includes(t))) return null;
  let result: boolean | null = null;
  for (const item of body.items) if (item.kind === "result") result = item.success;
  return result;
}
