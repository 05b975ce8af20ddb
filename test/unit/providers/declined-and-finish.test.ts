/**
 * A refused tool call reads as `declined`, a genuine failure as `failed`; and
 * opencode's step finishes decide the run's final result. Shapes as the real
 * CLIs print them (claude 2.1.331 captured in test/fixtures/transcripts/claude/real-*,
 * gemini 0.61 and opencode 1.18 read from their bundled sources).
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { AgentItem } from "../../../src/events/run-event.js";
import { agentLineBody, resultOf } from "../../../src/providers/agent-line.js";
import { normalizeClaudeLine } from "../../../src/providers/claude/normalize.js";
import { normalizeCodexLine } from "../../../src/providers/codex/normalize.js";
import { normalizeGeminiLine, toolNameFromId } from "../../../src/providers/gemini/normalize.js";
import { opencodeAdapter } from "../../../src/providers/opencode/index.js";
import { normalizeOpencodeLine } from "../../../src/providers/opencode/normalize.js";
import { readLines } from "../../helpers/read-lines.js";

const line = (v: unknown) => JSON.stringify(v);
const statuses = (items: AgentItem[]) =>
  items.flatMap((i) => ("status" in i ? [[i.kind, i.status]] : []));

function transcript(provider: string, name: string): string[] {
  const url = new URL(
    `../../fixtures/transcripts/${provider}/${name}/stdout.jsonl`,
    import.meta.url,
  );
  return readFileSync(url, "utf8")
    .split("\n")
    .filter((l) => l !== "");
}

const stepFinish = (reason: string) =>
  line({
    type: "step_finish",
    part: { type: "step-finish", reason, tokens: { input: 1, output: 1 }, cost: 0 },
  });

/** The run's verdict from its stdout lines, read as run-execution reads them (the last result wins). */
function runResult(lines: string[]): boolean | null {
  let result: boolean | null = null;
  for (const raw of lines) result = resultOf(agentLineBody(opencodeAdapter, raw, false)) ?? result;
  return result;
}

describe("opencode step_finish", () => {
  it("a step ending `other` or `unknown` is a normal end, not a failed turn", () => {
    for (const reason of ["stop", "other", "unknown"]) {
      expect(normalizeOpencodeLine(stepFinish(reason)).filter((i) => i.kind === "result")).toEqual([
        { kind: "result", success: true, text: "" },
      ]);
    }
  });

  it("length, content-filter and error fail the turn; tool-calls says nothing yet", () => {
    for (const reason of ["length", "content-filter", "error"]) {
      expect(normalizeOpencodeLine(stepFinish(reason))).toContainEqual({
        kind: "result",
        success: false,
        text: `opencode stopped: ${reason}.`,
      });
    }
    expect(normalizeOpencodeLine(stepFinish("tool-calls")).map((i) => i.kind)).toEqual(["usage"]);
  });

  it("a run whose last step ends `other` has a successful final result", () => {
    expect(runResult(transcript("opencode", "apply-patch"))).toBe(true);
    const error = line({ type: "error", error: { name: "APIError", data: { message: "boom" } } });
    expect(runResult([stepFinish("unknown"), error])).toBe(false);
    expect(runResult([stepFinish("unknown"), stepFinish("length")])).toBe(false);
  });
});

