import { type ChildProcess, execFile, spawn } from "node:child_process";
import { cpSync, lstatSync, readdirSync, readFileSync, symlinkSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  ExitReason,
  RunEventSchema,
  RunService,
  RunStatus,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import { NODE_START_FLAGS } from "../../src/cli/v8-tuning.js";
import { envelope } from "../helpers/envelope.js";
import { childrenOf, isAlive, waitUntilGone } from "../helpers/process-census.js";
import { lastData, startSseRun } from "../helpers/sse-client.js";
import { FAKE_AGENT, startTestServer, type TestServer } from "../helpers/start-server.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = path.join(ROOT, "bin/fermilink-runner.mjs");
const run = promisify(execFile);

let server: TestServer | undefined;
const children = new Set<ChildProcess>();
const tempDirs: string[] = [];
afterEach(async () => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  children.clear();
  await server?.stop();
  server = undefined;
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

interface Cli {
  proc: ChildProcess;
  exited: Promise<number | null>;
  /** How it ended, once `exited` resolved. */
  status(): { code: number | null; signal: NodeJS.Signals | null } | undefined;
  out(): string;
  err(): string;
  /** Resolves once stdout matches (a failed test reports what was printed instead of hanging). */
  waitForOut(pattern: RegExp): Promise<RegExpExecArray>;
}

/**
 * The real command as a child process, outside a terminal (so: no colours, no
 * spinner). `bin`: run that file itself, as a shell runs an installed command
 * (through its `#!` line), instead of `node bin/fermilink-runner.mjs`.
 */
function spawnCli(args: string[], env: Record<string, string> = {}, bin?: string): Cli {
  const [file, argv] = bin === undefined ? [process.execPath, [BIN, ...args]] : [bin, args];
  const proc = spawn(file, argv, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(proc);
  let status: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let out = "";
  let err = "";
  proc.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  proc.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((resolve) =>
    proc.once("close", (code, signal) => {
      status = { code, signal };
      resolve(code);
    }),
  );
  const waitForOut = async (pattern: RegExp) => {
    for (let i = 0; i < 400; i++) {
      const match = pattern.exec(out);
      if (match) return match;
      if (proc.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no ${pattern} in stdout:\n${out}\nstderr:\n${err}`);
  };
  return { proc, exited, status: () => status, out: () => out, err: () => err, waitForOut };
}

/** Run the command to its end: exit code, stdout, stderr. */
async function cli(args: string[], env: Record<string, string> = {}) {
  const c = spawnCli(args, env);
  const code = await c.exited;
  return { code, out: c.out(), err: c.err() };
}

async function tempHome(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "flr-cli-"));
  tempDirs.push(dir);
  return dir;
}

describe("fermilink-runner run", () => {
  it("streams a run readably and exits 0 when it completed", async () => {
    server = await startTestServer();
    const r = await cli(["run", "hello", "terminal", "--session", "cli1", "--url", server.baseUrl]);
    expect(r.code).toBe(0);
    const lines = r.out.split("\n");
    expect(lines[0]).toMatch(/^run [0-9a-f-]{36} · session cli1 · codex$/);
    expect(lines).toContain("hello terminal"); // the assistant message, from its typed item
    expect(lines).toContain("fake-agent: starting"); // the provider's stderr
    expect(r.out).toMatch(/^tokens: 12 in, 5 out$/m);
    expect(r.out).toMatch(/^✓ completed, return code 0, \d+\.\d s$/m);
    expect(r.out).not.toContain("\x1b["); // not a terminal: no colours
  });

  it("prints every event as one JSON line with --json, meta first and exit last", async () => {
    server = await startTestServer();
    const r = await cli(["run", "as json", "--json", "--url", server.baseUrl]);
    expect(r.code).toBe(0);
    const events = r.out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events[0]).toHaveProperty("meta");
    expect(events[0]?.seq).toBe("1");
    expect(events.at(-1)).toHaveProperty("exit");
    expect((events.at(-1)?.exit as { reason: string } | undefined)?.reason).toBe(
      "EXIT_REASON_COMPLETED",
    );
    expect(events.some((e) => JSON.stringify(e).includes('"message":{"text":"as json"'))).toBe(
      true,
    );
  });

  it("shows the queue position as a plain line when the output is not a terminal", async () => {
    server = await startTestServer({ FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1" });
    const client = createClient(
      RunService,
      createConnectTransport({ baseUrl: server.baseUrl, httpVersion: "1.1" }),
    );
    const holder = new AbortController();
    const held = client.run({ userPrompt: "#scenario=slow" }, { signal: holder.signal });
    const first = await held[Symbol.asyncIterator]().next(); // meta: the only slot is taken
    expect(first.value?.event.case).toBe("meta");
    const c = spawnCli(["run", "after the queue", "--url", server.baseUrl]);
    await c.waitForOut(/^queued 1\/1$/m);
    holder.abort();
    expect(await c.exited).toBe(0);
    expect(c.out()).toMatch(/^queued 1\/1\nrun \S+ · session \S+ · codex\n/);
    expect(c.out()).toContain("after the queue\n");
  });

  it("exits 1 when the run failed, 3 when the server is unreachable or refuses the request", async () => {
    server = await startTestServer();
    const [failed, refused, down] = await Promise.all([
      cli(["run", "#scenario=stderr-and-exit-3", "--url", server.baseUrl]),
      cli(["run", "x", "--package", "nope", "--url", server.baseUrl]),
      cli(["run", "x", "--url", "http://127.0.0.1:9"]),
    ]);
    expect(failed.code).toBe(1);
    expect(failed.out).toMatch(/^✗ completed, return code 3, /m);
    expect(refused.code).toBe(3);
    expect(refused.err).toContain("NotFound: Requested package not found: nope");
    expect(down.code).toBe(3);
    expect(down.err).toMatch(/Unavailable: .*ECONNREFUSED.*\(http:\/\/127\.0\.0\.1:9\)/);
  });

  it("exits 4, not 3, when the stream breaks after the run began (its outcome unknown), by the outcome when after its exit event", async () => {
    // A server that starts the run (its meta event), then drops the connection or ends the
    // stream without the run's exit event.
    const meta = toBinary(
      RunEventSchema,
      create(RunEventSchema, {
        runId: "run-1",
        seq: 1n,
        event: { case: "meta", value: { sessionId: "s1" } },
      }),
    );
    // The run's exit event, succeeded: a drop after it leaves the outcome known.
    const exit = toBinary(
      RunEventSchema,
      create(RunEventSchema, {
        runId: "run-1",
        seq: 2n,
        event: { case: "exit", value: { reason: ExitReason.COMPLETED, succeeded: true } },
      }),
    );
    let ending: "drop" | "end" | "dropAfterExit" = "drop";
    const breaker = http.createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/connect+proto" });
        const events =
          ending === "dropAfterExit"
            ? Buffer.concat([envelope(0, meta), envelope(0, exit)])
            : envelope(0, meta);
        res.write(events, () => {
          if (ending === "end") res.end(envelope(2, Buffer.from("{}")));
          else setTimeout(() => res.socket?.destroy(), 50);
        });
      });
    });
    await new Promise<void>((resolve) => breaker.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(breaker.address() as AddressInfo).port}`;
    const lost =
      "the stream ended before the run's exit event; the outcome of run run-1 is unknown";
    try {
      const dropped = await cli(["run", "x", "--url", url]);
      expect(dropped.code).toBe(4);
      expect(dropped.out).toMatch(/^run run-1 · session s1/m);
      expect(dropped.err).toMatch(new RegExp(`\\(${url}\\)\nfermilink-runner: ${lost}\n$`));
      ending = "end";
      const ended = await cli(["run", "x", "--url", url]);
      expect(ended.code).toBe(4);
      expect(ended.err).toBe(`fermilink-runner: ${lost}\n`);
      ending = "dropAfterExit";
      const afterExit = await cli(["run", "x", "--url", url]);
      expect(afterExit.code).toBe(0);
      expect(afterExit.err).not.toContain("unknown");
    } finally {
      breaker.close();
    }
  });

  it("sends --token (else FERMILINK_RUNNER_TOKEN) as a bearer token, and exits 3 on a refusal without printing it", async () => {
    // A server with auth on, as far as the client can tell: it records what each call sent and
    // answers the refusal the runner gives, as the end of a Connect stream (JSON in any codec).
    const seen: (string | undefined)[] = [];
    const refusal = { code: "unauthenticated", message: "send Authorization: Bearer <token>" };
    const refuser = http.createServer((req, res) => {
      seen.push(req.headers.authorization);
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/connect+proto" });
        res.end(envelope(2, Buffer.from(JSON.stringify({ error: refusal }))));
      });
    });
    await new Promise<void>((resolve) => refuser.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(refuser.address() as AddressInfo).port}`;
    const flagToken = "flag-token-0123456789";
    const envToken = "env-token-0123456789";
    try {
      const both = await cli(["run", "x", "--token", flagToken, "--url", url], {
        FERMILINK_RUNNER_TOKEN: envToken,
      });
      const envOnly = await cli(["run", "x", "--url", url], { FERMILINK_RUNNER_TOKEN: envToken });
      const none = await cli(["run", "x", "--url", url], { FERMILINK_RUNNER_TOKEN: " " });
      expect(seen).toEqual([`Bearer ${flagToken}`, `Bearer ${envToken}`, undefined]);
      for (const r of [both, envOnly, none]) {
        expect(r.code).toBe(3);
        expect(r.err).toContain(`Unauthenticated: ${refusal.message} (${url})`);
        expect(`${r.out}${r.err}`).not.toContain("token-0123456789");
      }
      expect(none.err).toContain("pass it with --token or FERMILINK_RUNNER_TOKEN");
      expect(both.err).toContain(
        "the token given (--token or FERMILINK_RUNNER_TOKEN) was not accepted",
      );
      // A user token naming another user: the server's reason, the same exit.
      refusal.code = "permission_denied";
      refusal.message = "this token may only act for user alice";
      const denied = await cli(["run", "x", "--user", "bob", "--url", url], {
        FERMILINK_RUNNER_TOKEN: envToken,
      });
      expect(denied.code).toBe(3);
      expect(denied.err).toBe(`fermilink-runner: PermissionDenied: ${refusal.message} (${url})\n`);
    } finally {
      refuser.close();
    }
    // Neither the help nor a refused token shows the token itself.
    const [help, bad] = await Promise.all([
      cli(["run", "--help"], { FERMILINK_RUNNER_TOKEN: envToken }),
      cli(["run", "x", "--token", "two words"], { FERMILINK_RUNNER_TOKEN: envToken }),
    ]);
    expect(help.out).toContain("--token TOKEN");
    expect(help.out).not.toContain(envToken);
    expect(bad.code).toBe(2);
    expect(bad.err.split("\n")[0]).toBe(
      "fermilink-runner: --token is blank or has a space, control or non-ASCII character (a token has none)",
    );
    expect(bad.err).not.toContain("two words");
  });

  it("gives up on a server that takes the connection but never answers, and exits 3", async () => {
    // Accepts, reads the request, never writes: a hung server or a proxy with nothing behind it.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as AddressInfo;
    try {
      const startedAt = Date.now();
      const c = spawnCli([
        "run",
        "x",
        "--connect-timeout",
        "0.5",
        "--url",
        `http://127.0.0.1:${port}`,
      ]);
      const code = await Promise.race([
        c.exited,
        new Promise<string>((r) => setTimeout(() => r("still waiting after 10 s"), 10_000)),
      ]);
      expect(code).toBe(3);
      expect(Date.now() - startedAt).toBeGreaterThanOrEqual(500);
      expect(sockets.size).toBe(1); // it did connect: the wait was for the answer
      expect(c.err()).toBe(
        `fermilink-runner: no answer from the server within 0.5 s (http://127.0.0.1:${port}); see --connect-timeout\n`,
      );
    } finally {
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
  });

  it("bounds only the wait for the answer: a stream quiet for longer than --connect-timeout goes on", async () => {
    server = await startTestServer();
    // The provider says nothing for 1 s after its first line.
    const r = await cli([
      "run",
      "#scenario=sleep-1s",
      "--connect-timeout",
      "0.3",
      "--url",
      server.baseUrl,
    ]);
    expect(r.err).toBe("");
    expect(r.out).toContain("#scenario=sleep-1s"); // the echoed prompt, after the quiet second
    // The scenario has no final result, so the run's own verdict is a failure: 1, not 3.
    expect(r.out).toMatch(/^✗ completed, return code 0, /m);
    expect(r.code).toBe(1);
  });

  it("exits 2 on bad usage, naming the problem", async () => {
    const results = await Promise.all(
      [
        ["run", "x", "--bogus"],
        ["run"],
        ["run", "x", "--url", "ftp://h"],
        ["run", "x", "--connect-timeout", "0"],
        ["run", "x", "--connect-timeout", "soon"],
        ["run", "x", "--connect-timeout", "3000000"],
        ["frobnicate"],
        [],
      ].map((args) => cli(args)),
    );
    expect(results.map((r) => r.code)).toEqual([2, 2, 2, 2, 2, 2, 2, 2]);
    expect(results.map((r) => r.err.split("\n")[0])).toEqual([
      expect.stringMatching(/^fermilink-runner: Unknown option '--bogus'/),
      "fermilink-runner: run needs a prompt",
      'fermilink-runner: --url "ftp://h" is not an http(s) URL',
      'fermilink-runner: --connect-timeout "0" is not a positive number of seconds up to 2147483',
      'fermilink-runner: --connect-timeout "soon" is not a positive number of seconds up to 2147483',
      'fermilink-runner: --connect-timeout "3000000" is not a positive number of seconds up to 2147483',
      'fermilink-runner: unknown command "frobnicate"',
      "fermilink-runner: no command given",
    ]);
  });

  it("treats a blank FERMILINK_RUNNER_URL as unset and names a bad one as the variable, not --url", async () => {
    const [bad, blank] = await Promise.all([
      cli(["run", "x"], { FERMILINK_RUNNER_URL: "runner:8000" }),
      cli(["run", "x"], { FERMILINK_RUNNER_URL: " " }),
    ]);
    expect(bad.code).toBe(2);
    expect(bad.err.split("\n")[0]).toBe(
      'fermilink-runner: FERMILINK_RUNNER_URL="runner:8000" is not an http(s) URL',
    );
    // The default URL is tried (nothing listens there in the tests: unreachable, not bad usage).
    expect(blank.err).not.toContain("is not an http(s) URL");
    expect(blank.err).toContain("(http://127.0.0.1:8000)");
  });

  it("on Ctrl-C (SIGINT) ends the call, so the run ends on the server, and exits 130", async () => {
    server = await startTestServer();
    const c = spawnCli(["run", "#scenario=slow", "--session", "sig", "--url", server.baseUrl]);
    const [, runId] = await c.waitForOut(/^run (\S+) · session sig/m);
    c.proc.kill("SIGINT");
    expect(await c.exited).toBe(130);
    expect(c.err()).toContain(`interrupted; run ${runId} is ended by the server`);
    expect((await finishedRun(server.baseUrl, runId)).exitReason).toBe(ExitReason.CLIENT_GONE);
  });

  it("on SIGTERM or SIGHUP ends the call as Ctrl-C does, says so, and exits 143 or 129", async () => {
    server = await startTestServer();
    const s = server;
    const stop = async (signal: "SIGTERM" | "SIGHUP", session: string) => {
      const c = spawnCli(["run", "#scenario=slow", "--session", session, "--url", s.baseUrl]);
      const [, runId] = await c.waitForOut(new RegExp(`^run (\\S+) · session ${session}`, "m"));
      c.proc.kill(signal);
      const code = await c.exited;
      expect(c.err()).toContain(`stopped by ${signal}; run ${runId} is ended by the server`);
      expect((await finishedRun(s.baseUrl, runId)).exitReason).toBe(ExitReason.CLIENT_GONE);
      return code;
    };
    // Node's default would end the command by the signal itself, silently (null here).
    expect(await stop("SIGTERM", "term")).toBe(143);
    expect(await stop("SIGHUP", "hup")).toBe(129);
  });

  it("exits 141 without a stack trace when the reader of its output goes away, ending the run", async () => {
    server = await startTestServer();
    const c = spawnCli(["run", "#scenario=slow", "--session", "pipe", "--url", server.baseUrl]);
    const [, runId] = await c.waitForOut(/^run (\S+) · session pipe/m);
    // `| head -1`: the reader closes its end; the next line (a tick every 200 ms) fails with EPIPE.
    c.proc.stdout?.destroy();
    expect(await c.exited).toBe(141);
    expect(c.err()).toBe("");
    expect((await finishedRun(server.baseUrl, runId)).exitReason).toBe(ExitReason.CLIENT_GONE);
  });

  it("exits 141 without a stack trace when the reader goes away before the first write", async () => {
    // Closed right after the spawn, long before node has loaded the command: the first write
    // (the help text, the doctor's report, run's error on stderr) fails with EPIPE.
    const early = (
      args: string[],
      stream: "stdout" | "stderr",
      env: Record<string, string> = {},
    ) => {
      const c = spawnCli(args, env);
      c.proc[stream]?.destroy();
      return c;
    };
    const home = await tempHome();
    const [help, doctor, unreachable] = [
      early(["--help"], "stdout"),
      early(["doctor"], "stdout", {
        FERMILINK_HOME: home,
        FERMILINK_CODEX_BIN: FAKE_AGENT,
        FERMILINK_CLAUDE_BIN: "/nonexistent/claude",
        FERMILINK_GEMINI_BIN: "/nonexistent/gemini",
        FERMILINK_OPENCODE_BIN: "/nonexistent/opencode",
      }),
      early(["run", "x", "--url", "http://127.0.0.1:9"], "stderr"),
    ];
    expect(await Promise.all([help.exited, doctor.exited, unreachable.exited])).toEqual([
      141, 141, 141,
    ]);
    for (const c of [help, doctor]) expect(c.err()).toBe("");
  });
});

