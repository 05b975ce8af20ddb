import path from "node:path";
import { describe, expect, it } from "vitest";
import { ItemStatus } from "../../gen/fermilink/runner/v1/run_pb.js";
import type { ProviderId } from "../../src/config/providers.js";
import { haveCli, runRealCli } from "./real-cli-harness.js";

/**
 * The CLI's own file-writing tool (not the shell) creates a file: the typed
 * events carry a `file_change` naming it, beside the tool call itself (codex
 * reports its patch tool as the `file_change` item alone).
 */
const CASES: { id: ProviderId; tool: string; env?: Record<string, string> }[] = [
  { id: "claude", tool: "Write" },
  { id: "gemini", tool: "write_file" },
  { id: "opencode", tool: "write" },
  // Codex 0.169 offers `apply_patch` only for a model it has metadata for: none for `fake-model`.
  { id: "codex", tool: "apply_patch", env: { FERMILINK_AGENT_MODEL: "gpt-5.5" } },
];

describe.each(CASES)("real $id writing a file with its own tool", ({ id, tool, env }) => {
  it.skipIf(!haveCli(id))(
    `reports ${tool} as a file change of made-by-agent.txt`,
    async () => {
      const run = await runRealCli(
        id,
        (repo) => ({
          mode: "tool",
          // A patch names its file relative to the repo, as models write them.
          writeFile: {
            path: id === "codex" ? "made-by-agent.txt" : path.join(repo, "made-by-agent.txt"),
            content: "written\n",
          },
          answer: "done",
        }),
        { env },
      );
      expect(run.madeFile).toBe("written\n");
      const file = path.join(run.repoDir, "made-by-agent.txt");
      const changes = run.items.flatMap((k) => (k.case === "fileChange" ? [k.value] : []));
      const entries = (c: (typeof changes)[number]) => c.changes.map((e) => `${e.kind} ${e.path}`);
      const done = changes.find((c) => c.status === ItemStatus.COMPLETED);
      expect(done).toBeDefined();
      if (id === "gemini") {
        // Gemini's result line names only the call id: the start carries the path.
        const started = changes.find((c) => c.id === done?.id && c.changes.length > 0);
        expect(started && entries(started)).toEqual([`write ${file}`]);
        expect(started?.status).toBe(ItemStatus.IN_PROGRESS);
      } else {
        // claude's result, opencode's metadata and codex's patch say the file was new.
        expect(done && entries(done)).toEqual([`add ${file}`]);
      }
      if (id === "codex") {
        // The path is made absolute by codex itself, already in its started item.
        const started = changes.find((c) => c.status === ItemStatus.IN_PROGRESS);
        expect(started && entries(started)).toEqual([`add ${file}`]);
        // Its own patch tool ran (not a shell): the model got the freeform tool's output.
        const outputs = run.model.requests.flatMap((r) => {
          const body = r.body as { input?: { type?: string; output?: string }[] } | null;
          const input = body?.input ?? [];
          return input.filter((i) => i.type === "custom_tool_call_output");
        });
        expect(outputs.map((o) => o.output)).toEqual([
          expect.stringContaining("A made-by-agent.txt"),
        ]);
      } else {
        const calls = run.items.filter((k) => k.case === "toolCall" && k.value.name === tool);
        expect(calls.length).toBeGreaterThan(0);
      }
      expect(run.exit).toMatchObject({ reason: "completed", return_code: 0, succeeded: true });
    },
    60_000,
  );
});
