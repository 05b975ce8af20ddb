import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NODE_START_FLAGS } from "../../src/cli/v8-tuning.js";
import { SqliteRunStore } from "../../src/journal/sqlite-run-store.js";
import {
  childrenOf,
  isAlive,
  killQuietly,
  readPidFile,
  waitUntilGone,
} from "../helpers/process-census.js";
import { runRecord } from "../helpers/run-record.js";
import { lastData, parseSse, postRun, startSseRun } from "../helpers/sse-client.js";
import { BUILT_MAIN, FAKE_AGENT } from "../helpers/start-server.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
let home: string;
let child: ChildProcess | undefined;

beforeEach(async () => {
  home = await mkdtemp(path.join(tmpdir(), "flr-main-"));
});
afterEach(async () => {
  if (child?.exitCode === null) child.kill("SIGKILL");
  child = undefined;
  await rm(home, { recursive: true, force: true });
});

/**
 * A few spare workspaces, as the in-process test servers keep: the default 200 are made before
 * the server listens, up to 5 s per start on a loaded 2-core box, and no test here is about them.
 */
const FEW_SPARES = { FERMILINK_RUNNER_SPARE_WORKSPACES: "2" };
/** No start-up warm-up (≈ 0.8 s each), but in the `npm start` test, which runs the defaults. */
const NO_WARM_UP = { FERMILINK_RUNNER_WARMUP_REQUESTS: "0" };

/**
 * `npm start`'s command, run directly so the signal reaches the server itself. `stdio`: where its
 * output goes instead (`output()` holds what went to a "pipe").
 */
function startMain(
  env: Record<string, string>,
  { stdio = ["ignore", "pipe", "pipe"] }: { stdio?: StdioOptions } = {},
) {
  const proc = spawn(process.execPath, [...NODE_START_FLAGS, BUILT_MAIN], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? "",
      HOME: home,
      FERMILINK_HOME: home,
      ...FEW_SPARES,
      ...NO_WARM_UP,
      ...env,
    },
    stdio,
  });
  child = proc;
  let out = "";
  let err = "";
  proc.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  proc.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((resolve) =>
    proc.once("exit", (code) => resolve(code)),
  );
  return { proc, exited, output: () => ({ out, err }) };
}

/** The port of a started server, once it logged it. */
async function portOf(m: ReturnType<typeof startMain>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const match = /"port":(\d+)/.exec(m.output().out);
    if (match) return Number(match[1]);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the server did not start: ${m.output().err}`);
}

/**
 * The built server with the fake agent (its drain grace `graceSeconds`, a 1 s kill grace) and
 * one live SSE run of `scenario` on `session`: the run's open stream, the fake agent's
 * directory, and its invocation (pid among it), for the shutdown tests.
 */
async function startMainWithLiveRun(session: string, scenario: string, graceSeconds: string) {
  const m = startMain({
    FERMILINK_CODEX_BIN: FAKE_AGENT,
    FERMILINK_RUNNER_PORT: "0",
    FERMILINK_RUNNER_METRICS_PORT: "0",
    FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: graceSeconds,
    FERMILINK_RUNNER_KILL_GRACE_SECONDS: "1",
  });
  const port = await portOf(m);
  const { rest } = await startSseRun(`http://127.0.0.1:${port}`, {
    session_id: session,
    user_prompt: `#scenario=${scenario}`,
  });
  const repo = path.join(home, "workspaces", session, "repo", ".fake-agent");
  const inv = JSON.parse(await readFile(path.join(repo, "invocation.json"), "utf8"));
  return { m, rest, repo, inv };
}

