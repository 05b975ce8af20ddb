import { chmodSync, closeSync, copyFileSync, openSync, writeFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { getPriority, tmpdir } from "node:os";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { RunnerError } from "../../../src/errors/runner-error.js";
import { type Launcher, spawnDirect } from "../../../src/process/launch.js";
import { RUN_ID_ENV } from "../../../src/process/reap-orphans.js";
import { SpawnHelper } from "../../../src/process/spawner/spawner.js";
import {
  PIPES_AFTER_GROUP_MS,
  type ProcessLine,
  startSupervisedProcess,
} from "../../../src/process/supervised-process.js";
import { isAlive, waitUntilGone } from "../../helpers/process-census.js";
import { FAKE_AGENT } from "../../helpers/start-server.js";

/** For a start expected to fail: a process that started fails the test. */
const started = async (p: { terminate(): Promise<void> }): Promise<RunnerError> => {
  await p.terminate();
  throw new Error("the process started");
};

let cwd: string;
beforeEach(async () => {
  cwd = await mkdtemp(path.join(tmpdir(), "flr-proc-"));
});
afterEach(async () => {
  await rm(cwd, { recursive: true, force: true });
});

const helper = new SpawnHelper();
afterAll(() => helper.close());
/** The launcher of the describe block running now (both run every test). */
let launcher: Launcher = spawnDirect;

const start = (prompt: string, killGraceMs = 300) =>
  startSupervisedProcess(
    {
      bin: FAKE_AGENT,
      args: ["exec", "--json", "--", prompt],
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
      cwd,
      maxLineBytes: 1 << 20,
      killGraceMs,
    },
    launcher,
  );

async function all(lines: AsyncIterable<ProcessLine>) {
  const out: ProcessLine[] = [];
  for await (const l of lines) out.push(l);
  return out;
}

/** Pids of the processes whose environment names `runId`. */
async function withRunId(runId: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const env = await readFile(`/proc/${entry}/environ`, "utf8").catch(() => "");
    if (env.split("\0").includes(`${RUN_ID_ENV}=${runId}`)) pids.push(Number(entry));
  }
  return pids;
}

