import path from "node:path";
import { describe, expect, it } from "vitest";
import { ItemStatus } from "../../gen/fermilink/runner/v1/run_pb.js";
import type { ProviderId } from "../../src/config/providers.js";
import { haveCli, runRealCli } from "./real-cli-harness.js";

/**
 * The CLI's own file-writing tool (not the shell) creates a file: the typed
 * events carry a `file_change` naming it, beside the tool call itself.
 */
const CASES: { id: ProviderId; tool: string }[] = [
  { id: "claude", tool: "Write" },
  { id: "gemini", tool: "write_file" },
  { id: "opencode", tool: "write" },
];

describe.each(CASES)("real $id writing a file with its own tool", ({ id, tool }) => {
  it.skipIf(!haveCli(id))(
    `reports ${tool} as a file change of made-by-agent.txt`,
    async () => {
      const run = await runRealCli(id, (repo) => ({
        mode: "tool",
        writeFile: { path: path.join(repo, "made-by-agent.txt"), content: "written\n" },
        answer: "done",
      }));
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
        // claude's result and opencode's metadata say the file was new.
        expect(done && entries(done)).toEqual([`add ${file}`]);
      }
      const calls = run.items.filter((k) => k.case === "toolCall" && k.value.name === tool);
      expect(calls.length).toBeGreaterThan(0);
      expect(run.exit).toMatchObject({ reason: "completed", return_code: 0, succeeded: true });
    },
    60_000,
  );
});
