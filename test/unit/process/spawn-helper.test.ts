/** The spawn helper with real processes: who forks, and what happens when either side dies. */
import { spawn } from "node:child_process";
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { getPriority, tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RunnerError } from "../../../src/errors/runner-error.js";
import { createLogger } from "../../../src/log/logger.js";
import { type LaunchedChild, type Launcher, StartAbandoned } from "../../../src/process/launch.js";
import { RUN_ID_ENV, reapOrphans } from "../../../src/process/reap-orphans.js";
import { findGroupExec, SpawnHelper } from "../../../src/process/spawner/spawner.js";
import { startSupervisedProcess } from "../../../src/process/supervised-process.js";
import { isAlive, killQuietly, waitUntilGone } from "../../helpers/process-census.js";
import { FAKE_AGENT } from "../../helpers/start-server.js";

const FIXTURES_BIN = path.dirname(FAKE_AGENT);
const FIXTURES = path.dirname(FIXTURES_BIN);

/** For a start expected to fail: a process that started fails the test. */
const started = async (p: { terminate(): Promise<void> }): Promise<RunnerError> => {
  await p.terminate();
  throw new Error("the process started");
};

let cwd: string;
let helper: SpawnHelper;
beforeEach(async () => {
  cwd = await mkdtemp(path.join(tmpdir(), "flr-spawner-"));
  helper = new SpawnHelper();
});
afterEach(async () => {
  await helper.close();
  await rm(cwd, { recursive: true, force: true });
});

/** The process state letter of `pid` (R, S, Z, ...), or "" when it is gone. */
const stateOf = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  } catch {
    return "";
  }
};

const parentOf = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
};

/** A supervised `sleep 30` through the helper, found by `marker` in its command line. */
const startSleeper = (marker: string, signal: AbortSignal) =>
  startSupervisedProcess(
    {
      bin: "/bin/sh",
      args: ["-c", "sleep 30; : $0", marker],
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
      cwd,
      maxLineBytes: 1 << 20,
      killGraceMs: 200,
      signal,
    },
    helper.launch,
  );

const start = (prompt: string) =>
  startSupervisedProcess(
    {
      bin: FAKE_AGENT,
      args: ["exec", "--json", "--", prompt],
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
      cwd,
      maxLineBytes: 1 << 20,
      killGraceMs: 300,
    },
    helper.launch,
  );

