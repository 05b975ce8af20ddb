import { describe, expect, it } from "vitest";
import { ItemStatus } from "../../gen/fermilink/runner/v1/run_pb.js";
import { haveCli, runRealCli } from "./real-cli-harness.js";

describe.skipIf(!haveCli("claude"))(
  "real Claude Code through the runner (fake model on 127.0.0.1)",
  () => {
    it("runs the model's Bash call in the session repo and reports it as typed events", async () => {
      const run = await runRealCli("claude", {
        mode: "tool",
        command: "echo hello > made-by-agent.txt",
        answer: "done",
      });
      expect(run.madeFile).toBe("hello\n");
      expect(run.exit).toMatchObject({ reason: "completed", return_code: 0 });
      const command = run.items.find(
        (k) => k.case === "command" && k.value.command.includes("made-by-agent.txt"),
      );
      expect(command).toBeDefined();
      expect(run.items.some((k) => k.case === "message" && k.value.text === "done")).toBe(true);
      expect(run.items.some((k) => k.case === "result" && k.value.success)).toBe(true);
      const first = run.model.requests.find((r) => r.path === "/v1/messages");
      expect((first?.body as { model?: string } | undefined)?.model).toBe("fake-model");
      // CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: nothing but the messages API was called.
      expect(run.model.requests.every((r) => r.path.startsWith("/v1/messages"))).toBe(true);
    });

    it("reports a Bash call its permission check refused as that command, declined", async () => {
      // Plan mode (read-only): Claude refuses a shell command that writes, so it runs nothing.
      const run = await runRealCli(
        "claude",
        { mode: "tool", command: "echo hello > made-by-agent.txt", answer: "done" },
        { env: { FERMILINK_AGENT_SANDBOX_MODE: "read-only" } },
      );
      expect(run.madeFile).toBeNull();
      const started = run.items.find(
        (k) => k.case === "command" && k.value.command.includes("made-by-agent.txt"),
      );
      expect(started).toBeDefined();
      // Its result, under the same id: a command (not an unnamed tool call), declined.
      const id = started?.case === "command" ? started.value.id : "";
      const ended = run.items.filter(
        (k) => k.value !== undefined && "id" in k.value && k.value.id === id,
      );
      expect(ended.map((k) => k.case)).toEqual(["command", "command"]);
      const result = ended[1];
      expect(result?.case === "command" && result.value.status).toBe(ItemStatus.DECLINED);
    });

    it.each(["http401", "http500"] as const)(
      "ends in seconds with a typed error when the model answers %s",
      async (mode) => {
        const run = await runRealCli("claude", { mode });
        expect(run.exit.return_code).not.toBe(0);
        expect(run.elapsedMs).toBeLessThan(25_000);
        const result = run.items.find((k) => k.case === "result");
        expect(result?.case === "result" && result.value.success).toBe(false);
      },
    );

    it("ends in seconds when the model endpoint is down", async () => {
      const run = await runRealCli("claude", { mode: "text" }, { modelDown: true });
      expect(run.exit.return_code).not.toBe(0);
      expect(run.elapsedMs).toBeLessThan(25_000);
    });
  },
);

describe.skipIf(!haveCli("claude"))("real Claude Code when the model hangs", () => {
  it("is ended by the runner's idle timer", async () => {
    const run = await runRealCli(
      "claude",
      { mode: "hang" },
      { env: { FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS: "3" } },
    );
    expect(run.exit).toMatchObject({ reason: "timeout", killed_by_runner: true, succeeded: false });
    expect(run.elapsedMs).toBeLessThan(20_000);
  });
});
