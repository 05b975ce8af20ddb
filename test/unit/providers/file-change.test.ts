/** File-writing tools read as `file_change` items (shapes of claude 2.1, gemini 0.61, opencode 1.18). */
import { describe, expect, it } from "vitest";
import { normalizeClaudeLine } from "../../../src/providers/claude/normalize.js";
import { normalizeGeminiLine } from "../../../src/providers/gemini/normalize.js";
import { normalizeOpencodeLine } from "../../../src/providers/opencode/normalize.js";
import { readLines } from "../../helpers/read-lines.js";

const line = (v: unknown) => JSON.stringify(v);
const changesOf = (items: ReturnType<typeof normalizeClaudeLine>) =>
  items.filter((i) => i.kind === "file_change");

describe("file changes", () => {
  it("claude: an Edit call starts an update, its result (structuredPatch) completes it", () => {
    const start = normalizeClaudeLine(
      line({
        type: "assistant",
        message: {
          content: [
            {
              type: "tool_use",
              id: "t1",
              name: "Edit",
              input: { file_path: "/r/a.py", old_string: "x", new_string: "y" },
            },
          ],
        },
      }),
    );
    expect(start.map((i) => i.kind)).toEqual(["tool_call", "file_change"]);
    expect(changesOf(start)[0]).toEqual({
      kind: "file_change",
      id: "t1",
      changes: [{ path: "/r/a.py", kind: "update" }],
      status: "in_progress",
    });
    const done = normalizeClaudeLine(
      line({
        type: "user",
        message: { content: [{ type: "tool_result", tool_use_id: "t1", content: "ok" }] },
        tool_use_result: { filePath: "/r/a.py", oldString: "x", structuredPatch: [] },
      }),
    );
    expect(changesOf(done)).toEqual([
      {
        kind: "file_change",
        id: "t1",
        changes: [{ path: "/r/a.py", kind: "update" }],
        status: "completed",
      },
    ]);
  });

  it("claude: a Read result (filePath nested under file) is no change", () => {
    const items = normalizeClaudeLine(
      line({
        type: "user",
        message: { content: [{ type: "tool_result", tool_use_id: "t2", content: "text" }] },
        tool_use_result: { type: "text", file: { filePath: "/r/a.py", content: "x" } },
      }),
    );
    expect(changesOf(items)).toEqual([]);
  });

  it("gemini: replace starts an update; its result pairs by id without entries", () => {
    const start = normalizeGeminiLine(
      line({
        type: "tool_use",
        tool_name: "replace",
        tool_id: "replace__replace_1_0",
        parameters: { file_path: "/r/a.py", old_string: "x", new_string: "y" },
      }),
    );
    expect(changesOf(start)[0]).toMatchObject({ changes: [{ path: "/r/a.py", kind: "update" }] });
    const done = normalizeGeminiLine(
      line({ type: "tool_result", tool_id: "replace__replace_1_0", status: "success", output: "" }),
    );
    expect(changesOf(done)).toEqual([
      { kind: "file_change", id: "replace__replace_1_0", changes: [], status: "completed" },
    ]);
  });

  it("gemini: a file tool's result ends the change for the call's path, failed or not, as claude's does", () => {
    const use = (id: string, name: string) =>
      line({
        type: "tool_use",
        tool_name: name,
        tool_id: id,
        parameters: { file_path: `/r/${id}` },
      });
    const result = (id: string, status: string, type = "") =>
      line({
        type: "tool_result",
        tool_id: id,
        status,
        ...(type ? { error: { type, message: "no" } } : { output: "" }),
      });
    const lines = [
      use("w1", "write_file"),
      use("e1", "replace"),
      use("d1", "write_file"),
      result("w1", "success"),
      result("e1", "error", "edit_no_occurrence_found"),
      result("d1", "error", "policy_violation"),
    ];
    const done = readLines(normalizeGeminiLine, lines).slice(3).flatMap(changesOf);
    expect(done).toEqual([
      {
        kind: "file_change",
        id: "w1",
        changes: [{ path: "/r/w1", kind: "write" }],
        status: "completed",
      },
      {
        kind: "file_change",
        id: "e1",
        changes: [{ path: "/r/e1", kind: "update" }],
        status: "failed",
      },
      {
        kind: "file_change",
        id: "d1",
        changes: [{ path: "/r/d1", kind: "write" }],
        status: "declined",
      },
    ]);
  });

  it("opencode: edit is an update, write says add or update from metadata.exists, other tools none", () => {
    const tool = (name: string, input: unknown, metadata: unknown = {}) =>
      normalizeOpencodeLine(
        line({
          type: "tool_use",
          part: {
            tool: name,
            callID: "c",
            state: { status: "completed", input, output: "", metadata },
          },
        }),
      );
    expect(changesOf(tool("edit", { filePath: "/r/a" }))[0]).toMatchObject({
      changes: [{ path: "/r/a", kind: "update" }],
      status: "completed",
    });
    expect(changesOf(tool("write", { filePath: "/r/b" }, { exists: true }))[0]).toMatchObject({
      changes: [{ path: "/r/b", kind: "update" }],
    });
    expect(changesOf(tool("write", { filePath: "/r/b" }))[0]).toMatchObject({
      changes: [{ path: "/r/b", kind: "write" }],
    });
    expect(changesOf(tool("read", { filePath: "/r/b" }))).toEqual([]);
  });

  it("opencode: apply_patch names its files in the patch headers (add, update, delete, move)", () => {
    const patch = (status: string, patchText: string) =>
      normalizeOpencodeLine(
        line({
          type: "tool_use",
          part: {
            tool: "apply_patch",
            callID: "p1",
            state: { status, input: { patchText }, output: "", error: "" },
          },
        }),
      );
    const text = [
      "*** Begin Patch",
      "*** Add File: a.txt",
      "+*** Update File: not-a-header.txt",
      "*** Update File:  src/b.py ",
      "@@",
      "-x",
      "+y",
      "*** Delete File: c.txt",
      "*** Update File: d.py",
      "*** Move to: e.py",
      "*** End Patch",
    ].join("\n");
    expect(changesOf(patch("completed", text))).toEqual([
      {
        kind: "file_change",
        id: "p1",
        changes: [
          { path: "a.txt", kind: "add" },
          { path: "src/b.py", kind: "update" },
          { path: "c.txt", kind: "delete" },
          { path: "d.py", kind: "delete" },
          { path: "e.py", kind: "add" },
        ],
        status: "completed",
      },
    ]);
    expect(
      changesOf(patch("error", "*** Begin Patch\r\n*** Delete File: f\r\n*** End Patch")),
    ).toEqual([
      { kind: "file_change", id: "p1", changes: [{ path: "f", kind: "delete" }], status: "failed" },
    ]);
  });
});
