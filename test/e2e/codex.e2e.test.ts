import { describe, expect, it } from "vitest";
import { haveCli, runRealCli } from "./real-cli-harness.js";

describe.skipIf(!haveCli("codex"))(
  "real Codex CLI through the runner (fake model on 127.0.0.1)",
  () => {
    it("runs the model's shell tool call in the session repo and reports it as typed events", async () => {
      const run = await runRealCli("codex", {
        mode: "tool",
        command: "echo hello > made-by-agent.txt",
        answer: "done",
      });
      expect(run.madeFile).toBe("hello\n");
      expect(run.exit).toMatchObject({ reason: "completed", return_code: 0 });
      expect(run.frames[0]?.event).toBe("meta");
      const command = run.items.find((k) => k.case === "command" && k.value.status === 2);
      expect(command?.case === "command" && command.value.command).toContain(
        "echo hello > made-by-agent.txt",
      );
      expect(command?.case === "command" && command.value.exitCode).toBe(0);
      expect(run.items.some((k) => k.case === "message" && k.value.text === "done")).toBe(true);
      expect(run.items.some((k) => k.case === "result" && k.value.success)).toBe(true);
      expect(run.items.some((k) => k.case === "usage")).toBe(true);
      // It spoke the Responses API to the configured endpoint with the configured key.
      const first = run.model.requests.find((r) => r.path === "/v1/responses");
      expect(first?.headers.authorization).toBe("<redacted>");
      expect((first?.body as { model?: string } | undefined)?.model).toBe("fake-model");
    });

    it("sends a prompt of - to the model instead of reading stdin for it", async () => {
      const run = await runRealCli("codex", { mode: "text", answer: "done" }, { prompt: "-" });
      expect(run.exit).toMatchObject({ reason: "completed", return_code: 0, succeeded: true });
      const first = run.model.requests.find((r) => r.path === "/v1/responses");
      expect(JSON.stringify(first?.body)).toContain('"text":"-\\n"');
    });

    it.each([
      ["http401", /401/],
      ["http500", /./],
    ] as const)(
      "ends in seconds with a typed error when the model answers %s",
      async (mode, pattern) => {
        const run = await runRealCli("codex", { mode });
        expect(run.exit.reason).toBe("completed");
        expect(run.exit.return_code).not.toBe(0);
        expect(run.elapsedMs).toBeLessThan(20_000);
        const failed = run.frames
          .filter((f) => f.event === "agent")
          .map((f) => JSON.parse(f.data) as { type: string; error?: { message: string } });
        const turnFailed = failed.find((l) => l.type === "turn.failed");
        expect(turnFailed?.error?.message).toMatch(pattern);
      },
    );

    it("ends in seconds when the model endpoint is down", async () => {
      const run = await runRealCli("codex", { mode: "text" }, { modelDown: true });
      expect(run.exit.return_code).not.toBe(0);
      expect(run.elapsedMs).toBeLessThan(20_000);
    });

    it("is ended by the runner's idle timer when the model hangs", async () => {
      const run = await runRealCli(
        "codex",
        { mode: "hang" },
        { env: { FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS: "3" } },
      );
      expect(run.exit.reason).toBe("timeout");
      expect(String(run.exit.message)).toContain("FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS=3");
      expect(run.elapsedMs).toBeLessThan(20_000);
    });
  },
);
