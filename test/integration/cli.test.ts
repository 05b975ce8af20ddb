import { execFile } from "node:child_process";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { FAKE_AGENT, startTestServer, type TestServer } from "../helpers/start-server.js";

const BIN = path.resolve("bin/fermilink-runner.mjs");
let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** The real command as a child process: exit code, stdout, stderr. */
function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        timeout: 30_000,
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
      },
      (err, out, errOut) => {
        const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
        resolve({ code, out, err: errOut });
      },
    );
  });
}

describe("fermilink-runner (the terminal client)", () => {
  it("streams a run readably and exits 0 when it completed", async () => {
    server = await startTestServer();
    const r = await cli(["run", "hello", "terminal", "--session", "cli1", "--url", server.baseUrl]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("hello terminal");
    expect(r.out).toMatch(/session cli1 · codex/);
    expect(r.out).toMatch(/✓ completed, return code 0/);
    expect(r.out).not.toContain("\x1b["); // not a terminal: no colours
  });

  it("prints raw events as JSON lines with --json", async () => {
    server = await startTestServer();
    const r = await cli(["run", "as json", "--json", "--url", server.baseUrl]);
    expect(r.code).toBe(0);
    const events = r.out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events[0]).toHaveProperty("meta");
    expect(events.at(-1)).toHaveProperty("exit");
    expect((events.at(-1)?.exit as { reason: string } | undefined)?.reason).toBe(
      "EXIT_REASON_COMPLETED",
    );
  });

  it("exits 1 when the run failed, 3 when the server is unreachable or refuses, 2 on bad usage", async () => {
    server = await startTestServer();
    const failed = await cli(["run", "#scenario=stderr-and-exit-3", "--url", server.baseUrl]);
    expect(failed.code).toBe(1);
    expect(failed.out).toMatch(/✗ completed, return code 3/);
    const refused = await cli(["run", "x", "--package", "nope", "--url", server.baseUrl]);
    expect(refused.code).toBe(3);
    expect(refused.err).toContain("NotFound: Requested package not found: nope");
    const down = await cli(["run", "x", "--url", "http://127.0.0.1:9"]);
    expect(down.code).toBe(3);
    expect(down.err).toContain("http://127.0.0.1:9");
    expect((await cli(["run", "x", "--bogus"])).code).toBe(2);
    expect((await cli(["run"])).code).toBe(2);
    expect((await cli(["frobnicate"])).code).toBe(2);
  });

  it("doctor names each provider CLI and git, and exits 0 when the default provider is usable", async () => {
    const ok = await cli(["doctor"], {
      FERMILINK_CODEX_BIN: FAKE_AGENT,
      FERMILINK_HOME: "/tmp/flr-doctor",
    });
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/^ok\s+codex CLI\s+.*fake-agent\.mjs/m);
    expect(ok.out).toContain("0.0.1 is outside the tested 0.169.x");
    expect(ok.out).toMatch(/^ok\s+git\s+git version/m);
    expect(ok.out).toMatch(/claude CLI/);
    const missing = await cli(["doctor"], {
      FERMILINK_CODEX_BIN: "/nonexistent/codex",
      FERMILINK_HOME: "/tmp/flr-doctor",
    });
    expect(missing.code).toBe(1);
    expect(missing.out).toMatch(/^--\s+codex CLI\s+not found \(set FERMILINK_CODEX_BIN\)/m);
  });
});
