/** The spawn helper with real processes: who forks, and what happens when either side dies. */
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SpawnHelper } from "../../../src/process/spawner/spawner.js";
import { startSupervisedProcess } from "../../../src/process/supervised-process.js";
import { crowdNice } from "../../../src/process/yield-cpu.mjs";
import { isAlive, waitUntilGone } from "../../helpers/process-census.js";
import { FAKE_AGENT } from "../../helpers/start-server.js";

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

const parentOf = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
};

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

  it("when the helper dies, its runs end as SIGKILLed with their groups gone, and the next run gets a new helper", async () => {
    const p = await start("#scenario=grandchild");
    const first = helper.helperPid as number;
    process.kill(first, "SIGKILL");
    const exit = await p.exited;
    expect(exit.signal).toBe("SIGKILL");
    await waitUntilGone([p.pid], 5000);
    const q = await start("#scenario=bench-one-line");
    for await (const _ of q.lines());
    expect((await q.exited).code).toBe(0);
    expect(helper.helperPid).not.toBe(first);
  });

  it("closing the helper (the runner going away) kills the groups it still runs", async () => {
    const p = await start("#scenario=slow");
    expect(isAlive(p.pid)).toBe(true);
    const helperPid = helper.helperPid as number;
    await helper.close();
    await waitUntilGone([p.pid, helperPid], 5000);
    expect((await p.exited).signal).toBe("SIGKILL");
  });

  it("reports a binary that cannot run as the spawn error", async () => {
    const err = await helper
      .launch({ bin: path.join(cwd, "missing"), args: [], env: {}, cwd, niceness: 0 })
      .catch((e: NodeJS.ErrnoException) => e);
    expect((err as NodeJS.ErrnoException).code).toBe("ENOENT");
  });
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
        return { out, err, exit: await child.exit };
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

describe("provider autogroups in a crowd", () => {
  it("keeps a few providers at their nice value and lowers every live one as the crowd grows", () => {
    expect([1, 4, 5, 8, 9, 16, 17, 200].map((n) => crowdNice(10, n))).toEqual([
      10, 10, 13, 13, 16, 16, 19, 19,
    ]);
    expect(crowdNice(0, 200)).toBe(0);
    expect(crowdNice(18, 8)).toBe(19);
  });

  it("re-nices the live providers' autogroups when more start and when they end", async () => {
    if (!existsSync("/proc/self/autogroup")) return; // no autogroups: nothing to weigh
    const groupNice = (pid: number) =>
      Number(/nice (-?\d+)/.exec(readFileSync(`/proc/${pid}/autogroup`, "utf8"))?.[1]);
    const launch = () =>
      helper.launch({ bin: "/bin/sleep", args: ["30"], env: {}, cwd, niceness: 10 });
    const first = await Promise.all(Array.from({ length: 4 }, launch));
    expect(first.map((c) => groupNice(c.pid))).toEqual([10, 10, 10, 10]);
    const more = await Promise.all(Array.from({ length: 6 }, launch));
    const all = [...first, ...more];
    // Ten live: each doubling beyond four lowers them by 3 (10 -> 16), the first four included.
    expect(all.map((c) => groupNice(c.pid))).toEqual(Array(10).fill(16));
    for (const c of more) process.kill(-c.pid, "SIGKILL");
    await Promise.all(more.map((c) => c.exit));
    expect(first.map((c) => groupNice(c.pid))).toEqual([10, 10, 10, 10]);
    for (const c of first) process.kill(-c.pid, "SIGKILL");
    await Promise.all(first.map((c) => c.exit));
  });
});