describe("gemini final result", () => {
  it("an invalid stream's result (no `error` field) carries the reason printed before it (captured)", () => {
    const lines = transcript("gemini", "real-invalid-stream");
    const reason =
      "The model returned an empty response with no text or thoughts. This may be a transient API issue; please try again.";
    const last = readLines(normalizeGeminiLine, lines).at(-1) ?? [];
    expect(last.filter((i) => i.kind === "error" || i.kind === "result")).toEqual([
      { kind: "error", message: reason, retryable: false, fatal: true },
      { kind: "result", success: false, text: reason },
    ]);
    // Read alone, the line still fails the run, with the generic message.
    expect(normalizeGeminiLine(lines.at(-1) ?? "")).toContainEqual({
      kind: "result",
      success: false,
      text: "Gemini run ended with an error.",
    });
  });

  it("a tool name holding `__` stays whole on its result, with or without its call in reach", () => {
    const name = "mcp_github__search_code";
    const use = (id: string) => line({ type: "tool_use", tool_name: name, tool_id: id });
    const result = (id: string) => line({ type: "tool_result", tool_id: id, status: "success" });
    const nameOf = (items: AgentItem[]) => items.flatMap((i) => ("name" in i ? [i.name] : []));
    // The raw id gemini makes when the model gave none repeats the name: the id alone tells it.
    const generated = `${name}__${name}_1795925201000_0`;
    expect(nameOf(normalizeGeminiLine(result(generated)))).toEqual([name]);
    // A model's own raw id does not: the call's line tells it.
    const given = `${name}__a1b2c3d4`;
    expect(nameOf(readLines(normalizeGeminiLine, [use(given), result(given)]).flat())).toEqual([
      name,
      name,
    ]);
    expect(toolNameFromId("run_shell_command__run_shell_command_1795581904348_0")).toBe(
      "run_shell_command",
    );
    expect(toolNameFromId("read_file-1764000000100-1a2b3c")).toBe("read_file");
  });
});

