/**
 * The read-only sandbox for real: the bwrap this machine has, around the
 * command opencode's adapter builds (with the fake agent, or a shell, in
 * opencode's place), started the way the runner starts providers.
 */
import { execFile, spawn } from "node:child_process";
import {
  chmod,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  symlink,
  unlink,
  writeFile,
} from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AgentPolicy } from "../../../src/events/run-event.js";
import { type Launcher, spawnDirect } from "../../../src/process/launch.js";
import { RUN_ID_ENV } from "../../../src/process/reap-orphans.js";
import { SpawnHelper } from "../../../src/process/spawner/spawner.js";
import { startSupervisedProcess } from "../../../src/process/supervised-process.js";
import { PROJECT_ROOT } from "../../../src/project-root.js";
import type { CommandSpec } from "../../../src/providers/provider-adapter.js";
import {
  bwrapForRun,
  findWorkingBwrap,
  maybeSandboxExecFailure,
  RETRY_LOOKUP_MS,
  sandboxExecFailure,
} from "../../../src/providers/read-only-sandbox.js";
import { getProviderAdapter } from "../../../src/providers/registry.js";
import { isAlive, killQuietly, waitUntilGone } from "../../helpers/process-census.js";
import { FAKE_AGENT } from "../../helpers/start-server.js";

const PATH = process.env.PATH ?? "/usr/bin:/bin";
const lookup = await findWorkingBwrap(PATH);
const READ_ONLY: AgentPolicy = {
  provider: "opencode",
  sandboxPolicy: "enforce",
  sandboxMode: "read-only",
  model: null,
  reasoningEffort: null,
};

let session: string;
let repo: string;
beforeEach(async () => {
  // Under /var/tmp, not /tmp: the sandbox's writable dirs must not hide inside a writable parent.
  session = await mkdtemp(path.join("/var/tmp", "flr-ro-"));
  repo = path.join(session, "repo");
  await mkdir(repo);
});
afterEach(async () => {
  await rm(session, { recursive: true, force: true });
});

/** opencode's read-only command with `bin` in opencode's place, its dirs created as the runner does. */
async function command(bin: string, prompt: string): Promise<CommandSpec> {
  const spec = getProviderAdapter("opencode").buildCommand({
    bin,
    repoDir: repo,
    prompt,
    policy: READ_ONLY,
    hostEnv: { PATH },
    envPassthrough: [],
    runDir: session,
    bwrap: lookup.bin,
  });
  for (const dir of spec.dirs ?? []) await mkdir(dir, { recursive: true });
  return spec;
}