/** The run's record once it finished (or as it stands after 5 s). */
async function finishedRun(baseUrl: string, runId: string | undefined) {
  const client = createClient(RunService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  let info = await client.getRun({ runId });
  for (let i = 0; i < 100 && info.status !== RunStatus.FINISHED; i++) {
    await new Promise((r) => setTimeout(r, 50));
    info = await client.getRun({ runId });
  }
  return info;
}

describe("fermilink-runner --help", () => {
  it("describes each command without running it", async () => {
    const [top, run, serve, serveBad, doctor] = await Promise.all([
      cli(["--help"]),
      cli(["run", "--help"]),
      cli(["serve", "--help"]),
      cli(["serve", "--port", "1"]),
      cli(["doctor", "-h"]),
    ]);
    expect(top.code).toBe(0);
    expect(top.out).toMatch(/run "<prompt>"[\s\S]*serve[\s\S]*doctor/);
    expect(run.code).toBe(0);
    expect(run.out).toContain("--session ID");
    // `serve --help` must not start a server (it would keep running until the timeout).
    expect(serve.code).toBe(0);
    expect(serve.out).toContain("exactly as `npm start` does");
    expect(serveBad.code).toBe(2);
    expect(doctor.code).toBe(0);
    expect(doctor.out).toContain("Usage: fermilink-runner doctor");
  });

  it("takes `help <command>` for `<command> --help`, and refuses an unknown one", async () => {
    const [run, doctor, unknown, inherited] = await Promise.all([
      cli(["help", "run"]),
      cli(["help", "doctor"]),
      cli(["help", "frobnicate"]),
      cli(["help", "toString"]),
    ]);
    expect(run.code).toBe(0);
    expect(run.out).toContain("--session ID");
    expect(doctor.code).toBe(0);
    expect(doctor.out.split("\n")[0]).toBe("Usage: fermilink-runner doctor");
    for (const r of [unknown, inherited]) {
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
    }
    expect(unknown.err.split("\n")[0]).toBe('fermilink-runner: unknown command "frobnicate"');
    expect(inherited.err.split("\n")[0]).toBe('fermilink-runner: unknown command "toString"');
  });
});

describe("fermilink-runner serve", () => {
  it("starts the server as npm start does, serves runs, and stops cleanly on SIGTERM", async () => {
    const home = await tempHome();
    const s = spawnCli(["serve"], {
      HOME: home,
      FERMILINK_HOME: home,
      FERMILINK_CODEX_BIN: FAKE_AGENT,
      FERMILINK_RUNNER_PORT: "0",
      FERMILINK_RUNNER_METRICS_PORT: "0",
    });
    const [, port] = await s.waitForOut(/"port":(\d+)/);
    expect(Number(port)).toBeGreaterThan(0);
    const r = await cli(["run", "served", "--url", `http://127.0.0.1:${port}`]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("served\n");
    s.proc.kill("SIGTERM");
    expect(await s.exited).toBe(0);
  });
});

/** `serve` on a throw-away home with the fake agent; resolves once it listens. */
async function startServe(env: Record<string, string> = {}, bin?: string) {
  const home = await tempHome();
  const s = spawnCli(
    ["serve"],
    {
      HOME: home,
      FERMILINK_HOME: home,
      FERMILINK_CODEX_BIN: FAKE_AGENT,
      FERMILINK_RUNNER_PORT: "0",
      FERMILINK_RUNNER_METRICS_PORT: "0",
      FERMILINK_RUNNER_KILL_GRACE_SECONDS: "1",
      // No start-up warm-up (≈ 0.8 s each): the test above serves on the defaults.
      FERMILINK_RUNNER_WARMUP_REQUESTS: "0",
      ...env,
    },
    bin,
  );
  const [, port] = await s.waitForOut(/"port":(\d+)/);
  // The launcher runs the server as its one child.
  const [server] = childrenOf(s.proc.pid as number);
  return { s, home, port: Number(port), server: server as number };
}

describe("the bin's launcher (serve)", () => {
  it("starts from a #! line any env(1) understands, and runs the server with the node flags it needs", async () => {
    const shebang = readFileSync(BIN, "utf8").split("\n")[0];
    // No `env -S` (BusyBox, older coreutils): the interpreter and one plain word.
    expect(shebang).toBe("#!/usr/bin/env node");
    // Run as a shell runs an installed command: the file itself.
    const { s, server } = await startServe({}, BIN);
    expect(server).toBeGreaterThan(0);
    const argv = readFileSync(`/proc/${server}/cmdline`, "utf8").split("\0");
    for (const flag of NODE_START_FLAGS) expect(argv).toContain(flag);
    // Ctrl-C reaches the server once (through the launcher): it drains and both exit 0.
    s.proc.kill("SIGINT");
    expect(await s.exited).toBe(0);
    expect(s.out().match(/"shutting down"/g)).toHaveLength(1);
    expect(s.out()).toContain('"signal":"SIGINT"');
    await waitUntilGone([server], 3000);
  });

  it("stops the server with it on Ctrl-Z (SIGTSTP), and continues it with it (SIGCONT)", async () => {
    const { s, port, server } = await startServe({}, BIN);
    const launcher = s.proc.pid as number;
    const state = (pid: number) => {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    };
    const until = async (what: () => boolean) => {
      for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 25));
      return what();
    };
    process.kill(launcher, "SIGTSTP");
    expect(await until(() => state(launcher) === "T" && state(server) === "T")).toBe(true);
    process.kill(launcher, "SIGCONT");
    expect(await until(() => state(launcher) !== "T" && state(server) !== "T")).toBe(true);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    s.proc.kill("SIGTERM");
    expect(await s.exited).toBe(0);
  });

  it("refuses a key in FERMILINK_CODEX_BASE_URL's query (codex's argv) at start-up, naming the variable, never echoing the key", async () => {
    const home = await tempHome();
    const bad = await cli(["serve"], {
      FERMILINK_HOME: home,
      FERMILINK_CODEX_BIN: FAKE_AGENT,
      FERMILINK_RUNNER_PORT: "0",
      FERMILINK_RUNNER_METRICS_PORT: "0",
      FERMILINK_CODEX_BASE_URL: "https://llm.example/v1?api-key=s3cret",
    });
    expect(bad.code).toBe(1);
    expect(bad.err).toContain(
      'FERMILINK_CODEX_BASE_URL="https://llm.example/v1?api-key=***" has a query string',
    );
    expect(bad.err).toContain("FERMILINK_CODEX_API_KEY");
    expect(`${bad.out}${bad.err}`).not.toContain("s3cret");
  });

  it("passes the server's end on: its exit code, or the signal that killed it", async () => {
    const bad = await cli(["serve"], { FERMILINK_RUNNER_PORT: "abc" });
    expect(bad.code).toBe(1);
    expect(bad.err).toContain("FERMILINK_RUNNER_PORT");
    const { s, server } = await startServe();
    process.kill(server, "SIGKILL");
    await s.exited;
    expect(s.status()).toEqual({ code: null, signal: "SIGKILL" });
  });

  it("stops the server and its runs when the launcher itself is killed outright", async () => {
    const { s, home, port, server } = await startServe({
      FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "0.2",
      FERMILINK_RUNNER_SPARE_WORKSPACES: "2",
    });
    const { rest } = await startSseRun(`http://127.0.0.1:${port}`, {
      session_id: "orphan",
      user_prompt: "#scenario=slow",
    });
    const invocation = path.join(
      home,
      "workspaces",
      "orphan",
      "repo",
      ".fake-agent",
      "invocation.json",
    );
    let text = "";
    for (let i = 0; i < 100 && text === ""; i++) {
      text = await readFile(invocation, "utf8").catch(() => "");
      if (text === "") await new Promise((r) => setTimeout(r, 50));
    }
    const inv = JSON.parse(text) as { pid: number };
    expect(isAlive(inv.pid)).toBe(true);
    s.proc.kill("SIGKILL");
    // The server notices its launcher is gone and shuts down as on SIGTERM.
    await waitUntilGone([server, inv.pid], 10_000);
    expect(JSON.parse(await lastData(rest)).reason).toBe("shutdown");
  });
});