describe("declined vs failed", () => {
  it("claude: a call its permission check refused is declined, as the command it was (captured, default mode)", () => {
    const items = readLines(
      normalizeClaudeLine,
      transcript("claude", "real-permission-denied"),
    ).flat();
    expect(statuses(items)).toEqual([
      ["command", "in_progress"],
      ["command", "declined"],
    ]);
    // Read alone (its call out of reach), the result still says declined, under the call's id.
    const alone = transcript("claude", "real-permission-denied").flatMap((l) =>
      normalizeClaudeLine(l),
    );
    expect(statuses(alone).at(-1)).toEqual(["tool_call", "declined"]);
  });

  it("claude: a command that ran and failed stays failed (captured)", () => {
    const items = readLines(normalizeClaudeLine, transcript("claude", "real-tool-failure")).flat();
    expect(statuses(items)).toEqual([
      ["command", "in_progress"],
      ["command", "failed"],
    ]);
  });

  const claudeResult = (content: string, meta?: unknown) =>
    normalizeClaudeLine(
      line({
        type: "user",
        message: {
          content: [{ type: "tool_result", tool_use_id: "t1", content, is_error: true }],
        },
        tool_use_result: `Error: ${content}`,
        ...(meta === undefined ? {} : { tool_result_meta: [meta] }),
      }),
    );

  it("claude: the meta decides when present; its refusal templates when not", () => {
    const auto = { id: "t1", non_execution_kind: "automode-unavailable" };
    expect(statuses(claudeResult("Auto mode is unavailable", auto))).toEqual([
      ["tool_call", "declined"],
    ]);
    const interrupted = {
      id: "t1",
      non_execution_kind: "interrupted",
      permission_decision: { decision: "accept", source: "config" },
    };
    expect(statuses(claudeResult("Interrupted by user", interrupted))).toEqual([
      ["tool_call", "failed"],
    ]);
    // Another call's meta says nothing about this one.
    const other = { id: "t2", permission_decision: { decision: "reject", source: "config" } };
    expect(statuses(claudeResult("File does not exist.", other))).toEqual([
      ["tool_call", "failed"],
    ]);
    const ask = "Claude requested permissions to use WebFetch, but you haven't granted it yet.";
    expect(statuses(claudeResult(ask))).toEqual([["tool_call", "declined"]]);
    const rule = "Permission to edit /r/a.py has been denied.";
    expect(statuses(claudeResult(rule))).toEqual([["tool_call", "declined"]]);
    expect(statuses(claudeResult("File does not exist."))).toEqual([["tool_call", "failed"]]);
  });

  it("claude: a result takes its call's kind and tool name from the call's line, within the look-back", () => {
    const use = (id: string, name: string, input: unknown) =>
      line({ type: "assistant", message: { content: [{ type: "tool_use", id, name, input }] } });
    const result = (id: string, content: string, isError: boolean) =>
      line({
        type: "user",
        message: {
          content: [{ type: "tool_result", tool_use_id: id, content, is_error: isError }],
        },
        ...(isError ? { tool_use_result: `Error: ${content}` } : {}),
      });
    const filler = (n: number) => Array.from({ length: n }, (_, i) => line({ type: "x", i }));
    const lastItems = (lines: string[]) => readLines(normalizeClaudeLine, lines).at(-1);
    // A refused Write: its tool call named, and its change (still in progress after the call's
    // line) ended as declined, for the file the call named.
    const deny = "Permission to use Write has been denied.";
    expect(
      lastItems([use("w1", "Write", { file_path: "a.md" }), result("w1", deny, true)]),
    ).toEqual([
      {
        kind: "tool_call",
        id: "w1",
        name: "Write",
        inputJson: "",
        output: deny,
        status: "declined",
      },
      {
        kind: "file_change",
        id: "w1",
        changes: [{ path: "a.md", kind: "write" }],
        status: "declined",
      },
    ]);
    // A Read that worked: its name, nothing else from the call.
    expect(
      lastItems([use("r1", "Read", { file_path: "b" }), ...filler(254), result("r1", "ok", false)]),
    ).toEqual([
      {
        kind: "tool_call",
        id: "r1",
        name: "Read",
        inputJson: "",
        output: "ok",
        status: "completed",
      },
    ]);
    // Beyond LOOK_BACK_LINES (256 events before the result), the call is not looked for.
    expect(
      lastItems([use("r1", "Read", { file_path: "b" }), ...filler(256), result("r1", "ok", false)]),
    ).toEqual([
      { kind: "tool_call", id: "r1", name: "", inputJson: "", output: "ok", status: "completed" },
    ]);
    // Another call's line, or a line that only mentions the id, is not this call.
    const mention = line({
      type: "assistant",
      message: { content: [{ type: "text", text: '"id":"b1"' }] },
    });
    expect(
      lastItems([
        use("b1", "Bash", { command: "ls" }),
        mention,
        use("b2", "Read", {}),
        result("b1", "no", true),
      ]),
    ).toEqual([
      { kind: "command", id: "b1", command: "", output: "no", exitCode: null, status: "failed" },
    ]);
  });

  it("gemini: a policy refusal is declined, other errors failed", () => {
    const result = (type: string, message: string) =>
      normalizeGeminiLine(
        line({
          type: "tool_result",
          tool_id: "run_shell_command__run_shell_command_1_0",
          status: "error",
          error: { type, message },
        }),
      );
    expect(statuses(result("policy_violation", "Tool execution denied by policy."))).toEqual([
      ["command", "declined"],
    ]);
    expect(statuses(result("TOOL_EXECUTION_ERROR", "Command failed"))).toEqual([
      ["command", "failed"],
    ]);
  });

  it("opencode: its permission errors are declined, other errors failed", () => {
    const bash = (error: string) =>
      normalizeOpencodeLine(
        line({
          type: "tool_use",
          part: {
            tool: "bash",
            callID: "c1",
            state: { status: "error", input: { command: "rm x" }, error },
          },
        }),
      );
    expect(
      statuses(bash("Error: The user rejected permission to use this specific tool call.")),
    ).toEqual([["command", "declined"]]);
    expect(statuses(bash("Tool execution aborted"))).toEqual([["command", "failed"]]);
  });

  it("codex: command_execution status declined is kept", () => {
    const items = normalizeCodexLine(
      line({
        type: "item.completed",
        item: { id: "item_1", type: "command_execution", command: "rm x", status: "declined" },
      }),
    );
    expect(statuses(items)).toEqual([["command", "declined"]]);
  });
});