/** `sh -c script` inside the sandbox (opencode's argv ignored: the script is run by `sh -c`). */
async function inSandbox(script: string): Promise<{ code: number; out: string }> {
  const spec = await command("/bin/sh", "x");
  const end = spec.args.indexOf("--");
  const args = [...spec.args.slice(0, end + 1), "/bin/sh", "-c", script];
  return new Promise((resolve) => {
    execFile(spec.bin, args, { cwd: repo, env: spec.env }, (err, stdout, stderr) => {
      resolve({ code: err ? Number(err.code ?? 1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

describe("findWorkingBwrap", () => {
  it("tries each bwrap it finds and passes over one that cannot make a sandbox here", async () => {
    // A bwrap as one refused by a container without user namespaces says it.
    const dir = await mkdtemp(path.join("/var/tmp", "flr-bwrap-"));
    try {
      const broken = path.join(dir, "bin", "bwrap");
      await mkdir(path.dirname(broken));
      await writeFile(
        broken,
        "#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n",
      );
      await chmod(broken, 0o755);
      const alone = await findWorkingBwrap(path.dirname(broken), dir);
      expect(alone).toEqual({
        bin: null,
        version: null,
        refused: [`${broken} (bwrap: setting up uid map: Permission denied)`],
      });
      // Then codex's bundled one, where this project has it and it works.
      const withCodex = await findWorkingBwrap(path.dirname(broken), PROJECT_ROOT);
      expect(withCodex.refused).toEqual(alone.refused);
      expect(withCodex.bin).toBe(lookup.bin?.startsWith(PROJECT_ROOT) ? lookup.bin : null);
      // A read-only opencode run then keeps opencode's own permissions, and the log says so once.
      const warnings: string[] = [];
      const logger = { warn: (_: object, msg: string) => void warnings.push(msg) };
      const opencode = getProviderAdapter("opencode");
      for (let i = 0; i < 2; i++)
        expect(await bwrapForRun(opencode, READ_ONLY, path.dirname(broken), logger, dir)).toBe(
          null,
        );
      expect(warnings).toEqual([
        expect.stringMatching(/^No working bubblewrap .*its shell can still write/),
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("sandboxExecFailure", () => {
  const BIN = "/opt/opencode/bin/opencode";
  it("reads bwrap's report of an exec that failed, in glibc's and musl's words", () => {
    const missing = sandboxExecFailure(BIN, 1, `bwrap: execvp ${BIN}: No such file or directory`);
    expect(missing?.code).toBe("ENOENT");
    expect(sandboxExecFailure(BIN, 1, `bwrap: execvp ${BIN}: Symbolic link loop`)?.code).toBe(
      "ELOOP",
    );
    // Words it does not know still end the run as a failed start, saying them.
    const odd = sandboxExecFailure(BIN, 1, `bwrap: execvp ${BIN}: Something new`);
    expect({ code: odd?.code, message: odd?.message }).toEqual({
      code: undefined,
      message: `spawn ${BIN} Something new`,
    });
  });

  it("is no failed exec unless the run's only line is that report and bwrap exited 1", () => {
    const line = `bwrap: execvp ${BIN}: No such file or directory`;
    expect(sandboxExecFailure(BIN, 0, line)).toBeNull();
    expect(sandboxExecFailure(BIN, 1, null)).toBeNull();
    expect(sandboxExecFailure("/other/opencode", 1, line)).toBeNull();
  });

  it("leaves a running CLI undecided only while its lines are just that report", () => {
    const line = `bwrap: execvp ${BIN}: No such file or directory`;
    expect(maybeSandboxExecFailure(BIN, line)).toBe(true);
    expect(maybeSandboxExecFailure(BIN, null)).toBe(false);
    expect(maybeSandboxExecFailure(BIN, "opencode: starting")).toBe(false);
    expect(maybeSandboxExecFailure("/other/opencode", line)).toBe(false);
  });
});

describe("findWorkingBwrap after a failure", () => {
  it("looks again once RETRY_LOOKUP_MS has passed (a probe may fail for a passing reason), and keeps a success", async () => {
    const dir = await mkdtemp(path.join("/var/tmp", "flr-bwrap-"));
    try {
      // A bwrap that works only once the test says so, as a probe that timed out on a busy box.
      const ready = path.join(dir, "ready");
      const flaky = path.join(dir, "bin", "bwrap");
      await mkdir(path.dirname(flaky));
      await writeFile(
        flaky,
        `#!/bin/sh\nif [ -e '${ready}' ]; then echo 'bubblewrap 0.0-test'; exit 0; fi\necho 'bwrap: timed out' >&2\nexit 1\n`,
      );
      await chmod(flaky, 0o755);
      const t0 = 1_000_000;
      const bin = path.dirname(flaky);
      expect((await findWorkingBwrap(bin, dir, t0)).bin).toBeNull();
      await writeFile(ready, "");
      // Within the window the failure stands (no probe per run)...
      expect((await findWorkingBwrap(bin, dir, t0 + RETRY_LOOKUP_MS - 1)).bin).toBeNull();
      // ...after it, the next run looks again and finds it; a success is kept.
      expect((await findWorkingBwrap(bin, dir, t0 + RETRY_LOOKUP_MS)).bin).toBe(flaky);
      await rm(ready);
      expect((await findWorkingBwrap(bin, dir, t0 + 10 * RETRY_LOOKUP_MS)).bin).toBe(flaky);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(lookup.bin === null)(`the read-only sandbox (${lookup.bin})`, () => {
  it("is what a read-only opencode run gets on this machine", async () => {
    const silent = { warn: () => undefined };
    expect(await bwrapForRun(getProviderAdapter("opencode"), READ_ONLY, PATH, silent)).toBe(
      lookup.bin,
    );
  });

  it("refuses writes to the repo, by relative and absolute path, and writes elsewhere", async () => {
    const r = await inSandbox(
      `echo a > made.txt; echo b > ${repo}/abs.txt; echo c > ${session}/beside.txt; echo d > /var/tmp/flr-ro-escape-$$; echo end`,
    );
    expect(r.out).toContain("end");
    expect(r.out.match(/Read-only file system/g)?.length).toBe(4);
    expect(await readdir(repo)).toEqual([]);
    expect((await readdir(session)).sort()).toEqual([".opencode-home", ".tmp", "repo"]);
  });

  it("lets opencode write its home and its temp dir", async () => {
    const r = await inSandbox('echo h > "$HOME/h" && echo t > "$TMPDIR/t" && echo ok');
    expect(r).toMatchObject({ code: 0, out: "ok\n" });
    expect(await readFile(path.join(session, ".opencode-home", "h"), "utf8")).toBe("h\n");
    expect(await readFile(path.join(session, ".tmp", "t"), "utf8")).toBe("t\n");
  });

  it("ends the command inside when bwrap dies (--die-with-parent), without the runner's group kill", async () => {
    const spec = await command("/bin/sh", "x");
    const args = [...spec.args.slice(0, spec.args.indexOf("--") + 1), "/bin/sleep", "60"];
    const bwrap = spawn(spec.bin, args, { cwd: repo, env: spec.env, stdio: "ignore" });
    const sleeper = await (async () => {
      const children = `/proc/${bwrap.pid}/task/${bwrap.pid}/children`;
      for (let i = 0; i < 200; i++) {
        const pid = Number((await readFile(children, "utf8").catch(() => "")).trim().split(" ")[0]);
        // Once it runs sleep, bwrap has set it up (a kill before its prctl would prove nothing).
        const cmd = pid > 0 ? await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "") : "";
        if (cmd.startsWith("/bin/sleep")) return pid;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error("bwrap started nothing");
    })();
    bwrap.kill("SIGKILL");
    try {
      await waitUntilGone([sleeper], 5000);
    } finally {
      if (isAlive(sleeper)) process.kill(sleeper, "SIGKILL");
    }
  });

  it("works under a workspaces root reached through an absolute symlink (a linked /home or FERMILINK_HOME), whatever its name", async () => {
    // bwrap makes its mount points under its own new root, where an absolute link on the way
    // leads nowhere: given the linked path, it failed every run ("Can't mkdir").
    // The real root's name with the characters a path may have (session ids are plain).
    const realRoot = path.join(session, "work spaces 'x' $HOME");
    const root = `${session}-link`;
    await symlink(realRoot, root);
    const realSession = path.join(realRoot, "s1");
    await mkdir(path.join(realSession, "repo"), { recursive: true });
    try {
      const spec = getProviderAdapter("opencode").buildCommand({
        bin: "/bin/sh",
        repoDir: path.join(root, "s1", "repo"),
        prompt: "x",
        policy: READ_ONLY,
        hostEnv: { PATH },
        envPassthrough: [],
        runDir: path.join(root, "s1"),
        bwrap: lookup.bin,
      });
      for (const dir of spec.dirs ?? []) await mkdir(dir, { recursive: true });
      const end = spec.args.indexOf("--");
      const script = `echo h > "$HOME/h" && echo t > "$TMPDIR/t" && echo ok; echo r > ${root}/s1/repo/r`;
      const out = await new Promise<string>((resolve) => {
        const args = [...spec.args.slice(0, end + 1), "/bin/sh", "-c", script];
        execFile(spec.bin, args, { cwd: repo, env: spec.env }, (_err, stdout, stderr) =>
          resolve(`${stdout}${stderr}`),
        );
      });
      expect(out).toMatch(/^ok\n.*Read-only file system/s);
      expect(await readFile(path.join(realSession, ".opencode-home", "h"), "utf8")).toBe("h\n");
      expect(await readFile(path.join(realSession, ".tmp", "t"), "utf8")).toBe("t\n");
      expect(await readdir(path.join(realSession, "repo"))).toEqual([]);
    } finally {
      await unlink(root);
    }
  });

  it("never binds what a link planted in the session leads to: the runner makes its dirs real first", async () => {
    // An earlier, unsandboxed run may leave the home a link to the repo. The command is built
    // before the workspace is prepared, which replaces that link with a real dir (ownDir): a bind
    // resolved at build time would have made the repo writable.
    await symlink(repo, path.join(session, ".opencode-home"));
    const spec = await command("/bin/sh", "x");
    await unlink(path.join(session, ".opencode-home"));
    await mkdir(path.join(session, ".opencode-home"));
    const end = spec.args.indexOf("--");
    const args = [...spec.args.slice(0, end + 1), "/bin/sh", "-c", 'echo h > "$HOME/h"; echo end'];
    const out = await new Promise<string>((resolve) => {
      execFile(spec.bin, args, { cwd: repo, env: spec.env }, (_err, stdout, stderr) =>
        resolve(`${stdout}${stderr}`),
      );
    });
    expect(out).toContain("end");
    expect(await readdir(repo)).toEqual([]);
    expect(await readFile(path.join(session, ".opencode-home", "h"), "utf8")).toBe("h\n");
  });

  it("cannot be undone from inside: no remount, no way through bwrap's own /proc/<pid>/root", async () => {
    // As root without a user namespace, bwrap kept every capability (a remount made the repo
    // writable) and its monitor's /proc entry led to the host's writable root.
    const r = await inSandbox(
      `mount -o remount,rw / 2>/dev/null; mount -o remount,rw ${repo} 2>/dev/null; echo x > ${repo}/after-remount; for p in $PPID 1; do echo y > /proc/$p/root${repo}/via-$p; done; grep CapEff /proc/self/status`,
    );
    expect(r.out).toMatch(/CapEff:\s+0+\n/);
    expect(await readdir(repo)).toEqual([]);
  });
});

const helper = new SpawnHelper();
afterAll(() => helper.close());

/** Pids of the live processes whose environment names `runId`. */
async function withRunId(runId: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const env = await readFile(`/proc/${entry}/environ`, "utf8").catch(() => "");
    if (env.split("\0").includes(`${RUN_ID_ENV}=${runId}`) && isAlive(Number(entry)))
      pids.push(Number(entry));
  }
  return pids;
}

async function pidFile(file: string): Promise<number> {
  for (let i = 0; i < 400; i++) {
    const text = await readFile(file, "utf8").catch(() => "");
    if (Number(text) > 0) return Number(text);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no ${file}`);
}

/** The session id of `pid` (field 6 of /proc/<pid>/stat). */
async function sessionOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[3]);
}

describe.skipIf(lookup.bin === null).each([
  ["forked by the runner", spawnDirect, false],
  ["forked by the spawn helper", helper.launch, false],
  // The first two live providers are detached; later ones go through the helper's perl wrapper.
  ["started by the spawn helper's perl wrapper", helper.launch, true],
] as [string, Launcher, boolean][])("a sandboxed run %s", (_name, launch, viaPerl) => {
  const solo: { pid: number; exit: Promise<unknown> }[] = [];
  afterEach(async () => {
    for (const c of solo.splice(0)) {
      process.kill(-c.pid, "SIGKILL");
      await c.exit;
    }
  });

  /** The fake agent in opencode's place; it keeps its pid files in the sandbox's temp dir. */
  async function start(scenario: string) {
    if (viaPerl) {
      const env = { PATH };
      for (let i = 0; i < 2; i++)
        solo.push(
          await helper.launch({ bin: "/bin/sleep", args: ["30"], env, cwd: repo, niceness: 0 }),
        );
    }
    const spec = await command(FAKE_AGENT, `#scenario=${scenario}`);
    const runId = `ro-${process.pid}-${Date.now()}`;
    const tmp = spec.env.TMPDIR as string;
    const p = await startSupervisedProcess(
      {
        bin: spec.bin,
        args: spec.args,
        env: { ...spec.env, [RUN_ID_ENV]: runId },
        cwd: tmp,
        maxLineBytes: 1 << 20,
        killGraceMs: 300,
      },
      launch,
    );
    // Detached, bwrap leads a session of its own; through perl it shares the helper's.
    expect((await sessionOf(p.pid)) === p.pid).toBe(!viaPerl);
    const grandchild = await pidFile(path.join(tmp, ".fake-agent", "grandchild.pid"));
    const agent = JSON.parse(
      await readFile(path.join(tmp, ".fake-agent", "invocation.json"), "utf8"),
    ) as { pid: number };
    return { p, runId, agent: agent.pid, grandchild };
  }

  it("leaves no process behind when cancelled: bwrap, the CLI and its child end with the group", async () => {
    const { p, runId, agent, grandchild } = await start("grandchild");
    expect(p.pid).not.toBe(agent);
    const before = await withRunId(runId);
    expect(before).toEqual(expect.arrayContaining([p.pid, agent, grandchild]));
    // No lines are read, so the runner's orphan sweep (which follows reading) plays no part:
    // the group kill alone must reach everything inside the sandbox.
    await p.terminate();
    expect((await p.exited).killedByRunner).toBe(true);
    const left = await withRunId(runId);
    for (const pid of left) killQuietly(pid);
    expect(left).toEqual([]);
  });
});