describe("SpawnHelper", () => {
  it("forks providers in the helper, not in the runner, and hands their pipes over", async () => {
    const p = await start("#scenario=sleep-1s");
    const helperPid = helper.helperPid;
    expect(helperPid).not.toBeNull();
    expect(parentOf(p.pid)).toBe(helperPid);
    expect(parentOf(helperPid as number)).toBe(process.pid);
    const lines: string[] = [];
    for await (const l of p.lines()) lines.push(l.text);
    expect(lines.length).toBeGreaterThan(0);
    expect((await p.exited).code).toBe(0);
    // One helper serves every run.
    const q = await start("#scenario=bench-one-line");
    for await (const _ of q.lines());
    expect(parentOf(helperPid as number)).toBe(process.pid);
    expect(helper.helperPid).toBe(helperPid);
  });

  it("when the helper dies, its runs end with their exit lost and their groups gone, and the next run gets a new helper", async () => {
    const p = await start("#scenario=grandchild");
    const first = helper.helperPid as number;
    process.kill(first, "SIGKILL");
    const exit = await p.exited;
    expect(exit).toMatchObject({ code: null, signal: null, lost: expect.stringMatching(/helper/) });
    await waitUntilGone([p.pid], 5000);
    const q = await start("#scenario=bench-one-line");
    for await (const _ of q.lines());
    expect((await q.exited).code).toBe(0);
    expect(helper.helperPid).not.toBe(first);
  });

  it("gives a start made after the helper died, before the runner handled its death, a new helper", async () => {
    const p = await start("#scenario=hold");
    const first = helper.helperPid as number;
    process.kill(first, "SIGKILL");
    // Dead, and unreaped while this spins: the event loop, which would handle its exit and its
    // channel's end, does not run until the start below has been sent. Its main thread is a
    // zombie before its other threads are gone, and they hold its end of the channel until then.
    const deadline = Date.now() + 10_000;
    while (stateOf(first) !== "Z" || readdirSync(`/proc/${first}/task`).length > 1) {
      if (Date.now() > deadline) throw new Error(`helper ${first} never died`);
    }
    const q = await start("#scenario=bench-one-line");
    const lines: string[] = [];
    for await (const l of q.lines()) lines.push(l.text);
    expect(lines.length).toBeGreaterThan(0);
    expect((await q.exited).code).toBe(0);
    expect(parentOf(helper.helperPid as number)).toBe(process.pid);
    expect(helper.helperPid).not.toBe(first);
    // The run on the dead helper still ends as lost, and the new helper's run was not taken for one of its.
    expect(await p.exited).toMatchObject({ lost: expect.stringMatching(/helper exited/) });
    await waitUntilGone([p.pid], 5000);
  });

  it("closing the helper (the runner going away) kills the groups it still runs", async () => {
    const p = await start("#scenario=slow");
    expect(isAlive(p.pid)).toBe(true);
    const helperPid = helper.helperPid as number;
    await helper.close();
    await waitUntilGone([p.pid, helperPid], 5000);
    expect(await p.exited).toMatchObject({
      signal: null,
      lost: expect.stringMatching(/closed its spawn helper/),
    });
  });

  it("a provider that exited by itself just before the helper crashed is reported lost, not SIGKILLed", async () => {
    const p = await start("#scenario=sleep-1s");
    const helperPid = helper.helperPid as number;
    // Stopped, the helper can neither reap the provider nor report its exit: it dies knowing both.
    process.kill(helperPid, "SIGSTOP");
    try {
      const deadline = Date.now() + 10_000;
      while (stateOf(p.pid) !== "Z") {
        if (Date.now() > deadline) throw new Error(`provider ${p.pid} never exited`);
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      process.kill(helperPid, "SIGKILL");
    }
    const lines: string[] = [];
    for await (const l of p.lines()) lines.push(l.text);
    expect(lines.join("\n")).toContain("sleep-1s");
    expect(await p.exited).toMatchObject({
      code: null,
      signal: null,
      killedByRunner: false,
      lost: expect.stringMatching(/spawn helper exited unexpectedly/),
    });
  });

  it("gives up on a provider the helper never reports after its SIGKILL, so teardown ends", async () => {
    let logged = "";
    const logger = createLogger(
      "warn",
      new Writable({
        write(chunk, _enc, done) {
          logged += chunk;
          done();
        },
      }),
    );
    const p = await startSupervisedProcess(
      {
        bin: FAKE_AGENT,
        args: ["exec", "--json", "--", "#scenario=slow"],
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
        cwd,
        maxLineBytes: 1 << 20,
        killGraceMs: 200,
        killWaitMs: 300,
        logger,
      },
      helper.launch,
    );
    const helperPid = helper.helperPid as number;
    // A wedged helper: the killed provider stays a zombie nobody reaps, its exit never reported.
    process.kill(helperPid, "SIGSTOP");
    try {
      const lines = (async () => {
        for await (const _ of p.lines());
      })();
      const started = Date.now();
      const hung = new Promise<"hung">((r) => setTimeout(() => r("hung"), 10_000).unref());
      expect(await Promise.race([p.terminate().then(() => "ended"), hung])).toBe("ended");
      // The grace, the group's wait after SIGKILL, then the wait for the leader's report.
      expect(Date.now() - started).toBeLessThan(5000);
      expect(stateOf(p.pid)).toBe("Z");
      expect(await p.exited).toMatchObject({
        code: null,
        signal: null,
        killedByRunner: true,
        lost: expect.stringMatching(/did not end within 300 ms of its SIGKILL/),
      });
      expect(await Promise.race([lines.then(() => "ended"), hung])).toBe("ended");
      expect(logged).toContain(`"pid":${p.pid}`);
      expect(logged).toContain("the runner stopped waiting for it");
    } finally {
      process.kill(helperPid, "SIGCONT");
    }
  });

  it("ends a start the helper does not answer within the wait once its run is aborted, and kills the provider it starts later", async () => {
    const warm = await start("#scenario=bench-one-line");
    for await (const _ of warm.lines());
    const helperPid = helper.helperPid as number;
    // A wedged helper (stopped here): the start stays unanswered, which must not hold the run
    // (its slot, its session, the runner's shutdown) until the helper answers, if ever.
    process.kill(helperPid, "SIGSTOP");
    const marker = `late-start-${process.pid}-${Date.now()}`;
    const abort = new AbortController();
    let resumed = false;
    try {
      const launching = startSleeper(marker, abort.signal);
      const outcome = launching.then(started, (e: unknown) => e);
      await new Promise((r) => setTimeout(r, 100));
      const reason = new Error("the run was cancelled");
      const abortedAt = Date.now();
      abort.abort(reason);
      const hung = new Promise<"hung">((r) => setTimeout(() => r("hung"), 3000).unref());
      // Not at once: the helper gets its second (ABANDON_WAIT_MS) to say whether it started one.
      expect(await Promise.race([outcome, hung])).toEqual(new StartAbandoned(reason, "unknown"));
      expect(Date.now() - abortedAt).toBeGreaterThanOrEqual(900);
      expect(withMarker(marker)).toEqual([]);
      // The helper, resumed, starts the provider after all: nobody supervises it, so it must die.
      process.kill(helperPid, "SIGCONT");
      resumed = true;
      // The helper still serves the next run.
      const next = await start("#scenario=bench-one-line");
      for await (const _ of next.lines());
      expect((await next.exited).code).toBe(0);
      expect(helper.helperPid).toBe(helperPid);
      // The helper answers in order: the late provider was reported before the next run's.
      await waitUntilGone(withMarker(marker), 5000);
    } finally {
      if (!resumed) process.kill(helperPid, "SIGCONT");
    }
  });

  it("closes even while a start its run gave up on is still being answered, and leaves nothing behind", async () => {
    const warm = await start("#scenario=bench-one-line");
    for await (const _ of warm.lines());
    const helperPid = helper.helperPid as number;
    const marker = `closing-start-${process.pid}-${Date.now()}`;
    const abort = new AbortController();
    const launching = helper
      .launch({
        bin: "/bin/sh",
        args: ["-c", "sleep 30; : $0", marker],
        env: {},
        cwd,
        niceness: 0,
        signal: abort.signal,
      })
      .catch((e: unknown) => e);
    // Given up on while the helper starts it: the pipes it then sends wait for an
    // acknowledgement the closing runner never gives, which held the helper's disconnect.
    const reason = new Error("aborted");
    abort.abort(reason);
    const hung = new Promise<"hung">((r) => setTimeout(() => r("hung"), 5000).unref());
    expect(await Promise.race([helper.close().then(() => "closed"), hung])).toBe("closed");
    // Whether the helper got to start it or not, nothing of it is left.
    expect(await launching).toMatchObject({ name: "StartAbandoned", reason });
    await waitUntilGone([helperPid, ...withMarker(marker)], 5000);
  });

  it("tells a start aborted before the helper's answer that its provider was started and killed", async () => {
    const marker = `killed-start-${process.pid}-${Date.now()}`;
    const abort = new AbortController();
    const launching = startSleeper(marker, abort.signal).then(started, (e: unknown) => e);
    // Sent, not answered yet: the helper forks it all the same.
    const reason = new Error("the run was cancelled");
    abort.abort(reason);
    expect(await launching).toEqual(new StartAbandoned(reason, "killed"));
    await waitUntilGone(withMarker(marker), 5000);
  });

  it("tells a start aborted before the helper's answer that none was started when the helper could not start it", async () => {
    const abort = new AbortController();
    const launching = helper
      .launch({
        bin: path.join(cwd, "missing"),
        args: [],
        env: {},
        cwd,
        niceness: 0,
        signal: abort.signal,
      })
      .catch((e: unknown) => e);
    const reason = new Error("the run was cancelled");
    abort.abort(reason);
    expect(await launching).toEqual(new StartAbandoned(reason, "not-started"));
  });

  it("closes a helper that does not answer (wedged) by killing it", async () => {
    const warm = await start("#scenario=bench-one-line");
    for await (const _ of warm.lines());
    const helperPid = helper.helperPid as number;
    process.kill(helperPid, "SIGSTOP");
    const hung = new Promise<"hung">((r) => setTimeout(() => r("hung"), 8000).unref());
    try {
      expect(await Promise.race([helper.close().then(() => "closed"), hung])).toBe("closed");
      await waitUntilGone([helperPid], 5000);
    } finally {
      killQuietly(helperPid);
    }
  });

  it("reports a binary that cannot run as the spawn error", async () => {
    const err = await helper
      .launch({ bin: path.join(cwd, "missing"), args: [], env: {}, cwd, niceness: 0 })
      .catch((e: NodeJS.ErrnoException) => e);
    expect((err as NodeJS.ErrnoException).code).toBe("ENOENT");
  });
});

/** Everything a launched child prints, once both its pipes ended. */
async function readAll(child: LaunchedChild): Promise<{ out: string; err: string }> {
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    out += d;
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    err += d;
  });
  await Promise.all([
    new Promise((r) => child.stdout.once("end", r)),
    new Promise((r) => child.stderr.once("end", r)),
  ]);
  return { out, err };
}

