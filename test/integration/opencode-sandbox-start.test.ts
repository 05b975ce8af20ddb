/**
 * How an opencode read-only run inside bubblewrap fails to start when what
 * the runner found is gone by the time it execs: the bwrap (it says so, and
 * looks again), or opencode itself (the run fails as a direct start of a
 * missing CLI does, not as opencode's exit code 1).
 */
import { chmod, mkdir, mkdtemp, rm, symlink, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { findWorkingBwrap } from "../../src/providers/read-only-sandbox.js";
import { parseSse, postRun, type SseEvent, startSseRun } from "../helpers/sse-client.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

const PATH = process.env.PATH ?? "/usr/bin:/bin";
const lookup = await findWorkingBwrap(PATH);

let server: TestServer | undefined;
let dir: string | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/**
 * opencode's place: says whether its cwd (the session repo) is writable, then,
 * for a prompt with "hold", waits for the file `gate`.
 */
async function fakeOpencode(at: string, gate: string): Promise<void> {
  await writeFile(
    at,
    `#!/bin/sh
[ "$1" = "--version" ] && { echo 1.0.0; exit 0; }
if touch probe 2>/dev/null; then w=true; else w=false; fi
echo "{\\"type\\":\\"probe\\",\\"writable\\":$w}"
case "$*" in *hold*) while [ ! -e '${gate}' ]; do sleep 0.05; done ;; esac
exit 0
`,
  );
  await chmod(at, 0o755);
}

const exitOf = (events: SseEvent[]) =>
  JSON.parse(events.find((e) => e.event === "runner.exit")?.data ?? "{}") as {
    reason?: string;
    return_code?: number | null;
    message?: string;
  };

describe.skipIf(lookup.bin === null)("an opencode read-only run inside bubblewrap", () => {
  it("says the bwrap it found is gone (not to set FERMILINK_OPENCODE_BIN), and the next run finds one again", async () => {
    dir = await mkdtemp(path.join("/var/tmp", "flr-ocsb-"));
    const opencode = path.join(dir, "opencode");
    await fakeOpencode(opencode, path.join(dir, "gate"));
    const bwrap = path.join(dir, "bin", "bwrap");
    await mkdir(path.dirname(bwrap));
    await symlink(lookup.bin as string, bwrap);
    server = await startTestServer({
      PATH: `${path.dirname(bwrap)}:${PATH}`,
      FERMILINK_AGENT_PROVIDER: "opencode",
      FERMILINK_OPENCODE_BIN: opencode,
    });
    const body = (n: number) => ({ session_id: `ro${n}`, user_prompt: "hi", sandbox: "read-only" });
    const probe = (events: SseEvent[]) => events.find((e) => e.event === "agent")?.data ?? "";

    const first = await postRun(server.baseUrl, body(1));
    expect(probe(first.events)).toContain('"writable":false');
    expect(exitOf(first.events).reason).toBe("completed");

    await unlink(bwrap);
    const gone = exitOf((await postRun(server.baseUrl, body(2))).events);
    expect(gone.reason).toBe("error");
    expect(gone.message).toContain(`bubblewrap ${bwrap} it had found can no longer be executed`);
    expect(gone.message).not.toMatch(/_BIN/);

    // Looked up again: the bwrap the link led to, still sandboxed.
    const again = await postRun(server.baseUrl, body(3));
    expect(probe(again.events)).toContain('"writable":false');
    expect(exitOf(again.events).reason).toBe("completed");
  });

  // Through the spawn helper and spawned directly: either way bwrap itself starts.
  it.each([
    { how: "removed", spawnHelper: "true", code: "ENOENT" },
    { how: "made non-executable", spawnHelper: "false", code: "EACCES" },
  ])(
    "fails as a direct start does, and is not counted as started, when opencode is $how between its check and the exec",
    async ({ how, spawnHelper, code }) => {
      dir = await mkdtemp(path.join("/var/tmp", "flr-ocsb-"));
      const opencode = path.join(dir, "opencode");
      const gate = path.join(dir, "gate");
      await fakeOpencode(opencode, gate);
      server = await startTestServer({
        FERMILINK_AGENT_PROVIDER: "opencode",
        FERMILINK_OPENCODE_BIN: opencode,
        FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1",
        FERMILINK_RUNNER_SPAWN_HELPER: spawnHelper,
      });
      // The first run holds the only slot; the second passes its checks and queues behind it.
      const holder = await startSseRun(server.baseUrl, {
        session_id: "holder",
        user_prompt: "hold",
        sandbox: "read-only",
      });
      const res = await fetch(`${server.baseUrl}/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ session_id: "late", user_prompt: "hi", sandbox: "read-only" }),
      });
      expect(res.status).toBe(200);
      let queued: () => void = () => {};
      const isQueued = new Promise<void>((r) => {
        queued = r;
      });
      const late = parseSse(res.body as ReadableStream<Uint8Array>, () => queued());
      const lateEvents: SseEvent[] = [];
      const lateDone = (async () => {
        for await (const ev of late) lateEvents.push(ev);
      })();
      await isQueued;
      if (how === "removed") await unlink(opencode);
      else await chmod(opencode, 0o644);
      await writeFile(gate, "");
      for (let n = await holder.rest.next(); !n.done; n = await holder.rest.next());
      await lateDone;
      const exit = exitOf(lateEvents);
      expect(exit.reason).toBe("error");
      expect(exit.return_code ?? null).toBeNull();
      expect(exit.message).toMatch(
        new RegExp(`^Could not start the provider CLI ${opencode}: .*\\(${code}\\)`),
      );
      if (how === "removed") {
        expect(exit.message).toBe(
          `Could not start the provider CLI ${opencode}: it does not exist, or it is a script whose interpreter (its #! line) does not (ENOENT). Install the CLI, or set the provider's FERMILINK_<PROVIDER>_BIN to its path.`,
        );
      }
      // Only the holder's opencode ran; both runs ended, the late one in an error.
      const metrics = await (
        await fetch(`http://127.0.0.1:${server.app.metricsPort}/metrics`)
      ).text();
      expect(metrics).toMatch(/^fermilink_runner_runs_started_total\{provider="opencode"\} 1$/m);
      expect(metrics).toMatch(
        /^fermilink_runner_runs_ended_total\{provider="opencode",reason="completed"\} 1$/m,
      );
      expect(metrics).toMatch(
        /^fermilink_runner_runs_ended_total\{provider="opencode",reason="error"\} 1$/m,
      );
    },
  );
});
