import { afterEach, describe, expect, it } from "vitest";
import { postRun } from "../helpers/sse-client.js";
import { FAKE_AGENT, startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function exitOf(prompt: string): Promise<Record<string, unknown>> {
  if (!server) throw new Error("no server");
  const res = await postRun(server.baseUrl, { user_prompt: prompt });
  const last = res.events.at(-1);
  expect(last?.event).toBe("runner.exit");
  return JSON.parse(last?.data ?? "{}") as Record<string, unknown>;
}

describe("the runner's verdict on a run (runner.exit succeeded / killed_by_runner)", () => {
  it("succeeds only with return code 0 and the provider's successful final result", async () => {
    server = await startTestServer();
    expect(await exitOf("fine")).toMatchObject({
      reason: "completed",
      return_code: 0,
      succeeded: true,
      killed_by_runner: false,
    });
    const failed = await exitOf("#scenario=stderr-and-exit-3");
    expect(failed).toMatchObject({ return_code: 3, succeeded: false, killed_by_runner: false });
  });

  it("reports a run with no final result as failed even when the provider exited 0", async () => {
    server = await startTestServer();
    const exit = await exitOf("#scenario=flood-small");
    expect(exit).toMatchObject({ reason: "completed", return_code: 0, succeeded: false });
    expect(exit.message).toBe(
      "The provider exited without a final result event; the run is reported as failed.",
    );
  });

  it("counts a provider's \\r progress as activity for the idle timeout, though it completes no line", async () => {
    // 4.5 s of progress with no line between two lines, against a 3 s idle limit.
    server = await startTestServer({ FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS: "3" });
    expect(await exitOf("#scenario=cr-progress")).toMatchObject({
      reason: "completed",
      succeeded: true,
    });
  });

  it("records that the runner killed a provider that exits 0 on SIGTERM (as gemini does)", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "1" });
    const exit = await exitOf("#scenario=exit0-on-sigterm");
    expect(exit).toMatchObject({
      reason: "timeout",
      return_code: 0,
      succeeded: false,
      killed_by_runner: true,
    });
  });

  it("keeps a Claude result line longer than FERMILINK_RUNNER_MAX_LINE_BYTES readable: the run succeeds", async () => {
    server = await startTestServer({
      FERMILINK_AGENT_PROVIDER: "claude",
      FERMILINK_CLAUDE_BIN: FAKE_AGENT,
      FERMILINK_RUNNER_MAX_LINE_BYTES: "65536",
    });
    const res = await postRun(server.baseUrl, { user_prompt: "#scenario=claude-long-result" });
    const exit = JSON.parse(res.events.at(-1)?.data ?? "{}") as Record<string, unknown>;
    expect(exit).toMatchObject({ reason: "completed", return_code: 0, succeeded: true });
    // The line as sent: the same JSON, its long text cut and marked, its small fields whole.
    const line = res.events.find((e) => e.event === "agent" && e.data.includes('"result"'));
    const result = JSON.parse(line?.data ?? "{}") as Record<string, unknown>;
    expect(result).toMatchObject({
      type: "result",
      subtype: "success",
      is_error: false,
      total_cost_usd: 0.5,
      usage: { input_tokens: 3, cache_read_input_tokens: 5, output_tokens: 2 },
    });
    expect(result.result).toBe(`${"x".repeat(4096)}… [cut: ${100_000 - 4096} bytes]`);
  });
});