/** Pids of processes whose command line contains `marker`. */
function withMarker(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) pids.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

describe("SpawnHelper when its runner is killed", () => {
  it("kills every child, even while their pipes still wait to be handed over", async () => {
    const marker = `1000.${process.pid}${Date.now() % 100000}`;
    const owner = spawn(
      process.execPath,
      ["--import", "tsx", path.join(FIXTURES, "spawn-helper-owner.ts"), marker, "60"],
      { cwd: path.resolve(FIXTURES, "../.."), stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    owner.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    await new Promise((r) => owner.once("exit", r));
    const helperPid = Number(out.trim());
    expect(helperPid).toBeGreaterThan(0);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && (withMarker(marker).length > 0 || isAlive(helperPid))) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const left = withMarker(marker);
    const helperLeft = isAlive(helperPid);
    for (const pid of [...left, ...(helperLeft ? [helperPid] : [])]) killQuietly(pid);
    expect(left).toEqual([]);
    expect(helperLeft).toBe(false);
  }, 30_000);
});

describe("SpawnHelper under a burst", () => {
  it("loses no output of children that print at once and exit before their pipes are handed over", async () => {
    const runs = await Promise.all(
      Array.from({ length: 60 }, async () => {
        const child = await helper.launch({
          bin: "/bin/sh",
          args: ["-c", "seq 1 5000; seq 1 100 >&2"],
          env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
          cwd,
          niceness: 0,
        });
        return { ...(await readAll(child)), exit: await child.exit };
      }),
    );
    const seq = (n: number) => `${Array.from({ length: n }, (_, i) => i + 1).join("\n")}\n`;
    for (const r of runs) {
      expect(r.exit.code).toBe(0);
      expect(r.out).toBe(seq(5000));
      expect(r.err).toBe(seq(100));
    }
  });
});

const autogroup = (pid: number) => readFileSync(`/proc/${pid}/autogroup`, "utf8").trim();
const pgidOf = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
};
const sleeper = (h: SpawnHelper, niceness = 10) =>
  h.launch({ bin: "/bin/sleep", args: ["30"], env: {}, cwd, niceness });

