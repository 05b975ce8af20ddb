import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExitReason } from "../../gen/fermilink/runner/v1/run_pb.js";
import { opencodeFailedCall } from "../../src/providers/opencode/retry-guard.js";
import { findWorkingBwrap } from "../../src/providers/read-only-sandbox.js";
import type { FakeModel, RecordedRequest } from "../fixtures/fake-model/fake-model.js";
import { until } from "../helpers/until.js";
import { haveCli, type RealRun, runRealCli } from "./real-cli-harness.js";

/**
 * The stalled-stream test waits 25 s on the runner's idle timer, most of it with opencode asleep
 * in the hung call. So its run is started first, and the other tests start once it is in that
 * call: its start-up, which that timer bounds, has the CPU to itself as before, and its wait runs
 * beside them (it has its own runner and fake model). Its test, last, only checks what it did.
 * Settled either way: a failure is that test's, not an unhandled rejection.
 */
let stalled: Promise<{ run: RealRun } | { error: unknown }> | undefined;

/** The conversation call (tools offered), not the title call opencode makes beside it. */
const isConversationCall = (r: RecordedRequest) =>
  r.path === "/v1/chat/completions" && JSON.stringify(r.body).includes('"tools"');

beforeAll(async () => {
  if (!haveCli("opencode")) return;
  let model: FakeModel | undefined;
  let settled = false;
  stalled = runRealCli(
    "opencode",
    { mode: "hang" },
    {
      env: { FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS: "25" },
      onModel: (m) => {
        model = m;
      },
    },
  )
    .then(
      (run) => ({ run }),
      (error: unknown) => ({ error }),
    )
    .finally(() => {
      settled = true;
    });
  // Ended before it got there: its test says why.
  await until(
    () => settled || (model?.requests.some(isConversationCall) ?? false),
    "the stalled run's conversation call",
    60_000,
  );
}, 70_000);

// Also when its test is filtered out: its runner is stopped before the file ends.
afterAll(async () => {
  await stalled;
}, 60_000);

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
      // opencode's background install of its plugin package into the session's config dir did
      // not run (it fetched and unpacked ~95 MB per new session), and said nothing about it.
      const installed = run.sessionPaths.filter(
        (p) => /(^|\/)\.npm(\/|$)/.test(p) || /node_modules\/(?!\.package-lock\.json$)/.test(p),
      );
      expect(installed).toEqual([]);
      expect(run.sessionPaths).toContain(".opencode-home/.config/opencode/.npmrc");
      expect(run.frames.filter((f) => f.data.includes("dependency install"))).toEqual([]);
    }, 60_000);

    it("cannot write into the session repo in a read-only run, though its plan agent runs bash", async () => {
      const lookup = await findWorkingBwrap(process.env.PATH ?? "");
      expect(lookup.bin, `no working bwrap here: ${lookup.refused.join("; ")}`).not.toBeNull();
      const run = await runRealCli(
        "opencode",
        { mode: "tool", command: "echo hello > made-by-agent.txt", answer: "done" },
        { env: { FERMILINK_AGENT_SANDBOX_MODE: "read-only" } },
      );
      // The model did ask for the write, and opencode ran it: the file system refused it.
      const call = run.items.find(
        (k) =>
          (k.case === "command" || k.case === "toolCall") &&
          JSON.stringify(k.value).includes("made-by-agent.txt"),
      );
      expect(call).toBeDefined();
      expect(JSON.stringify(call?.value)).toContain("Read-only file system");
      expect(run.madeFile).toBeNull();
      // The refused call is the tool's failure, not the run's: the model answers and opencode ends.
      expect(run.exit).toMatchObject({ reason: "completed", return_code: 0 });
      expect(run.items.some((k) => k.case === "message" && k.value.text.includes("done"))).toBe(
        true,
      );
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
  // opencode alone retries 500s and refused connections for over a minute (real-clis.md §5) and has
  // no setting to bound that; the runner counts the failed calls it logs and ends it after one retry.
  it.each(["http500", "down"] as const)(
    "is ended after one retry with reason retries_exhausted (%s), no idle timer needed",
    async (mode) => {
      const run = await runRealCli(
        "opencode",
        { mode: mode === "down" ? "text" : mode },
        { modelDown: mode === "down" },
      );
      expect(run.exit).toMatchObject({
        reason: "retries_exhausted",
        succeeded: false,
        killed_by_runner: true,
      });
      const expected = mode === "down" ? "Cannot connect to API" : "failed on purpose";
      expect(String(run.exit.message)).toContain(expected);
      expect(String(run.exit.message)).toContain("failed 2 times");
      // Both failed calls were passed on as log events (opencode's own stderr lines); the title
      // side call may fail too before the runner ends it, and is not one of them.
      const logs = run.frames.filter((f) => f.event === "log" && f.data.includes(expected));
      const failedCalls = logs.filter(
        (f) => opencodeFailedCall(String((JSON.parse(f.data) as { text: string }).text)) !== null,
      );
      expect(failedCalls.length).toBe(2);
      const exit = run.events.at(-1)?.event;
      // Ended by the runner's retry guard, not its idle timer (that would be `timeout`); no
      // wall-clock bound: on a loaded CI box this run once took 51 s.
      expect(exit?.case === "exit" && exit.value.reason).toBe(ExitReason.RETRIES_EXHAUSTED);
    },
    60_000,
  );
});

describe.skipIf(!haveCli("opencode"))("real opencode on a stalled model stream", () => {
  // A stream that sends headers and then nothing: opencode's own chunk timeout is 30 s (then one
  // retry); the runner's idle timer, set above opencode's silent start-up, ends it sooner.
  it("is ended by the runner's idle timer, as killed by the runner", async () => {
    const result = await stalled;
    if (result === undefined || "error" in result) throw result?.error ?? new Error("not started");
    const { run } = result;
    expect(run.exit).toMatchObject({ reason: "timeout", succeeded: false, killed_by_runner: true });
    expect(String(run.exit.message)).toContain("FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS=25");
    // It was hanging in the conversation call (tools offered), not still starting up.
    const calls = run.model.requests.filter(isConversationCall);
    expect(calls.length).toBeGreaterThan(0);
    expect(run.elapsedMs).toBeLessThan(45_000);
  }, 60_000);
});