async function pidFile(name: string): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const text = await readFile(path.join(cwd, ".fake-agent", name), "utf8").catch(() => "");
    if (Number(text) > 0) return Number(text);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no ${name}`);
}

describe.each([
  ["forked by the runner", spawnDirect],
  ["forked by the spawn helper", helper.launch],
] as const)("startSupervisedProcess, %s", (_name, launch) => {
  beforeEach(() => {
    launcher = launch;
  });

  it("streams stdout and stderr lines and passes the exit code through, with stdin from /dev/null", async () => {
    const p = await start("#scenario=stderr-and-exit-3");
    const lines = await all(p.lines());
    expect(lines).toEqual([
      { stream: "stderr", text: "something failed", truncated: false },
      {
        stream: "stdout",
        text: '{"type":"turn.failed","error":{"message":"boom"}}',
        truncated: false,
      },
    ]);
    expect(await p.exited).toEqual({ code: 3, signal: null, killedByRunner: false });
    const inv = JSON.parse(
      await readFile(path.join(cwd, ".fake-agent", "invocation.json"), "utf8"),
    );
    expect(inv.stdin).toBe("devnull");
    expect(inv.env).toEqual({ PATH: process.env.PATH ?? "/usr/bin:/bin" });
    expect(isAlive(p.pid)).toBe(false);
  });

  it("keeps no batch it has handed out while the other pipe stays silent", async () => {
    // A batch the consumer dropped must be collectable while the process still runs
    // (a merge by Promise.race kept every stdout batch reachable from the silent
    // stderr pull until the process ended: tens of MB per long run).
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc") as () => void;
    const p = await start("#scenario=lines-then-sleep");
    const it = p.lineBatches()[Symbol.asyncIterator]();
    // Read in a function of its own that has returned before the count: a suspended async
    // frame can keep the last batch it saw in a register, which would count against the runner.
    const readBatches = async (): Promise<WeakRef<object>[]> => {
      const refs: WeakRef<object>[] = [];
      let lines = 0;
      while (lines < 3000) {
        const r = await it.next();
        if (r.done) throw new Error("ended early");
        lines += r.value.length;
        refs.push(new WeakRef(r.value));
      }
      return refs;
    };
    const handedOut = await readBatches();
    expect(isAlive(p.pid)).toBe(true);
    // WeakRefs made in this job hold their target until it ends: collect after a turn.
    await new Promise((r) => setTimeout(r, 0));
    gc();
    await new Promise((r) => setTimeout(r, 0));
    const kept = handedOut.filter((w) => w.deref() !== undefined).length;
    expect(handedOut.length).toBeGreaterThan(3);
    expect(kept).toBeLessThanOrEqual(1);
    await p.terminate();
    await it.return?.();
  });

  it("terminate kills the leader and its grandchild (whole process group)", async () => {
    const p = await start("#scenario=grandchild");
    const grandchild = await pidFile("grandchild.pid");
    expect(isAlive(grandchild)).toBe(true);
    await p.terminate();
    await waitUntilGone([p.pid, grandchild], 5000);
    const exit = await p.exited;
    expect(exit.killedByRunner).toBe(true);
    expect(exit.signal).toBe("SIGTERM");
  });

  it("lowers the provider's priority, and its own scheduler group's where the kernel has one", async () => {
    // The helper lowers it only once more than two providers are alive (spawn-helper.test.ts):
    // two others are alive here.
    const others =
      launcher === spawnDirect
        ? []
        : [await start("#scenario=sleep-1s"), await start("#scenario=sleep-1s")];
    const p = await startSupervisedProcess(
      {
        bin: FAKE_AGENT,
        args: ["exec", "--json", "--", "#scenario=sleep-1s"],
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
        cwd,
        maxLineBytes: 1 << 20,
        killGraceMs: 300,
        niceness: 7,
      },
      launcher,
    );
    expect(getPriority(p.pid)).toBe(7);
    // A detached provider has its own autogroup (setsid); nice inside it alone would not yield.
    const group = await readFile(`/proc/${p.pid}/autogroup`, "utf8").catch(() => null);
    if (group !== null) {
      expect(group).toMatch(/nice 7$/m);
      expect(group).not.toBe(await readFile("/proc/self/autogroup", "utf8"));
    }
    await p.terminate();
    await Promise.all(others.map((o) => o.terminate()));
  });

  it("SIGKILLs a leader that ignores SIGTERM after the grace period", async () => {
    const p = await start("#scenario=ignore-sigterm", 200);
    const it = p.lines()[Symbol.asyncIterator]();
    await it.next();
    await p.terminate();
    expect(await p.exited).toMatchObject({ signal: "SIGKILL", killedByRunner: true });
    await it.return?.();
  });

  it("ends lines() and kills an orphaned grandchild when the leader exits by itself", async () => {
    const p = await start("#scenario=orphan");
    const lines = await all(p.lines());
    expect(lines.some((l) => l.text.includes("turn.started"))).toBe(true);
    const grandchild = await pidFile("grandchild.pid");
    await waitUntilGone([grandchild], 5000);
    expect((await p.exited).code).toBe(0);
  });

  it.each([
    ["exits by itself", false],
    ["is terminated", true],
  ])(
    "ends lines() and kills a process that left the group holding the pipes, when the leader %s",
    async (_, abort) => {
      // `setsid` takes the sleep out of the group (and out of any group kill) with the pipes open;
      // the leader gives it 0.3 s to do so before it goes on.
      const runId = `escaped-${process.pid}-${Date.now()}`;
      const p = await startSupervisedProcess(
        {
          bin: "/bin/sh",
          args: [
            "-c",
            `setsid sleep 30 & sleep 0.3; echo started; ${abort ? "exec sleep 60" : "exit 3"}`,
          ],
          env: { PATH: process.env.PATH ?? "/usr/bin:/bin", [RUN_ID_ENV]: runId },
          cwd,
          maxLineBytes: 1 << 20,
          killGraceMs: 200,
        },
        launcher,
      );
      const it = p.lines()[Symbol.asyncIterator]();
      expect((await it.next()).value).toMatchObject({ text: "started" });
      const escaped = (await withRunId(runId)).filter((pid) => pid !== p.pid);
      expect(escaped.length).toBe(1);
      if (abort) void p.terminate();
      const t0 = Date.now();
      expect((await it.next()).done).toBe(true);
      expect(Date.now() - t0).toBeLessThan(PIPES_AFTER_GROUP_MS + 3000);
      expect(await p.exited).toMatchObject(abort ? { signal: "SIGTERM" } : { code: 3 });
      await waitUntilGone(escaped, 5000);
    },
  );

  it("delivers what the pipes still hold, however far behind its consumer, once a process exited", async () => {
    // 150 KB written at once fits in the pipes: the process exits before the consumer reads on.
    // The cut for pipes held past the group must not drop it (it ended the lines 2 s after the
    // exit, whatever was still unread).
    const script = `const l = (s) => s.repeat(99) + "\\n";
      process.stderr.write(l("e").repeat(300)); process.stdout.write(l("o").repeat(1200));`;
    const p = await startSupervisedProcess(
      {
        bin: process.execPath,
        args: ["-e", script],
        env: {},
        cwd,
        maxLineBytes: 1 << 20,
        killGraceMs: 200,
      },
      launcher,
    );
    const it = p.lineBatches()[Symbol.asyncIterator]();
    const lines: ProcessLine[] = [];
    const first = await it.next();
    if (!first.done) lines.push(...first.value);
    expect((await p.exited).code).toBe(0);
    await new Promise((r) => setTimeout(r, PIPES_AFTER_GROUP_MS + 500));
    for (let r = await it.next(); !r.done; r = await it.next()) lines.push(...r.value);
    expect(lines.filter((l) => l.stream === "stdout").length).toBe(1200);
    expect(lines.filter((l) => l.stream === "stderr").length).toBe(300);
  });

  it("ends lines() even when a process out of the group, without the run id, never stops writing", async () => {
    const p = await startSupervisedProcess(
      {
        bin: "/bin/sh",
        // 0.3 s for \`setsid\` to leave the group before the group is killed.
        args: ["-c", `setsid yes & echo $! > ${cwd}/yes.pid; sleep 0.3; exit 0`],
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
        cwd,
        maxLineBytes: 1 << 20,
        killGraceMs: 200,
      },
      launcher,
    );
    try {
      let n = 0;
      for await (const batch of p.lineBatches()) n += batch.length;
      expect(n).toBeGreaterThan(0);
    } finally {
      process.kill(Number(await readFile(path.join(cwd, "yes.pid"), "utf8")), "SIGKILL");
    }
  });

  it("terminates the process when the consumer abandons lines()", async () => {
    const p = await start("#scenario=slow");
    for await (const _ of p.lines()) break;
    await waitUntilGone([p.pid], 5000);
    expect((await p.exited).killedByRunner).toBe(true);
  });

  it("keeps the pipes read until the group is gone when the consumer abandons lines(), so a provider's shutdown output does not fail", async () => {
    // Past the pipes' buffers, written as it handles SIGTERM: pipes closed under it fail the
    // write (EPIPE, exit 6 here); pipes left unread block it until its SIGKILL.
    const script = `process.on("SIGTERM", () => {
        const line = "z".repeat(99) + "\\n";
        for (let i = 0; i < 20000; i++) process.stdout.write(line);
        process.stdout.write("bye\\n", (err) => process.exit(err ? 6 : 0));
      });
      process.stdout.on("error", () => {});
      process.stdout.write("ready\\n");
      setInterval(() => {}, 1000);`;
    const p = await startSupervisedProcess(
      {
        bin: process.execPath,
        args: ["-e", script],
        env: {},
        cwd,
        maxLineBytes: 1 << 20,
        // Far past the test's timeout: only a provider that ends by itself ends this test.
        killGraceMs: 60_000,
      },
      launcher,
    );
    for await (const line of p.lines()) {
      expect(line.text).toBe("ready");
      break;
    }
    expect(await p.exited).toEqual({ code: 0, signal: null, killedByRunner: true });
    expect(isAlive(p.pid)).toBe(false);
  });

  it("reports every read from the pipes, also one that completes no line (\\r progress past maxLineBytes)", async () => {
    // The second write comes only once the first one's cut line was seen: it completes no line.
    const script = `process.stdout.write("\\r 10%".repeat(40));
      const gate = setInterval(() => {
        if (!require("fs").existsSync("gate")) return;
        clearInterval(gate);
        process.stdout.write("\\r 99%".repeat(40));
      }, 10);`;
    const p = await startSupervisedProcess(
      {
        bin: process.execPath,
        args: ["-e", script],
        env: {},
        cwd,
        maxLineBytes: 64,
        killGraceMs: 300,
      },
      launcher,
    );
    const seen: string[] = [];
    for await (const batch of p.lineBatches(() => seen.push("output"))) {
      for (const line of batch) seen.push(line.truncated ? "cut line" : "line");
      writeFileSync(path.join(cwd, "gate"), "");
    }
    expect(seen.filter((s) => s !== "output")).toEqual(["cut line"]);
    expect(seen.lastIndexOf("output")).toBeGreaterThan(seen.indexOf("cut line"));
    expect((await p.exited).code).toBe(0);
  });

  it("pauses a flooding child while the consumer does not pull (backpressure)", async () => {
    const p = await start("#scenario=flood");
    const it = p.lines()[Symbol.asyncIterator]();
    await it.next();
    await new Promise((r) => setTimeout(r, 500));
    // The child cannot have written 100,000 lines: the pipe is full and it waits on drain.
    expect(isAlive(p.pid)).toBe(true);
    let n = 1;
    while (!(await it.next()).done) n++;
    expect(n).toBe(100_000);
  });

  it("says what is wrong with a CLI that cannot be executed, and what to do (PROVIDER_BINARY_MISSING)", async () => {
    const failure = (bin: string) =>
      startSupervisedProcess(
        { bin, args: [], env: {}, cwd, maxLineBytes: 1024, killGraceMs: 100 },
        launcher,
      ).then(started, (e: unknown) => e as RunnerError);
    // Open for writing (an upgrade replacing it): the kernel refuses to execute it.
    const busy = path.join(cwd, "busy-cli");
    copyFileSync("/bin/true", busy);
    chmodSync(busy, 0o755);
    const writer = openSync(busy, "r+");
    try {
      const err = await failure(busy);
      expect(err).toBeInstanceOf(RunnerError);
      expect(err.code).toBe("PROVIDER_BINARY_MISSING");
      expect(err.message).toContain(busy);
      expect(err.message).toMatch(/open for writing.*\(ETXTBSY\).*Retry the run once/);
    } finally {
      closeSync(writer);
    }
    const plain = path.join(cwd, "plain-cli");
    writeFileSync(plain, "#!/bin/sh\n");
    const denied = await failure(plain);
    expect(denied.code).toBe("PROVIDER_BINARY_MISSING");
    expect(denied.message).toMatch(/EACCES.*not executable.*chmod \+x/);
  });

  it("blames an oversized command, not the CLI, for E2BIG (PROVIDER_START_FAILED, no pointless retry)", async () => {
    const err = await startSupervisedProcess(
      {
        bin: "/bin/true",
        // One argument over the kernel's 128 KiB per string.
        args: ["x".repeat(200_000)],
        env: {},
        cwd,
        maxLineBytes: 1024,
        killGraceMs: 100,
      },
      launcher,
    ).then(started, (e: unknown) => e as RunnerError);
    expect(err).toBeInstanceOf(RunnerError);
    expect(err.code).toBe("PROVIDER_START_FAILED");
    expect(err.message).toMatch(/E2BIG/);
    expect(err.message).toMatch(/not a problem with the CLI/);
    expect(err.message).toMatch(/FERMILINK_RUNNER_ENV_PASSTHROUGH/);
    expect(err.message).toMatch(/retrying the same run will not help/);
  });

  it("blames the run's directory, not the CLI, when it is gone", async () => {
    const gone = path.join(cwd, "removed-repo");
    const err = await startSupervisedProcess(
      { bin: "/bin/true", args: [], env: {}, cwd: gone, maxLineBytes: 1024, killGraceMs: 100 },
      launcher,
    ).then(started, (e: unknown) => e as RunnerError);
    expect(err).toBeInstanceOf(RunnerError);
    expect(err.code).toBe("PROVIDER_START_FAILED");
    expect(err.message).toContain(`working directory ${gone} is missing`);
  });

  it("refuses a missing or non-executable binary with PROVIDER_BINARY_MISSING", async () => {
    for (const bin of [path.join(cwd, "nope"), path.join(cwd)]) {
      const err = await startSupervisedProcess(
        {
          bin,
          args: [],
          env: {},
          cwd,
          maxLineBytes: 1024,
          killGraceMs: 100,
        },
        launcher,
      ).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RunnerError);
      expect((err as RunnerError).code).toBe("PROVIDER_BINARY_MISSING");
    }
  });
});