describe("the packed package (npm pack)", () => {
  it("holds the build the bin runs, and serves runs when unpacked elsewhere", async () => {
    const dir = await tempHome();
    // Packed from a copy of what package.json ships (copies: npm pack leaves links out), so its
    // `prepare` script builds dist/ there, as a directory (the checkout's dist is a link), and
    // nobody's dist/ is rebuilt meanwhile.
    const checkout = path.join(dir, "checkout");
    const { files: shipped } = JSON.parse(
      readFileSync(path.join(ROOT, "package.json"), "utf8"),
    ) as {
      files: string[];
    };
    for (const entry of ["package.json", ...shipped.filter((f) => f !== "dist/")]) {
      const rel = entry.replace(/^\/|\/$/g, "");
      cpSync(path.join(ROOT, rel), path.join(checkout, rel), { recursive: true });
    }
    symlinkSync(path.join(ROOT, "node_modules"), path.join(checkout, "node_modules"));
    const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", dir], {
      cwd: checkout,
    });
    const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
    const files = new Set(packed?.files.map((f) => f.path));
    expect(lstatSync(path.join(checkout, "dist")).isDirectory()).toBe(true);
    const built = readdirSync(path.join(checkout, "dist"), { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.relative(checkout, path.join(e.parentPath, e.name)));
    expect(built).toContain("dist/src/cli/main.js");
    for (const file of [
      "bin/fermilink-runner.mjs",
      ...built,
      "src/workspace/template/AGENTS.md",
      "web/index.html",
      "web/dist/app.js",
      "scripts/build.mjs",
    ]) {
      expect(files, file).toContain(file);
    }
    expect([...files].filter((f) => /^(test|bench)\//.test(f))).toEqual([]);
    // Unpacked outside the checkout, with the checkout's dependencies, it serves a run.
    await run("tar", ["-xzf", path.join(dir, packed?.filename ?? ""), "-C", dir]);
    const unpacked = path.join(dir, "package");
    symlinkSync(path.join(ROOT, "node_modules"), path.join(unpacked, "node_modules"));
    const { s, port } = await startServe({}, path.join(unpacked, "bin/fermilink-runner.mjs"));
    const page = await fetch(`http://127.0.0.1:${port}/`);
    expect(page.status).toBe(200);
    const r = await cli(["run", "from the package", "--url", `http://127.0.0.1:${port}`]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("from the package\n");
    s.proc.kill("SIGTERM");
    expect(await s.exited).toBe(0);
  });
});

describe("fermilink-runner doctor", () => {
  it("names each provider CLI, git and the paths, and exits 0 when the default provider is usable", async () => {
    const home = await tempHome();
    // The other CLIs pointed nowhere: the result must not depend on what this machine has installed.
    const elsewhere = {
      FERMILINK_CLAUDE_BIN: "/nonexistent/claude",
      FERMILINK_GEMINI_BIN: "/nonexistent/gemini",
      FERMILINK_OPENCODE_BIN: "/nonexistent/opencode",
      FERMILINK_HOME: home,
    };
    const ok = await cli(["doctor"], { ...elsewhere, FERMILINK_CODEX_BIN: FAKE_AGENT });
    expect(ok.code).toBe(0);
    // Found, but the fake agent's version is outside the tested range: usable with a warning.
    expect(ok.out).toMatch(
      /^warn\s+codex CLI\s+\S*fake-agent\.mjs · 0\.0\.1 is outside the tested 0\.169\.x/m,
    );
    // Set, but to nothing usable: the advice is to fix the value, not to set it.
    for (const id of ["claude", "gemini", "opencode"]) {
      expect(ok.out).toMatch(
        new RegExp(
          `^--\\s+${id} CLI\\s+not found: FERMILINK_${id.toUpperCase()}_BIN=/nonexistent/${id} is not an executable file$`,
          "m",
        ),
      );
    }
    expect(ok.out).toMatch(/^ok\s+git\s+git version/m);
    expect(ok.out).toMatch(/^(ok\s+bubblewrap\s+bubblewrap|--\s+bubblewrap\s+not found on PATH)/m);
    expect(ok.out).toMatch(/^ok\s+default provider\s+codex \(from built-in default\)$/m);
    expect(ok.out).toMatch(new RegExp(`^\\s+FERMILINK_HOME\\s+${home}$`, "m"));
    expect(ok.out).toMatch(new RegExp(`^\\s+workspaces\\s+${home}/workspaces$`, "m"));

    const missing = await cli(["doctor"], {
      ...elsewhere,
      FERMILINK_CODEX_BIN: "/nonexistent/codex",
    });
    expect(missing.code).toBe(1);
    expect(missing.out).toMatch(
      /^--\s+codex CLI\s+not found: FERMILINK_CODEX_BIN=\/nonexistent\/codex is not an executable file$/m,
    );
    expect(missing.out).toMatch(/^--\s+default provider\s+codex/m);
    // A bare name is looked for on PATH, and said so.
    const onPath = await cli(["doctor"], { ...elsewhere, FERMILINK_CODEX_BIN: "no-such-codex" });
    expect(onPath.out).toMatch(
      /^--\s+codex CLI\s+not found: FERMILINK_CODEX_BIN=no-such-codex is not an executable file on PATH$/m,
    );

    // The policy file picks the provider, as it does for the server.
    await writeFile(path.join(home, "agent_runtime.json"), '{"provider": "claude"}');
    const policy = await cli(["doctor"], { ...elsewhere, FERMILINK_CODEX_BIN: FAKE_AGENT });
    expect(policy.code).toBe(1);
    expect(policy.out).toContain(`claude (from ${path.join(home, "agent_runtime.json")})`);
  });

  it("keeps each check on one line when a CLI's --version fails with several lines", async () => {
    const home = await tempHome();
    // What a CLI whose #! interpreter is missing from PATH prints: a multi-line failure.
    const broken = path.join(home, "broken-codex");
    await writeFile(broken, "#!/bin/sh\necho 'first line' >&2\necho 'second line' >&2\nexit 1\n", {
      mode: 0o755,
    });
    const r = await cli(["doctor"], {
      FERMILINK_HOME: home,
      FERMILINK_CODEX_BIN: broken,
      FERMILINK_CLAUDE_BIN: "/nonexistent/claude",
      FERMILINK_GEMINI_BIN: "/nonexistent/gemini",
      FERMILINK_OPENCODE_BIN: "/nonexistent/opencode",
    });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(
      new RegExp(
        `^--\\s+codex CLI\\s+${broken} · .*--version\` failed: .*first line; second line$`,
        "m",
      ),
    );
    // Every line is a check: a mark (or none, for a path), then its name.
    for (const line of r.out.trimEnd().split("\n"))
      expect(line).toMatch(/^(ok {3}|warn |-- {3}| {5}) \S/);
  });
});
