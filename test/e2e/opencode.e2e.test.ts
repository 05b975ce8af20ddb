import { describe, expect, it } from "vitest";
import { haveCli, runRealCli } from "./real-cli-harness.js";

describe.skipIf(!haveCli("opencode"))(
  "real opencode through the runner (fake model on 127.0.0.1)",
  () => {
    it("runs the model's bash call in the session repo and reports it as typed events", async () => {
      const run = await runRealCli("opencode", {
        mode: "tool",
        command: "echo hello > made-by-agent.txt",
        answer: "done",
      });
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
      expect(run.model.requests.some((r) => r.path === "/v1/chat/completions")).toBe(true);
    }, 60_000);

    it("ends with a failure when the model answers 401", async () => {
      const run = await runRealCli("opencode", { mode: "http401" });
      expect(run.exit.return_code).not.toBe(0);
      const errors = run.frames.filter((f) => f.event === "agent").map((f) => f.data);
      expect(errors.join("\n")).toContain("401");
    }, 60_000);
  },
);

describe.skipIf(!haveCli("opencode"))("real opencode on a failing endpoint", () => {
  // opencode retries 500s and refused connections for over a minute on its own (real-clis.md §5);
  // the runner's idle timer is what ends such a run in seconds.
  it.each(["http500", "down"] as const)(
    "is ended by the runner's idle timer (%s)",
    async (mode) => {
      const run = await runRealCli(
        "opencode",
        { mode: mode === "down" ? "text" : mode },
        { modelDown: mode === "down", env: { FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS: "12" } },
      );
      expect(run.exit.succeeded).toBe(false);
      expect(run.elapsedMs).toBeLessThan(40_000);
    },
    60_000,
  );
});
