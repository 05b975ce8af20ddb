import { describe, expect, it } from "vitest";
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
  it("read only the lines naming a result event type, and give the run's outcome from them", () => {
    const { adapter, counted } = countingCodex();
    const message = agentLineBody(adapter, MESSAGE, false);
    expect(message).toEqual({ type: "agent", raw: MESSAGE, items: [], truncated: false });
    expect(resultOf(message)).toBeNull();
    expect(counted.reads).toBe(0);
    expect(resultOf(agentLineBody(adapter, COMPLETED, false))).toBe(true);
    const failed = agentLineBody(adapter, FAILED, true);
    expect(resultOf(failed)).toBe(false);
    expect(failed.items.map((i) => i.kind)).toEqual(["error", "result"]);
    expect(counted.reads).toBe(2);
  });

  it("keep the raw line when the normaliser throws", () => {
    const broken: ProviderAdapter = {
      ...getProviderAdapter("codex"),
      normalize: () => {
        throw new Error("bug");
      },
    };
    const body = agentLineBody(broken, COMPLETED, true);
    expect(body).toEqual({ type: "agent", raw: COMPLETED, items: [], truncated: true });
    expect(resultOf(body)).toBeNull();
  });
});
