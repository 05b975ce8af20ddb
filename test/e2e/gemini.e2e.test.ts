import { describe, expect, it } from "vitest";
import { haveCli, runRealCli } from "./real-cli-harness.js";

// Gemini's approval mode for workspace-write is auto_edit, which still asks before shell
// commands; headless, a run that must run a command uses the bypass policy (--approval-mode yolo).
const YOLO = { FERMILINK_AGENT_SANDBOX_POLICY: "bypass" };

describe.skipIf(!haveCli("gemini"))(
  "real Gemini CLI through the runner (fake model on 127.0.0.1)",
  () => {
    it("runs the model's shell call in the session repo and reports it as typed events", async () => {
      const run = await runRealCli(
        "gemini",
        { mode: "tool", command: "echo hello > made-by-agent.txt", answer: "done" },
        { env: YOLO },
      );
      expect(run.madeFile).toBe("hello\n");
      expect(run.exit).toMatchObject({ reason: "completed", return_code: 0 });
      const call = run.items.find(
        (k) =>
          (k.case === "command" || k.case === "toolCall") &&
          JSON.stringify(k.value).includes("made-by-agent.txt"),
      );
      expect(call).toBeDefined();
      expect(run.items.some((k) => k.case === "message" && k.value.text.includes("done"))).toBe(
        true,
      );
      expect(run.items.some((k) => k.case === "result" && k.value.success)).toBe(true);
      expect(run.model.requests.some((r) => r.path.endsWith(":streamGenerateContent"))).toBe(true);
    });

    it("an empty model reply (invalid stream) fails the run, its result carrying gemini's reason", async () => {
      const run = await runRealCli("gemini", { mode: "text", answer: "" }, { env: YOLO });
      expect(run.exit.succeeded).toBe(false);
      const result = run.items.find((k) => k.case === "result");
      expect(result?.case === "result" && result.value).toMatchObject({
        success: false,
        text: expect.stringContaining("The model returned an empty response"),
      });
    });

    it.each(["http401", "http500"] as const)(
      "ends in seconds with a failure when the model answers %s",
      async (mode) => {
        const run = await runRealCli("gemini", { mode }, { env: YOLO });
        expect(run.exit.return_code).not.toBe(0);
        expect(run.elapsedMs).toBeLessThan(30_000);
      },
    );
  },
);

describe.skipIf(!haveCli("gemini"))("real Gemini CLI when the endpoint is down or hangs", () => {
  it("ends in seconds when the model endpoint is down", async () => {
    const run = await runRealCli("gemini", { mode: "text" }, { modelDown: true, env: YOLO });
    expect(run.exit.succeeded).toBe(false);
    expect(run.elapsedMs).toBeLessThan(30_000);
  });

  it("is ended by the runner's idle timer when the model hangs (and is recorded as killed, whatever gemini's exit code)", async () => {
    const run = await runRealCli(
      "gemini",
      { mode: "hang" },
      { env: { ...YOLO, FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS: "4" } },
    );
    expect(run.exit).toMatchObject({ reason: "timeout", killed_by_runner: true, succeeded: false });
    expect(run.elapsedMs).toBeLessThan(30_000);
  });
});