describe("providers' scheduler group", () => {
  it("finds perl here (Debian's perl-base), which the shared group needs", () => {
    expect(findGroupExec()).not.toBeNull();
  });

  it("beyond two live providers, keeps each new one in the helper's autogroup, niced, leading its own process group", async () => {
    const solo = [await sleeper(helper), await sleeper(helper)];
    const helperPid = helper.helperPid as number;
    // The first two (a lone run starts without the wrapper): detached, each its own autogroup,
    // at full priority while no crowd competes with the runner.
    for (const c of solo) {
      expect(pgidOf(c.pid)).toBe(c.pid);
      expect(getPriority(c.pid)).toBe(0);
      if (existsSync("/proc/self/autogroup")) {
        expect(autogroup(c.pid)).toMatch(/nice 0$/);
        expect(autogroup(c.pid)).not.toBe(autogroup(helperPid));
      }
    }
    const kids = await Promise.all(Array.from({ length: 8 }, () => sleeper(helper)));
    // The crowd renices the first two as well.
    for (const c of solo) {
      expect(getPriority(c.pid)).toBe(10);
      if (existsSync("/proc/self/autogroup")) expect(autogroup(c.pid)).toMatch(/nice 10$/);
    }
    for (const c of kids) {
      expect(pgidOf(c.pid)).toBe(c.pid);
      expect(parentOf(c.pid)).toBe(helperPid);
      if (existsSync("/proc/self/autogroup")) {
        expect(autogroup(c.pid)).toBe(autogroup(helperPid));
        expect(autogroup(c.pid)).toMatch(/nice 10$/);
        expect(autogroup(c.pid)).not.toBe(autogroup(process.pid));
      }
    }
    for (const c of [...solo, ...kids]) process.kill(-c.pid, "SIGKILL");
    await Promise.all([...solo, ...kids].map((c) => c.exit));
  });

  it("passes exactly the given environment through the wrapper, and perl never speaks for the CLI", async () => {
    const solo = [await sleeper(helper), await sleeper(helper)];
    const envOf = async (env: Record<string, string>) => {
      const c = await helper.launch({ bin: "/usr/bin/env", args: [], env, cwd, niceness: 10 });
      const { out, err } = await readAll(c);
      return { lines: out.trim().split("\n").sort(), err };
    };
    // A locale that is not installed makes perl warn on stderr unless told not to.
    const bad = { PATH: "/usr/bin:/bin", LANG: "xx_YY.UTF-8", LC_ALL: "de_XX.UTF-8" };
    expect(await envOf(bad)).toEqual({
      lines: ["LANG=xx_YY.UTF-8", "LC_ALL=de_XX.UTF-8", "PATH=/usr/bin:/bin"],
      err: "",
    });
    // The caller's own PERL_BADLANG is the CLI's to keep.
    expect((await envOf({ ...bad, PERL_BADLANG: "1" })).lines).toContain("PERL_BADLANG=1");
    // Variables that would have perl run code of its own bypass the wrapper (started detached).
    const loud = path.join(cwd, "Loud.pm");
    writeFileSync(loud, 'package Loud; print STDERR "perl module ran\\n"; 1;\n');
    const viaPerlOpt = await envOf({ PATH: "/usr/bin:/bin", PERL5LIB: cwd, PERL5OPT: "-MLoud" });
    expect(viaPerlOpt).toEqual({
      lines: ["PATH=/usr/bin:/bin", `PERL5LIB=${cwd}`, "PERL5OPT=-MLoud"].sort(),
      err: "",
    });
    for (const c of solo) process.kill(-c.pid, "SIGKILL");
    await Promise.all(solo.map((c) => c.exit));
  });

  it("reports a provider only once it leads its group, so a kill at once reaches it", async () => {
    // A launcher that waits 300 ms before its setpgid: a child reported before then has no group
    // yet, and the kill would throw ESRCH.
    const slow = new SpawnHelper({ groupExec: path.join(FIXTURES_BIN, "slow-perl.sh") });
    try {
      const solo = [await sleeper(slow), await sleeper(slow)];
      const kids = await Promise.all(
        Array.from({ length: 5 }, async () => {
          const c = await sleeper(slow);
          process.kill(-c.pid, "SIGKILL");
          return c;
        }),
      );
      for (const c of kids) expect((await c.exit).signal).toBe("SIGKILL");
      for (const c of solo) process.kill(-c.pid, "SIGKILL");
      await Promise.all(solo.map((c) => c.exit));
    } finally {
      await slow.close();
    }
  });

  it("kills a provider that does not lead its group in time, and reports it as a spawn error", async () => {
    // perl that takes 300 ms to reach its setpgid, against a deadline of 50 ms.
    const late = new SpawnHelper({
      groupExec: path.join(FIXTURES_BIN, "slow-perl.sh"),
      groupLeaderDeadlineMs: 50,
    });
    try {
      const solo = [await sleeper(late), await sleeper(late)];
      const marker = `31.${process.pid}${Date.now() % 100000}`;
      const err = await late
        .launch({ bin: "/bin/sleep", args: [marker], env: {}, cwd, niceness: 0 })
        .catch((e: NodeJS.ErrnoException) => e);
      expect((err as NodeJS.ErrnoException).code).toBe("ETIMEDOUT");
      // Neither the wrapper nor the CLI it would have become is left running.
      await new Promise((r) => setTimeout(r, 600));
      expect(withMarker(marker)).toEqual([]);
      for (const c of solo) process.kill(-c.pid, "SIGKILL");
      await Promise.all(solo.map((c) => c.exit));
    } finally {
      await late.close();
    }
  });

  it("closes the pipes of a child that could not be started (no descriptor leaks)", async () => {
    const fail = () =>
      helper
        .launch({ bin: path.join(cwd, "missing"), args: [], env: {}, cwd, niceness: 0 })
        .catch(() => {});
    await fail();
    const fds = () => readdirSync(`/proc/${helper.helperPid}/fd`).length;
    const before = fds();
    for (let i = 0; i < 50; i++) await fail();
    expect(fds()).toBeLessThanOrEqual(before + 2);
  });

  it("reports a binary that cannot run as the spawn error, as node would", async () => {
    const notExecutable = path.join(cwd, "plain.txt");
    writeFileSync(notExecutable, "not a program");
    const err = await helper
      .launch({ bin: notExecutable, args: [], env: {}, cwd, niceness: 0 })
      .catch((e: NodeJS.ErrnoException) => e);
    expect((err as NodeJS.ErrnoException).code).toBe("EACCES");
  });

  it("reports a CLI that cannot be executed through the perl wrapper as the spawn error, not a run exiting 127", async () => {
    const solo = [await sleeper(helper), await sleeper(helper)];
    // Executable, but its interpreter is missing: only the exec itself can tell.
    const badShebang = path.join(cwd, "bad-shebang");
    writeFileSync(badShebang, "#!/nonexistent/interpreter\necho never\n");
    chmodSync(badShebang, 0o755);
    const failure = (bin: string) =>
      helper.launch({ bin, args: [], env: { PATH: "/usr/bin:/bin" }, cwd, niceness: 0 }).then(
        async (c) => ({ started: true, exit: await c.exit }),
        (e: NodeJS.ErrnoException) => ({ started: false, code: e.code, message: e.message }),
      );
    // The same code node's own spawn reports (as for the first two, started without the wrapper).
    expect(await failure(badShebang)).toEqual({
      started: false,
      code: "ENOENT",
      message: `spawn ${badShebang} ENOENT`,
    });
    // A bare name is looked up on the child's PATH by the wrapper's exec.
    expect(await failure("no-such-cli-anywhere")).toMatchObject({ started: false, code: "ENOENT" });
    // As the caller sees it: the binary's fault.
    const err = await startSupervisedProcess(
      { bin: badShebang, args: [], env: {}, cwd, maxLineBytes: 1024, killGraceMs: 100 },
      helper.launch,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RunnerError);
    expect((err as RunnerError).code).toBe("PROVIDER_BINARY_MISSING");
    // A CLI that does start is not held back and keeps no extra descriptor (ls is not the last
    // command, so the shell does not exec it: the listing is the shell's own descriptors).
    const ok = await helper.launch({
      bin: "/bin/sh",
      args: ["-c", "ls /proc/$$/fd; true"],
      env: { PATH: "/usr/bin:/bin" },
      cwd,
      niceness: 0,
    });
    const { out } = await readAll(ok);
    // (Descriptors the test runner itself inherited, numbered high, may show too.)
    expect(out.trim().split("\n")).not.toContain("3");
    for (const c of solo) process.kill(-c.pid, "SIGKILL");
    await Promise.all(solo.map((c) => c.exit));
  });

  it("reports the helper's own failures as PROVIDER_START_FAILED, never as a missing binary", async () => {
    const startWith = (launch: Launcher, bin: string, env: Record<string, string> = {}) =>
      startSupervisedProcess(
        { bin, args: ["30"], env, cwd, maxLineBytes: 1024, killGraceMs: 100 },
        launch,
      ).catch((e: unknown) => e);
    const expectStartFailed = (err: unknown, why: RegExp) => {
      expect(err).toBeInstanceOf(RunnerError);
      expect((err as RunnerError).code).toBe("PROVIDER_START_FAILED");
      expect((err as RunnerError).message).toMatch(why);
      expect((err as RunnerError).message).toMatch(/not a problem with the CLI/);
    };
    // The group-leader deadline missed (a wrapper 300 ms slow, against 50 ms).
    const late = new SpawnHelper({
      groupExec: path.join(FIXTURES_BIN, "slow-perl.sh"),
      groupLeaderDeadlineMs: 50,
    });
    try {
      const solo = [await sleeper(late), await sleeper(late)];
      expectStartFailed(await startWith(late.launch, "/bin/sleep"), /ETIMEDOUT/);
      for (const c of solo) process.kill(-c.pid, "SIGKILL");
      await Promise.all(solo.map((c) => c.exit));
    } finally {
      await late.close();
    }
    // The helper dies while a provider is starting.
    const doomed = new SpawnHelper({ groupExec: path.join(FIXTURES_BIN, "slow-perl.sh") });
    try {
      const solo = [await sleeper(doomed), await sleeper(doomed)];
      // Nobody supervises the provider the dead helper was starting: the runner's orphan sweep
      // finds it by its run id, as this test does (it would otherwise outlive the test).
      const runId = `doomed-${process.pid}`;
      const pending = startWith(doomed.launch, "/bin/sleep", { [RUN_ID_ENV]: runId });
      await new Promise((r) => setTimeout(r, 100));
      process.kill(doomed.helperPid as number, "SIGKILL");
      expectStartFailed(await pending, /spawn helper exited/);
      expect((await reapOrphans(new Set([runId]))).length).toBeGreaterThan(0);
      await Promise.all(solo.map((c) => c.exit));
    } finally {
      await doomed.close();
    }
  });

  it("reports an exec wrapper that cannot be executed (perl gone after start-up) as the runner's start failure, naming perl", async () => {
    const gone = path.join(cwd, "perl-removed");
    const notExecutable = path.join(cwd, "perl-not-executable");
    writeFileSync(notExecutable, '#!/bin/sh\nexec perl "$@"\n');
    const beingReplaced = path.join(cwd, "perl-being-replaced");
    copyFileSync(path.join(FIXTURES_BIN, "slow-perl.sh"), beingReplaced);
    chmodSync(beingReplaced, 0o755);
    const writer = openSync(beingReplaced, "r+");
    try {
      for (const [groupExec, code, fix] of [
        [gone, "ENOENT", /FERMILINK_RUNNER_SPAWN_HELPER=0/],
        [notExecutable, "EACCES", /reinstall perl/],
        [beingReplaced, "ETXTBSY", /upgrade of perl in progress/],
      ] as const) {
        const h = new SpawnHelper({ groupExec });
        try {
          // The first two are started without the wrapper; the third goes through it.
          const solo = [await sleeper(h), await sleeper(h)];
          const err = await startSupervisedProcess(
            { bin: "/bin/sleep", args: ["30"], env: {}, cwd, maxLineBytes: 1024, killGraceMs: 100 },
            h.launch,
          ).then(started, (e: unknown) => e as RunnerError);
          expect(err).toBeInstanceOf(RunnerError);
          expect(err.code).toBe("PROVIDER_START_FAILED");
          expect(err.message).toContain(`exec wrapper ${groupExec} cannot be executed (${code})`);
          expect(err.message).toMatch(/not a problem with the CLI/);
          expect(err.message).toMatch(fix);
          for (const c of solo) process.kill(-c.pid, "SIGKILL");
          await Promise.all(solo.map((c) => c.exit));
        } finally {
          await h.close();
        }
      }
    } finally {
      closeSync(writer);
    }
  });

  it("through the wrapper, blames neither perl nor the CLI for an oversized command or a missing directory", async () => {
    const solo = [await sleeper(helper), await sleeper(helper)];
    const startFailure = (args: string[], dir: string) =>
      startSupervisedProcess(
        { bin: "/bin/true", args, env: {}, cwd: dir, maxLineBytes: 1024, killGraceMs: 100 },
        helper.launch,
      ).then(started, (e: unknown) => e as RunnerError);
    const big = await startFailure(["x".repeat(200_000)], cwd);
    expect(big.code).toBe("PROVIDER_START_FAILED");
    expect(big.message).toMatch(/E2BIG/);
    expect(big.message).not.toMatch(/wrapper/);
    const gone = path.join(cwd, "removed-repo");
    const noDir = await startFailure([], gone);
    expect(noDir.code).toBe("PROVIDER_START_FAILED");
    expect(noDir.message).toContain(`working directory ${gone} is missing`);
    for (const c of solo) process.kill(-c.pid, "SIGKILL");
    await Promise.all(solo.map((c) => c.exit));
  });

  it("without perl, detaches each provider into its own session and autogroup instead", async () => {
    const alone = new SpawnHelper({ groupExec: null });
    try {
      const kids = await Promise.all(Array.from({ length: 3 }, () => sleeper(alone, 7)));
      for (const c of kids) {
        expect(pgidOf(c.pid)).toBe(c.pid);
        expect(getPriority(c.pid)).toBe(7);
        if (existsSync("/proc/self/autogroup")) {
          expect(autogroup(c.pid)).toMatch(/nice 7$/);
          expect(autogroup(c.pid)).not.toBe(autogroup(alone.helperPid as number));
        }
      }
      expect(autogroup(kids[0]?.pid as number)).not.toBe(autogroup(kids[1]?.pid as number));
      for (const c of kids) process.kill(-c.pid, "SIGKILL");
      await Promise.all(kids.map((c) => c.exit));
    } finally {
      await alone.close();
    }
  });
});
