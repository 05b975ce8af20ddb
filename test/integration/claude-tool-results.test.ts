/**
 * A Claude tool result names only its call's id; the runner reads it with the
 * call's kind and tool name from the call's line, found among the run's
 * earlier lines. Here the calls are 150 large lines back, out of the
 * journal's in-memory tail by the time the results come, so the look-back
 * reads the store: live, and when the finished run is read back (from the
 * start, and from just before the results, by a viewer that never saw the calls).
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { ItemStatus, type RunEvent, RunService } from "../../gen/fermilink/runner/v1/run_pb.js";
import { collect } from "../helpers/collect.js";
import { FAKE_AGENT, startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** Each item of the line that holds the results, as [case, id, name, status]. */
function resultReadings(events: RunEvent[]): unknown[][] {
  const line = events.find(
    (e) => e.event.case === "agent" && e.event.value.raw.includes('"type":"tool_result"'),
  );
  if (line?.event.case !== "agent") throw new Error("no tool_result line");
  return line.event.value.items.map((i) => {
    const k = i.kind;
    if (k.case === "command") return [k.case, k.value.id, k.value.command, k.value.status];
    if (k.case === "toolCall") return [k.case, k.value.id, k.value.name, k.value.status];
    if (k.case === "fileChange")
      return [k.case, k.value.id, k.value.changes.map((c) => c.path).join(), k.value.status];
    return [k.case];
  });
}

describe("Claude tool results read with their calls (look-back through the store)", () => {
  it("gives a refused Bash call's result the command kind and a refused Write its file change, live and read back", async () => {
    server = await startTestServer({
      FERMILINK_AGENT_PROVIDER: "claude",
      FERMILINK_CLAUDE_BIN: FAKE_AGENT,
    });
    const client = createClient(RunService, createGrpcTransport({ baseUrl: server.baseUrl }));
    const live = await collect(client.run({ userPrompt: "#scenario=claude-refused-far-back" }));
    const runId = live[0]?.runId ?? "";
    const declined = ItemStatus.DECLINED;
    const expected = [
      ["command", "toolu_far1", "", declined],
      ["toolCall", "toolu_far2", "Write", declined],
      ["fileChange", "toolu_far2", "notes.md", declined],
    ];
    expect(resultReadings(live)).toEqual(expected);

    // The run ended: read back from the store, from the start and from just before the results.
    const resultsSeq = live.find(
      (e) => e.event.case === "agent" && e.event.value.raw.includes("tool_result"),
    )?.seq;
    expect(resultsSeq).toBeGreaterThan(150n);
    const fromStart = await collect(client.attach({ runId, afterSeq: 0n }));
    expect(resultReadings(fromStart)).toEqual(expected);
    const late = await collect(client.attach({ runId, afterSeq: (resultsSeq ?? 1n) - 1n }));
    expect(resultReadings(late)).toEqual(expected);
  });
});
