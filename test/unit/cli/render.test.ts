import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  AgentItemSchema,
  ExitReason,
  ItemStatus,
  RunEventSchema,
} from "../../../gen/fermilink/runner/v1/run_pb.js";
import { exitSucceeded, PLAIN, renderEvent } from "../../../src/cli/render.js";

const agent = (items: ReturnType<typeof create<typeof AgentItemSchema>>[], raw = "{}") =>
  create(RunEventSchema, { runId: "r", seq: 2n, event: { case: "agent", value: { raw, items } } });

describe("terminal rendering", () => {
  it("shows commands with their output and exit code, messages as text", () => {
    const cmd = create(AgentItemSchema, {
      kind: {
        case: "command",
        value: {
          id: "c1",
          command: "ls",
          output: "a\nb\n",
          exitCode: 0,
          status: ItemStatus.COMPLETED,
        },
      },
    });
    expect(renderEvent(agent([cmd]), PLAIN)).toBe("$ ls (exit 0)\n    a\n    b");
    const msg = create(AgentItemSchema, {
      kind: { case: "message", value: { text: "done", delta: false } },
    });
    expect(renderEvent(agent([msg]), PLAIN)).toBe("done");
    expect(renderEvent(agent([], "not json"), PLAIN)).toBe("not json");
  });

  it("summarises the exit and says whether the run succeeded", () => {
    const exit = create(RunEventSchema, {
      runId: "r",
      seq: 9n,
      event: {
        case: "exit",
        value: {
          reason: ExitReason.TIMEOUT,
          returnCode: -15,
          duration: { seconds: 3n, nanos: 0 },
          message: "too slow",
        },
      },
    });
    expect(renderEvent(exit, PLAIN)).toBe("✗ timeout, return code -15, 3.0 s — too slow");
    expect(exitSucceeded(exit)).toBe(false);
    const ok = create(RunEventSchema, {
      event: {
        case: "exit",
        value: { reason: ExitReason.COMPLETED, returnCode: 0, succeeded: true },
      },
    });
    expect(exitSucceeded(ok)).toBe(true);
    // Exit code 0 without the provider's successful final result is not a success.
    const noResult = create(RunEventSchema, {
      event: { case: "exit", value: { reason: ExitReason.COMPLETED, returnCode: 0 } },
    });
    expect(exitSucceeded(noResult)).toBe(false);
  });
});
