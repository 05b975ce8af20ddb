import { describe, expect, it } from "vitest";
import type { AgentItem } from "../../../src/events/run-event.js";
import { agentLineBody, resultOf } from "../../../src/providers/agent-line.js";
import type { ProviderAdapter } from "../../../src/providers/provider-adapter.js";
import { getProviderAdapter } from "../../../src/providers/registry.js";

/** The codex adapter, counting the lines it reads. */
function countingCodex() {
  const codex = getProviderAdapter("codex");
  const counted = { reads: 0 };
  const adapter: ProviderAdapter = {
    ...codex,
    normalize: (line) => {
      counted.reads++;
      return codex.normalize(line);
    },
  };
  return { adapter, counted };
}

const MESSAGE = JSON.stringify({
  type: "item.completed",
  item: { id: "item_1", type: "agent_message", text: "turn left" },
});
const COMPLETED = JSON.stringify({ type: "turn.completed", usage: { input_tokens: 1 } });
const FAILED = JSON.stringify({ type: "turn.failed", error: { message: "quota" } });

describe("agent line bodies", () => {
  it("read the line only when the items are first asked for, once", () => {
    const { adapter, counted } = countingCodex();
    const body = agentLineBody(adapter, MESSAGE, false);
    expect(body.raw).toBe(MESSAGE);
    expect(counted.reads).toBe(0);
    const items: AgentItem[] = [{ kind: "message", text: "turn left", delta: false }];
    expect(body.items).toEqual(items);
    expect(body.items).toBe(body.items);
    expect(counted.reads).toBe(1);
    // A plain event body to everything else: compared, serialised and reassigned like one.
    expect(body).toEqual({ type: "agent", raw: MESSAGE, items, truncated: false });
    expect(JSON.parse(JSON.stringify(body))).toEqual({
      type: "agent",
      raw: MESSAGE,
      truncated: false,
      items,
    });
    body.items = [];
    expect(body.items).toEqual([]);
  });

  it("give a run's outcome from the lines naming a result event type, reading no other", () => {
    const { adapter, counted } = countingCodex();
    expect(resultOf(adapter, agentLineBody(adapter, MESSAGE, false))).toBeNull();
    expect(counted.reads).toBe(0);
    expect(resultOf(adapter, agentLineBody(adapter, COMPLETED, false))).toBe(true);
    expect(resultOf(adapter, agentLineBody(adapter, FAILED, false))).toBe(false);
    expect(counted.reads).toBe(2);
  });

  it("keep the raw line when the normaliser throws", () => {
    const { adapter } = countingCodex();
    const broken: ProviderAdapter = {
      ...adapter,
      normalize: () => {
        throw new Error("bug");
      },
    };
    const body = agentLineBody(broken, COMPLETED, true);
    expect(body.items).toEqual([]);
    expect(resultOf(broken, body)).toBeNull();
    expect(body).toMatchObject({ raw: COMPLETED, truncated: true });
  });
});