/** The status line the server at `port` answers a raw HTTP/1.1 request line with ("closed" on a reset). */
function statusLineOf(port: number, requestLine: string): Promise<string> {
  return new Promise<string>((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () =>
      socket.write(`${requestLine} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    );
    let answer = "";
    socket.on("data", (d: Buffer) => {
      answer += d.toString("latin1");
    });
    socket.on("error", () => resolve("closed"));
    socket.on("close", () => resolve(answer.split("\r\n")[0] ?? ""));
  });
}

/** Pids of the servers (argument dist/src/main.js, not a shell naming it) whose environment has FERMILINK_HOME=`homeDir`. */
function serverPidsOf(homeDir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      const environ = readFileSync(`/proc/${entry}/environ`, "utf8").split("\0");
      if (argv.includes("dist/src/main.js") && environ.includes(`FERMILINK_HOME=${homeDir}`))
        pids.push(Number(entry));
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return pids;
}

/** KB of the node binary's own pages (code and read-only data) resident in process `pid`. */
async function nodeBinaryKb(pid: number): Promise<number> {
  const binary = realpathSync(process.execPath);
  let ours = false;
  let kb = 0;
  for (const line of (await readFile(`/proc/${pid}/smaps`, "utf8")).split("\n")) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) ours = header[1] === binary;
    else if (ours && line.startsWith("Rss:")) kb += Number(/(\d+)/.exec(line)?.[1] ?? 0);
  }
  return kb;
}

describe("the server process (src/main.ts)", () => {
  it("reports every invalid variable at once and exits 1", async () => {
    const m = startMain({ FERMILINK_RUNNER_PORT: "abc", FERMILINK_AGENT_SANDBOX_POLICY: "maybe" });
    expect(await m.exited).toBe(1);
    const { err } = m.output();
    expect(err).toContain("FERMILINK_RUNNER_PORT");
    expect(err).toContain("FERMILINK_AGENT_SANDBOX_POLICY");
  });

  it("refuses to start without the provider CLI, naming the variable to set", async () => {
    const m = startMain({
      FERMILINK_CODEX_BIN: path.join(home, "missing-codex"),
      FERMILINK_RUNNER_PORT: "0",
    });
    expect(await m.exited).toBe(1);
    expect(m.output().err).toContain(
      "codex CLI not found. Install it in the runner image or set FERMILINK_CODEX_BIN to its path.",
    );
  });

  it.each([
    ["main", "FERMILINK_RUNNER_PORT"],
    ["metrics", "FERMILINK_RUNNER_METRICS_PORT"],
  ])(
    "exits 1 with one line naming the variable when the %s port is taken, leaving nothing running",
    async (_, variable) => {
      // A port held open by this test.
      const holder = net.createServer();
      await new Promise<void>((r) => holder.listen(0, "127.0.0.1", r));
      const taken = (holder.address() as net.AddressInfo).port;
      // A provider whose `--version` (started in the background at start-up) would run for 30 s.
      const codex = path.join(home, "slow-version-codex.sh");
      const pidFile = path.join(home, "version.pid");
      await writeFile(codex, `#!/bin/sh\necho $$ > '${pidFile}'\nexec sleep 30\n`, { mode: 0o755 });
      try {
        const m = startMain({
          FERMILINK_CODEX_BIN: codex,
          FERMILINK_RUNNER_PORT: "0",
          FERMILINK_RUNNER_METRICS_PORT: "0",
          [variable]: String(taken),
        });
        expect(await m.exited).toBe(1);
        const lines = m.output().err.trim().split("\n");
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(/^fermilink-runner: cannot listen: /);
        expect(lines[0]).toContain(`port ${taken} on 127.0.0.1 is already in use`);
        expect(lines[0]).toContain(`set ${variable} to a free port`);
        // The log (stdout) ends with the same reason, for a collector that reads only the log.
        const last = JSON.parse(m.output().out.trimEnd().split("\n").at(-1) ?? "{}");
        expect(last).toMatchObject({
          level: 60,
          msg: `start-up failed: ${lines[0]?.replace(/^fermilink-runner: /, "")}`,
        });
        // The `--version` child was stopped with the start, not left to run out its 30 s.
        const versionPid = Number(await readFile(pidFile, "utf8"));
        expect(versionPid).toBeGreaterThan(0);
        await waitUntilGone([versionPid], 3000);
      } finally {
        await new Promise((r) => holder.close(r));
      }
    },
  );

  it("exits 1 naming the variable when the run store cannot be opened, leaving nothing running", async () => {
    const storePath = path.join(home, "not-a-store.sqlite3");
    await writeFile(storePath, "not a database, ".repeat(512));
    // A provider whose `--version` (started in the background before the store is opened) would run for 30 s.
    const codex = path.join(home, "slow-version-codex.sh");
    const pidFile = path.join(home, "version.pid");
    await writeFile(codex, `#!/bin/sh\necho $$ > '${pidFile}'\nexec sleep 30\n`, { mode: 0o755 });
    const m = startMain({
      FERMILINK_CODEX_BIN: codex,
      FERMILINK_RUNNER_PORT: "0",
      FERMILINK_RUNNER_METRICS_PORT: "0",
      FERMILINK_RUNNER_STORE_PATH: storePath,
    });
    expect(await m.exited).toBe(1);
    const lines = m.output().err.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/is not a readable SQLite database .*FERMILINK_RUNNER_STORE_PATH/);
    const versionPid = await readPidFile(pidFile);
    expect(versionPid).toBeGreaterThan(0);
    await waitUntilGone([versionPid], 3000);
    expect(isAlive(versionPid)).toBe(false);
  });

  it.each([
    ["SIGTERM", 143],
    ["SIGHUP", 129],
  ] as const)(
    "a %s during start-up abandons it: what it started is stopped, and it exits %i",
    async (signal, code) => {
      // Start-up held deterministically: making the spare workspaces' git template runs `git
      // init`, here one that writes its pid, then waits for the test's word (20 s at most)
      // before the real git runs.
      const realGit = (process.env.PATH ?? "")
        .split(":")
        .map((dir) => path.join(dir, "git"))
        .find((file) => existsSync(file));
      expect(realGit).toBeDefined();
      const bin = path.join(home, "bin");
      await mkdir(bin);
      const gitPidFile = path.join(home, "git.pid");
      const release = path.join(home, "release-git");
      await writeFile(
        path.join(bin, "git"),
        `#!/bin/sh\necho $$ > '${gitPidFile}'\n` +
          `for i in $(seq 400); do [ -e '${release}' ] && break; sleep 0.05; done\n` +
          `exec '${realGit}' "$@"\n`,
        { mode: 0o755 },
      );
      // A provider whose `--version` (started in the background at start-up) would run for 30 s.
      const codex = path.join(home, "slow-version-codex.sh");
      const versionPidFile = path.join(home, "version.pid");
      await writeFile(codex, `#!/bin/sh\necho $$ > '${versionPidFile}'\nexec sleep 30\n`, {
        mode: 0o755,
      });
      const m = startMain({
        PATH: `${bin}:${process.env.PATH ?? ""}`,
        FERMILINK_CODEX_BIN: codex,
        FERMILINK_RUNNER_PORT: "0",
        FERMILINK_RUNNER_METRICS_PORT: "0",
        FERMILINK_RUNNER_SPARE_WORKSPACES: "1",
      });
      const versionPid = await readPidFile(versionPidFile);
      const gitPid = await readPidFile(gitPidFile);
      const server = m.proc.pid ?? 0;
      const children = childrenOf(server);
      // Found, or the checks below would check nothing: start-up is still waiting on git.
      expect(children).toEqual(expect.arrayContaining([versionPid, gitPid]));
      m.proc.kill(signal);
      // The start's undo waits for the step under way (git, bounded by its own timeout).
      await new Promise((r) => setTimeout(r, 200));
      await writeFile(release, "");
      expect(await m.exited).toBe(code);
      const { out } = m.output();
      expect(out).not.toContain('"msg":"runner listening"');
      expect(out).toContain(`"signal":"${signal}"`);
      expect(JSON.parse(out.trimEnd().split("\n").at(-1) ?? "{}")).toMatchObject({
        msg: "start-up abandoned",
      });
      // Nothing the start began outlives it: the `--version` child was stopped with it.
      await waitUntilGone(children, 3000);
      expect(children.filter(isAlive)).toEqual([]);
    },
  );

  it("when start-up fails, writes its whole log, ending with why, to a reader that lags, and exits 1", async () => {
    // Runs a previous process left live: start-up closes them and logs their ids in one line,
    // about 1 MB here, more than the pipe (a socket: some 200 KB) and node's buffer behind it hold.
    const store = new SqliteRunStore(path.join(home, "runner", "runs.sqlite3"));
    const ids = Array.from({ length: 800 }, (_, i) => `${i}-${"r".repeat(1250)}`);
    store.atomically(() => {
      for (const id of ids) store.createRun(runRecord(id, { status: "running" }));
    });
    await store.close();
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, "127.0.0.1", r));
    const taken = (holder.address() as net.AddressInfo).port;
    try {
      const proc = spawn(process.execPath, [...NODE_START_FLAGS, BUILT_MAIN], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? "",
          HOME: home,
          FERMILINK_HOME: home,
          FERMILINK_CODEX_BIN: FAKE_AGENT,
          FERMILINK_RUNNER_PORT: String(taken),
          FERMILINK_RUNNER_METRICS_PORT: "0",
          FERMILINK_RUNNER_SPARE_WORKSPACES: "0",
          ...NO_WARM_UP,
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      child = proc;
      // The log's reader lags: it reads stdout only once the failure is on stderr.
      let out = "";
      let err = "";
      proc.stderr?.on("data", (d: Buffer) => {
        err += d.toString();
        if (err.includes("\n") && proc.stdout?.listenerCount("data") === 0) {
          proc.stdout.on("data", (o: Buffer) => {
            out += o.toString();
          });
        }
      });
      const closedStdio = new Promise((r) => proc.once("close", r));
      expect(await new Promise((r) => proc.once("exit", r))).toBe(1);
      await closedStdio;
      expect(err).toContain(`port ${taken} on 127.0.0.1 is already in use`);
      const lines = out.trimEnd().split("\n");
      const closed = lines.find((l) => l.includes('"msg":"closed runs left live'));
      expect(closed, `the log as read: ${out.length} characters`).toBeDefined();
      expect((JSON.parse(closed ?? "{}") as { runs?: string[] }).runs).toHaveLength(ids.length);
      expect(JSON.parse(lines.at(-1) ?? "{}")).toMatchObject({
        level: 60,
        msg: expect.stringMatching(/^start-up failed: cannot listen: .* is already in use/),
      });
    } finally {
      await new Promise((r) => holder.close(r));
    }
  });

  it("on SIGTERM ends live runs with reason shutdown, leaves no provider behind and exits 0", async () => {
    const { m, rest, repo, inv } = await startMainWithLiveRun("term", "grandchild", "0.2");
    // The server tuned its own V8 (src/cli/v8-tuning.ts; its test checks the effect), said
    // in the log line right after "runner listening".
    const tuned = '"v8Flags":["--no-allocation-site-pretenuring"],"youngGenerationMb":';
    for (let i = 0; i < 100 && !m.output().out.includes(tuned); i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(m.output().out).toContain(tuned);
    // Found, or the test fails here: the checks below would pass on pid 0 and check nothing.
    const grandchild = await readPidFile(path.join(repo, "grandchild.pid"));
    m.proc.kill("SIGTERM");
    expect(JSON.parse(await lastData(rest)).reason).toBe("shutdown");
    expect(await m.exited).toBe(0);
    await waitUntilGone([inv.pid, grandchild], 5000);
    expect(isAlive(inv.pid)).toBe(false);
    expect(isAlive(grandchild)).toBe(false);
  });

  it("on SIGHUP (its terminal closed) drains as on SIGTERM: live runs end with reason shutdown", async () => {
    const { m, rest, inv } = await startMainWithLiveRun("hup", "grandchild", "0.2");
    m.proc.kill("SIGHUP");
    // Node's default for SIGHUP ends the process at once: the stream would end with no exit.
    expect(JSON.parse(await lastData(rest)).reason).toBe("shutdown");
    expect(await m.exited).toBe(0);
    expect(m.output().out).toContain('"signal":"SIGHUP"');
    await waitUntilGone([inv.pid], 5000);
    expect(isAlive(inv.pid)).toBe(false);
  });

  it("on SIGTERM writes its whole log before it exits, to a reader that lags", async () => {
    // stdout is a pipe to a collector reading 4 KB every 10 ms (≈ 400 KB/s at most).
    const got = path.join(home, "stdout");
    const reader = spawn(
      process.execPath,
      [path.join(ROOT, "test/fixtures/slow-reader.mjs"), "0", "4096", "10", got],
      { stdio: ["pipe", "ignore", "inherit"] },
    );
    const readerDone = new Promise((r) => reader.once("close", r));
    const m = startMain(
      {
        FERMILINK_CODEX_BIN: FAKE_AGENT,
        FERMILINK_RUNNER_PORT: "0",
        FERMILINK_RUNNER_METRICS_PORT: "0",
        FERMILINK_RUNNER_LOG_LEVEL: "debug",
      },
      { stdio: ["ignore", reader.stdin ?? "ignore", "inherit"] },
    );
    // The server holds the pipe now: the reader sees its end when the server exits.
    reader.stdin?.destroy();
    let port = 0;
    for (let i = 0; i < 200 && port === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const match = /"port":(\d+)/.exec(await readFile(got, "utf8").catch(() => ""));
      port = match ? Number(match[1]) : 0;
    }
    expect(port).toBeGreaterThan(0);
    // Each malformed request is a debug line of 8 KB or more (its URL): over 240 KB in a burst,
    // far more than the pipe holds, much of it still unread when the server is told to stop.
    const target = `//[${"a".repeat(8000)}`;
    for (let i = 0; i < 30; i++) {
      expect(await statusLineOf(port, `GET ${target}`)).toBe("HTTP/1.1 400 Bad Request");
    }
    m.proc.kill("SIGTERM");
    expect(await m.exited).toBe(0);
    await readerDone;
    const lines = (await readFile(got, "utf8")).trimEnd().split("\n");
    expect(lines.filter((l) => l.includes('"msg":"malformed request"'))).toHaveLength(30);
    expect(JSON.parse(lines.at(-1) ?? "{}")).toMatchObject({ msg: "runner stopped" });
  });

  it("goes on serving when its stdout's reader goes away (EPIPE), and drains on SIGTERM", async () => {
    const m = startMain({
      FERMILINK_CODEX_BIN: FAKE_AGENT,
      FERMILINK_RUNNER_PORT: "0",
      FERMILINK_RUNNER_METRICS_PORT: "0",
      FERMILINK_RUNNER_LOG_LEVEL: "debug",
    });
    const port = await portOf(m);
    // The log collector dies: every later write to stdout fails with EPIPE.
    m.proc.stdout?.destroy();
    // Each malformed request logs a line (debug), and each run several.
    for (let i = 0; i < 5; i++) {
      expect(await statusLineOf(port, `GET //[x${i}`)).toBe("HTTP/1.1 400 Bad Request");
    }
    const run = await postRun(`http://127.0.0.1:${port}`, { user_prompt: "after the log" });
    expect(run.status).toBe(200);
    expect(run.events.at(-1)?.event).toBe("runner.exit");
    expect(m.proc.exitCode).toBeNull();
    m.proc.kill("SIGTERM");
    expect(await m.exited).toBe(0);
    expect(m.output().err).not.toMatch(/EPIPE|Unhandled/);
  });

  it("started by package.json's start script as npm runs it, a SIGTERM that npm passes on drains the server", async () => {
    // npm runs a script as `sh -c <script>` and passes a SIGTERM it gets (a supervisor's, a
    // container stop) on to that shell alone. dash neither forwards it nor execs the last
    // command of `a && b`: without `exec` the shell died and the server ran on as an orphan,
    // its runs never drained.
    const pkg = JSON.parse(await readFile(path.join(ROOT, "package.json"), "utf8")) as {
      scripts: Record<string, string>;
    };
    // dist/ is built once for the whole test run, so the build step becomes `true` (same
    // `a && b` shape).
    const script = pkg.scripts.start?.replace("node scripts/build.mjs", "true") ?? "";
    expect(script).toMatch(/^true && /);
    const proc = spawn("sh", ["-c", script], {
      cwd: ROOT,
      env: {
        PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ""}`,
        HOME: home,
        FERMILINK_HOME: home,
        FERMILINK_CODEX_BIN: FAKE_AGENT,
        FERMILINK_RUNNER_PORT: "0",
        FERMILINK_RUNNER_METRICS_PORT: "0",
        FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "0.2",
        FERMILINK_RUNNER_KILL_GRACE_SECONDS: "1",
        ...FEW_SPARES,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = proc;
    let out = "";
    proc.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const exited = new Promise<number | null>((resolve) =>
      proc.once("exit", (code) => resolve(code)),
    );
    const m = { proc, exited, output: () => ({ out, err: "" }) };
    try {
      const port = await portOf(m);
      // The defaults warm the request path up before listening, every request answered as meant.
      // (On a loaded box its time bound may end it before all 1000 are sent: no fault.)
      expect(out).toMatch(/"requests":\d+,.*"failed":0,"msg":"warmed up"/);
      // The server, found by this test's own FERMILINK_HOME: the shell itself under `exec`,
      // its child otherwise.
      const server = serverPidsOf(home);
      expect(server).toHaveLength(1);
      const { rest } = await startSseRun(`http://127.0.0.1:${port}`, {
        session_id: "npm-start",
        user_prompt: "#scenario=hold",
      });
      proc.kill("SIGTERM");
      expect(await exited).toBe(0);
      expect(JSON.parse(await lastData(rest)).reason).toBe("shutdown");
      await waitUntilGone(server, 5000);
      expect(out).toContain('"msg":"runner stopped"');
    } finally {
      // A server the shell left behind (the defect) must not outlive the test.
      for (const pid of serverPidsOf(home)) killQuietly(pid);
    }
  });

  it("a repeated SIGINT or SIGTERM during the drain does not cut it short: live runs still end with reason shutdown", async () => {
    const { m, rest, inv } = await startMainWithLiveRun("twice", "slow", "1");
    m.proc.kill("SIGINT");
    // Impatient: again while the live run has its grace (the bin's launcher passes each on).
    await new Promise((r) => setTimeout(r, 200));
    m.proc.kill("SIGINT");
    m.proc.kill("SIGTERM");
    // The drain goes on to its end: the run's exit event, a clean exit, no provider left.
    expect(JSON.parse(await lastData(rest)).reason).toBe("shutdown");
    expect(await m.exited).toBe(0);
    await waitUntilGone([inv.pid], 5000);
  });

  it("loads at start-up what a first run would load: node's own pages do not grow in it", async () => {
    const m = startMain({
      FERMILINK_CODEX_BIN: FAKE_AGENT,
      FERMILINK_RUNNER_PORT: "0",
      FERMILINK_RUNNER_METRICS_PORT: "0",
    });
    const port = await portOf(m);
    for (let i = 0; i < 100 && !m.output().out.includes('"V8 tuned"'); i++)
      await new Promise((r) => setTimeout(r, 20));
    const pid = m.proc.pid as number;
    const before = await nodeBinaryKb(pid);
    expect(before).toBeGreaterThan(1000);
    // A new session (template repo, memory file, journal) and a provider's lines, to the end.
    const res = await fetch(`http://127.0.0.1:${port}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: "first", user_prompt: "hello" }),
    });
    const events: string[] = [];
    for await (const frame of parseSse(res.body as ReadableStream<Uint8Array>))
      events.push(frame.event);
    expect(events.at(-1)).toBe("runner.exit");
    // ICU's collation data (String#localeCompare) and the first Date#toISOString each made
    // this +0.6-2.9 MB; what is left is a few pages of code.
    expect((await nodeBinaryKb(pid)) - before).toBeLessThan(400);
    m.proc.kill("SIGTERM");
    expect(await m.exited).toBe(0);
  });
});
