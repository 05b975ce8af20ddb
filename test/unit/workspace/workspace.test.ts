import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, readdirSync, renameSync } from "node:fs";
import {
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RunnerError } from "../../../src/errors/runner-error.js";
import { type GitSkeleton, gitSkeleton, isGitRepo } from "../../../src/workspace/git-repo.js";
import { ownerGone, ownerOf, runnerOwner, STALE_AFTER_MS } from "../../../src/workspace/owner.js";
import { prepareWorkspace } from "../../../src/workspace/prepare-workspace.js";
import {
  holdSession,
  LOCK_STALE_AFTER_MS,
  sessionLockFile,
  sweepTakeoverLeftovers,
  touchHeldLocks,
} from "../../../src/workspace/session-hold.js";
import { SessionLock } from "../../../src/workspace/session-lock.js";
import { generateSessionId, resolveSessionDir } from "../../../src/workspace/session-path.js";
import { STAGING_DIRNAME, stagingPath, sweepStaging } from "../../../src/workspace/staging.js";

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "fixtures");

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "flr-ws-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const ALIASES = ["CLAUDE.md", "GEMINI.md"];
const prep = (sessionId: string, extra: Partial<Parameters<typeof prepareWorkspace>[0]> = {}) =>
  prepareWorkspace({
    workspacesRoot: path.join(root, "ws"),
    sessionId,
    softwareRoot: null,
    providerAlias: null,
    knownAliases: ALIASES,
    prompt: "simulate a dipole",
    ...extra,
  });

describe("session ids", () => {
  it("accepts safe ids and generates 32-hex ones", () => {
    expect(resolveSessionDir("/w", "abc-1.2_x")).toBe("/w/abc-1.2_x");
    expect(generateSessionId()).toMatch(/^[0-9a-f]{32}$/);
  });

  it.each(["", ".", "..", "../x", "a/b", "/etc", ".hidden", "a".repeat(129), "é", "a b", "a\\b"])(
    "refuses %j",
    (id) => {
      expect(() => resolveSessionDir("/w", id)).toThrow(RunnerError);
    },
  );
});

describe("SessionLock", () => {
  it("serialises holders FIFO, drops aborted waiters at once and leaves no entry behind", async () => {
    const lock = new SessionLock();
    const order: string[] = [];
    const r1 = await lock.acquire("s");
    const ac = new AbortController();
    const p2 = lock.acquire("s", ac.signal);
    const p3 = lock.acquire("s").then((r) => {
      order.push("third");
      return r;
    });
    ac.abort(new Error("gone"));
    await expect(p2).rejects.toThrow("gone");
    r1();
    r1(); // idempotent
    const r3 = await p3;
    expect(order).toEqual(["third"]);
    expect(lock.size).toBe(1);
    r3();
    expect(lock.size).toBe(0);
  });

  it("tells waiters their place among the session's waiters, at once and when it changes; the holder hears nothing", async () => {
    const lock = new SessionLock();
    const heard: string[] = [];
    const hear = (who: string) => (position: number, waiting: number) =>
      heard.push(`${who} ${position}/${waiting}`);
    const r1 = await lock.acquire("s", undefined, hear("first"));
    const p2 = lock.acquire("s", undefined, hear("second"));
    const p3 = lock.acquire("s", undefined, hear("third"));
    await lock.acquire("other", undefined, hear("elsewhere")).then((r) => r());
    // A newcomer also tells those ahead of it that one more waits.
    expect(heard).toEqual(["second 1/1", "second 1/2", "third 2/2"]);
    // Places change when the queue moves: a waiter leaving, the holder releasing; an unchanged
    // place is not told again.
    const ac = new AbortController();
    const p4 = lock.acquire("s", ac.signal, hear("fourth"));
    ac.abort(new Error("gone"));
    await expect(p4).rejects.toThrow("gone");
    r1();
    expect(heard).toEqual([
      "second 1/1",
      "second 1/2",
      "third 2/2",
      "second 1/3",
      "third 2/3",
      "fourth 3/3",
      "second 1/2",
      "third 2/2",
      "third 1/1",
    ]);
    (await p2)();
    (await p3)();
    expect(heard.at(-1)).toBe("third 1/1");
    expect(lock.size).toBe(0);
  });

  it("hands the session over and keeps every waiter when a place report throws", async () => {
    const lock = new SessionLock();
    const boom = () => {
      throw new Error("the report failed");
    };
    const r1 = await lock.acquire("s");
    const p2 = lock.acquire("s", undefined, boom);
    const p3 = lock.acquire("s", undefined, boom);
    r1();
    (await p2)();
    (await p3)();
    expect(lock.size).toBe(0);
  });

  /** A process holding `sessionId` of `wsRoot` as another runner would, once it says so. */
  async function otherRunnerHolding(wsRoot: string, sessionId: string) {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", path.join(FIXTURES, "hold-session.ts"), wsRoot, sessionId],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const [line] = (await once(child.stdout, "data")) as [Buffer];
    expect(line.toString()).toBe("held\n");
    return child;
  }

  const holderOf = async (file: string) => (await readFile(file, "latin1")).split("\n")[0];
  const settledYet = async (p: Promise<unknown>) => {
    let settled = false;
    p.then(
      () => (settled = true),
      () => (settled = true),
    );
    await new Promise((r) => setTimeout(r, 150));
    return settled;
  };

  it("waits for another runner's run on the session (first in line), and takes over when that runner is killed", async () => {
    const file = sessionLockFile(root, "s");
    const other = await otherRunnerHolding(root, "s");
    try {
      expect(await holderOf(file)).toBe(ownerOf(other.pid as number));
      const lock = new SessionLock({ root, pollMs: 20 });
      const heard: string[] = [];
      const hear = (who: string) => (position: number, waiting: number) =>
        heard.push(`${who} ${position}/${waiting}`);
      const ac = new AbortController();
      const p1 = lock.acquire("s", ac.signal, hear("first"));
      const p2 = lock.acquire("s", undefined, hear("second"));
      expect(await settledYet(p2)).toBe(false);
      expect(heard).toEqual(["first 1/1", "first 1/2", "second 2/2"]);
      // Cancelled while it waits for the other runner: the next of this process is first in line.
      ac.abort(new Error("cancelled"));
      await expect(p1).rejects.toThrow("cancelled");
      expect(await settledYet(p2)).toBe(false);
      expect(heard.at(-1)).toBe("second 1/1");
      expect(await holderOf(file)).toBe(ownerOf(other.pid as number));
      other.kill("SIGKILL");
      const release = await p2;
      expect(await holderOf(file)).toBe(runnerOwner());
      release();
      expect(existsSync(file)).toBe(false);
      expect(lock.size).toBe(0);
    } finally {
      other.kill("SIGKILL");
    }
  });

  it("goes on once another runner releases the session, and leaves no lock file on either side", async () => {
    const file = sessionLockFile(root, "s");
    const other = await otherRunnerHolding(root, "s");
    const lock = new SessionLock({ root, pollMs: 20 });
    const p = lock.acquire("s");
    expect(await settledYet(p)).toBe(false);
    other.kill("SIGTERM");
    const [code] = (await once(other, "exit")) as [number | null];
    expect(code).toBe(0);
    (await p)();
    expect(existsSync(file)).toBe(false);
  });

  it("takes over a lock file this runner leaked or whose foreign holder went stale, and removes only its own", async () => {
    const file = sessionLockFile(root, "s");
    await mkdir(path.dirname(file), { recursive: true });
    const lock = new SessionLock({ root, pollMs: 20 });
    // Left by this very process (a release that failed): no run of it holds the session.
    await writeFile(file, `${runnerOwner()}\n7\n`);
    const r1 = await lock.acquire("s");
    // Taken over meanwhile by another runner (it judged this one gone, and made its own lock
    // file): that one is not removed.
    const [boot, , pid, start] = runnerOwner().split("-");
    const foreign = `${boot}-1-${pid}-${start}`;
    await writeFile(`${file}.new`, `${foreign}\n1\n`);
    await rename(`${file}.new`, file);
    r1();
    expect(await holderOf(file)).toBe(foreign);
    // A holder in another container is live while its file is touched, gone once it is stale:
    // after seconds, not the hour spares and staging directories are given.
    const p = lock.acquire("s");
    expect(await settledYet(p)).toBe(false);
    const old = new Date(Date.now() - LOCK_STALE_AFTER_MS - 5_000);
    expect(LOCK_STALE_AFTER_MS + 5_000).toBeLessThan(STALE_AFTER_MS);
    await utimes(file, old, old);
    const r2 = await p;
    expect(await holderOf(file)).toBe(runnerOwner());
    // Its own heartbeat keeps it from looking stale to the others.
    await utimes(file, old, old);
    await touchHeldLocks();
    expect(Date.now() - (await stat(file)).mtimeMs).toBeLessThan(LOCK_STALE_AFTER_MS);
    r2();
    expect(existsSync(file)).toBe(false);
  });
  it("lets one runner at a time hold a session whose dead holder several take over at once", async () => {
    const takers = Array.from({ length: 4 }, () =>
      spawn(
        process.execPath,
        ["--import", "tsx", path.join(FIXTURES, "hammer-takeover.ts"), root, "s", "8000", "150"],
        { stdio: ["pipe", "pipe", "inherit"] },
      ),
    );
    try {
      const said = takers.map(async (child) => {
        let out = "";
        child.stdout.on("data", (b: Buffer) => {
          out += b.toString();
        });
        await once(child, "exit");
        return out;
      });
      const ready = takers.map((c) => once(c.stdout, "data"));
      await Promise.all(ready);
      for (const c of takers) c.stdin.write("go\n");
      const counts = (await Promise.all(said)).map((out) =>
        out.replace("ready\n", "").trim().split(" ").map(Number),
      );
      const holds = counts.reduce((n, [h = 0]) => n + h, 0);
      const overlaps = counts.reduce((n, [, o = 0]) => n + o, 0);
      // Every hold after the first took over a dead holder's lock: 600 races, in 2-3 s on a quiet
      // box, showed 40-100 overlaps without the guard. A loaded box may stop them at the 8 s
      // bound with fewer, so the bound only says the takers ran.
      expect(holds).toBeGreaterThan(20);
      expect(overlaps).toBe(0);
      // No takeover left its guard or a file moved aside.
      expect(readdirSync(path.join(root, ".runner-locks"))).toEqual(["s.lock"]);
    } finally {
      for (const c of takers) c.kill("SIGKILL");
    }
  });

  it("waits while another runner takes the session over, and removes a takeover guard its taker left", async () => {
    const file = sessionLockFile(root, "s");
    const guard = `${file}.takeover`;
    await mkdir(path.dirname(file), { recursive: true });
    const live = spawn("sleep", ["60"], { stdio: "ignore" });
    const dead = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      await Promise.all([once(live, "spawn"), once(dead, "spawn")]);
      const liveTaker = ownerOf(live.pid as number) as string;
      const deadTaker = ownerOf(dead.pid as number) as string;
      dead.kill("SIGKILL");
      await once(dead, "exit");
      // The holder is gone, and a live runner is taking over: that runner's to finish.
      await writeFile(file, "gone\n");
      await writeFile(guard, `${liveTaker}\n`);
      expect(holdSession(root, "s")).toBeNull();
      expect(await readFile(file, "latin1")).toBe("gone\n");
      // Its taker killed in the microseconds it holds one: removed at once.
      await writeFile(guard, `${deadTaker}\n`);
      const r1 = holdSession(root, "s");
      expect(r1).not.toBeNull();
      expect(await holderOf(file)).toBe(runnerOwner());
      expect(existsSync(guard)).toBe(false);
      r1?.();
      // A live taker's guard left 10 s ago (its taker stopped there, or never wrote its name).
      await writeFile(file, "gone\n");
      for (const text of [`${liveTaker}\n`, ""]) {
        await writeFile(guard, text);
        expect(holdSession(root, "s")).toBeNull();
        const old = new Date(Date.now() - 11_000);
        await utimes(guard, old, old);
        const r = holdSession(root, "s");
        expect(r).not.toBeNull();
        expect(existsSync(guard)).toBe(false);
        r?.();
        await writeFile(file, "gone\n");
      }
    } finally {
      live.kill("SIGKILL");
      dead.kill("SIGKILL");
    }
  });

  it("sweeps a lock file a takeover cut short left aside: at once when its taker is gone, else once it was moved long ago", async () => {
    const file = sessionLockFile(root, "s");
    const dir = path.dirname(file);
    await mkdir(dir, { recursive: true });
    const sleeper = async () => {
      const child = spawn("sleep", ["60"], { stdio: "ignore" });
      await once(child, "spawn");
      return { child, token: ownerOf(child.pid as number) as string };
    };
    const live = await sleeper();
    const dead = await sleeper();
    dead.child.kill("SIGKILL");
    await once(dead.child, "exit");
    const [boot, , pid, start] = runnerOwner().split("-");
    const aside = (taker: string) => `${file}.${taker}.stale`;
    const leftBy = {
      dead: aside(dead.token),
      live: aside(live.token),
      // Another container: judged by when it was moved aside, as its lock files are.
      foreign: aside(`${boot}-1-${pid}-${start}`),
      // A runner from before takers were named: a random name.
      older: aside("0123456789ab"),
    };
    // Lock files, one of a session whose id looks like a leftover's name.
    const locks = [file, sessionLockFile(root, "x.lock.0123456789ab.stale")];
    for (const f of [...Object.values(leftBy), ...locks]) await writeFile(f, `${dead.token}\n`);
    try {
      expect(await sweepTakeoverLeftovers(root)).toEqual([leftBy.dead]);
      // A takeover holds its file aside for microseconds: moved that long ago, none is under way.
      const later = Date.now() + LOCK_STALE_AFTER_MS + 5_000;
      expect((await sweepTakeoverLeftovers(root, later)).sort()).toEqual(
        [leftBy.live, leftBy.foreign, leftBy.older].sort(),
      );
      expect(readdirSync(dir).sort()).toEqual(locks.map((f) => path.basename(f)).sort());
    } finally {
      live.child.kill("SIGKILL");
    }
  });
});

/** Git in `repoDir`, as a committer named t (the repo's own config may have no identity). */
function gitIn(repoDir: string): (...args: string[]) => string {
  return (...args) =>
    execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@t", ...args], {
      cwd: repoDir,
    }).toString();
}

describe("prepareWorkspace", () => {
  it("gives every new session its own working git repo, laid out like one pristine `git init`", async () => {
    const sessions = Array.from({ length: 12 }, (_, i) => `g${i}`);
    const made = await Promise.all(sessions.map((id) => prep(id)));
    const template = path.join(root, "ws", ".runner-git-template");
    expect(existsSync(path.join(template, ".git", "HEAD"))).toBe(true);
    for (const ws of made) {
      execFileSync("git", ["add", "-A"], { cwd: ws.repoDir });
      const status = execFileSync("git", ["status", "--porcelain"], { cwd: ws.repoDir }).toString();
      expect(status).toContain("AGENTS.md");
    }
    // Each repo is independent: staging in one does not touch the pristine repo.
    expect(execFileSync("git", ["status", "--porcelain"], { cwd: template }).toString()).toBe("");
    // A pristine repo removed behind the runner's back is made again.
    await rm(template, { recursive: true, force: true });
    const later = await prep("after-clean");
    expect(
      execFileSync("git", ["rev-parse", "--git-dir"], { cwd: later.repoDir }).toString().trim(),
    ).toBe(".git");
  });

  describe("the git template runners sharing a root share", () => {
    const branchOf = (skeleton: GitSkeleton) =>
      skeleton.files.find((f) => f.rel === "HEAD")?.content.toString();
    /** This runner's git, whose repos are on a branch named "own" (whatever the host's config). */
    const ownGit = {
      PATH: process.env.PATH,
      GIT_CONFIG_COUNT: "1",
      GIT_CONFIG_KEY_0: "init.defaultBranch",
      GIT_CONFIG_VALUE_0: "own",
    };
    /** What is staged in the owners' staging directories (which stay). */
    const stagedLeft = (wsRoot: string) =>
      readdirSync(path.join(wsRoot, STAGING_DIRNAME), { recursive: true }).filter((p) =>
        String(p).includes("/"),
      );

    it("falls back to a repo of its own when the template it found valid is moved away while it reads it", async () => {
      const wsRoot = path.join(root, "ws");
      const template = path.join(wsRoot, ".runner-git-template");
      await mkdir(template, { recursive: true });
      execFileSync("git", ["-c", "init.defaultBranch=shared", "init", "-q"], { cwd: template });
      const p = gitSkeleton(template, ownGit, wsRoot);
      // Validated, its read under way: another runner, which judged it broken before it was
      // finished, moves it aside now.
      renameSync(template, path.join(root, "moved"));
      const skeleton = await p;
      expect(branchOf(skeleton)).toBe("ref: refs/heads/own\n");
      expect(skeleton.dirs).toEqual(expect.arrayContaining(["objects", "refs", "refs/heads"]));
      // This runner's own took the free place, and nothing is left staged.
      expect(await readFile(path.join(template, ".git", "HEAD"), "utf8")).toBe(
        "ref: refs/heads/own\n",
      );
      expect(stagedLeft(wsRoot)).toEqual([]);
    });

    it("uses another runner's template that took the place first, and moves a broken one aside whole", async () => {
      const wsRoot = path.join(root, "ws");
      const template = path.join(wsRoot, ".runner-git-template");
      // A template a killed runner left half written (HEAD created, not written).
      await mkdir(path.join(template, ".git", "objects"), { recursive: true });
      await writeFile(path.join(template, ".git", "HEAD"), "");
      // Another runner finishes its template while this one's `git init` runs.
      const bin = path.join(root, "bin");
      await mkdir(bin);
      await writeFile(
        path.join(bin, "git"),
        `#!/bin/sh\n/usr/bin/git "$@" || exit $?\n` +
          `rm -rf "$TEMPLATE" && mkdir "$TEMPLATE" && cd "$TEMPLATE" && /usr/bin/git -c init.defaultBranch=theirs init -q\n`,
        { mode: 0o755 },
      );
      const env = { ...ownGit, PATH: `${bin}:${process.env.PATH}`, TEMPLATE: template };
      const skeleton = await gitSkeleton(template, env, wsRoot);
      expect(branchOf(skeleton)).toBe("ref: refs/heads/theirs\n");
      expect(stagedLeft(wsRoot)).toEqual([]);

      // Broken again, and no other runner: this one's own repo replaces it.
      const wsRoot2 = path.join(root, "ws2");
      const template2 = path.join(wsRoot2, ".runner-git-template");
      await mkdir(path.join(template2, ".git", "objects"), { recursive: true });
      await writeFile(path.join(template2, ".git", "HEAD"), "");
      expect(branchOf(await gitSkeleton(template2, ownGit, wsRoot2))).toBe("ref: refs/heads/own\n");
      expect(isGitRepo(template2)).toBe(true);
      expect(stagedLeft(wsRoot2)).toEqual([]);
    });
  });

  it("creates the repo once from the built-in template and keeps memory.md across runs", async () => {
    const first = await prep("s1");
    expect(first.createdRepo).toBe(true);
    const repo = first.repoDir;
    expect(await readFile(path.join(repo, "AGENTS.md"), "utf8")).toContain("projects/memory.md");
    const memory = await readFile(path.join(repo, "projects", "memory.md"), "utf8");
    expect(memory).toContain("# FermiLink Loop Memory");
    expect(memory).toContain("simulate a dipole");
    expect(existsSync(path.join(repo, "outputs"))).toBe(true);
    expect(execFileSync("git", ["rev-parse", "--git-dir"], { cwd: repo }).toString().trim()).toBe(
      ".git",
    );

    await writeFile(path.join(repo, "AGENTS.md"), "user edit");
    await writeFile(path.join(repo, "projects", "memory.md"), "agent notes");
    const second = await prep("s1", { prompt: "another prompt" });
    expect(second.createdRepo).toBe(false);
    expect(await readFile(path.join(repo, "AGENTS.md"), "utf8")).toContain("projects/memory.md");
    expect(await readFile(path.join(repo, "projects", "memory.md"), "utf8")).toBe("agent notes");
  });

  it("uses FERMILINK_SOFTWARE_ROOT's tree and its AGENTS.md over the built-in one", async () => {
    const sw = path.join(root, "software");
    await mkdir(sw);
    await writeFile(path.join(sw, "AGENTS.md"), "custom policy");
    await writeFile(path.join(sw, "tool.py"), "print(1)");
    const ws = await prep("s2", { softwareRoot: sw });
    expect(await readFile(path.join(ws.repoDir, "AGENTS.md"), "utf8")).toBe("custom policy");
    expect(existsSync(path.join(ws.repoDir, "tool.py"))).toBe(true);
  });

  it("uses FERMILINK_SOFTWARE_ROOT's AGENTS.md when it is a link to the policy kept elsewhere", async () => {
    const sw = path.join(root, "software");
    await mkdir(sw);
    await writeFile(path.join(root, "site-policy.md"), "site policy");
    await symlink(path.join(root, "site-policy.md"), path.join(sw, "AGENTS.md"));
    const ws = await prep("linked-policy", { softwareRoot: sw });
    expect((await lstat(path.join(ws.repoDir, "AGENTS.md"))).isFile()).toBe(true);
    expect(await readFile(path.join(ws.repoDir, "AGENTS.md"), "utf8")).toBe("site policy");
  });

  it("copies the template's links as links, so a session never edits the template through one", async () => {
    const sw = path.join(root, "software");
    await mkdir(path.join(sw, "defaults"), { recursive: true });
    await writeFile(path.join(sw, "defaults", "config.yaml"), "template default");
    await symlink("defaults/config.yaml", path.join(sw, "config.yaml"));
    const ws = await prep("tpl-links", { softwareRoot: sw });
    expect(await readlink(path.join(ws.repoDir, "config.yaml"))).toBe("defaults/config.yaml");
    // The agent edits its config: its own copy changes, the template does not.
    await writeFile(path.join(ws.repoDir, "config.yaml"), "edited in the session");
    expect(await readFile(path.join(sw, "defaults", "config.yaml"), "utf8")).toBe(
      "template default",
    );
    expect(await readFile(path.join(ws.repoDir, "defaults", "config.yaml"), "utf8")).toBe(
      "edited in the session",
    );
  });

  it("copies the template whole or not at all: a copy that failed part way is made again by the next run", async () => {
    const sw = path.join(root, "software");
    await mkdir(sw);
    await writeFile(path.join(sw, "a.py"), "a");
    await writeFile(path.join(sw, "z.py"), "z");
    // cp refuses a FIFO: the copy fails after some entries, as a full disk would.
    execFileSync("mkfifo", [path.join(sw, "m.fifo")]);
    await expect(prep("tpl-half", { softwareRoot: sw })).rejects.toMatchObject({
      code: "WORKSPACE_SETUP_FAILED",
    });
    const sessionDir = path.join(root, "ws", "tpl-half");
    expect(await readdir(sessionDir)).toEqual([]);
    await rm(path.join(sw, "m.fifo"));
    const ws = await prep("tpl-half", { softwareRoot: sw });
    expect(ws.createdRepo).toBe(true);
    expect(await readFile(path.join(ws.repoDir, "a.py"), "utf8")).toBe("a");
    expect(await readFile(path.join(ws.repoDir, "z.py"), "utf8")).toBe("z");
  });

  it("writes memory.md whole or not at all: a write cut short leaves none, and the next run writes it", async () => {
    const wsRoot = path.join(root, "ws");
    // The prompt is memory.md's "Original request": far past the cap, which every other file of
    // a session (and node's own) stays under.
    const size = 4 << 20;
    const capped = async (sessionId: string, spare: "spare" | "") => {
      const child = spawn(
        "sh",
        [
          "-c",
          'ulimit -f 2048 && exec "$@"',
          "sh",
          process.execPath,
          "--import",
          "tsx",
          path.join(FIXTURES, "prepare-session.ts"),
          wsRoot,
          sessionId,
          String(size),
          spare,
        ],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      let out = "";
      child.stdout.on("data", (b: Buffer) => {
        out += b.toString();
      });
      const [code] = (await once(child, "exit")) as [number | null];
      return { code, out };
    };
    // An existing session whose memory.md is gone takes the checking path.
    await rm(path.join((await prep("checked")).repoDir, "projects", "memory.md"));
    for (const [sessionId, spare] of [
      ["new", ""],
      ["from-spare", "spare"],
      ["checked", ""],
    ] as const) {
      expect(await capped(sessionId, spare), sessionId).toEqual({
        code: 0,
        out: "WORKSPACE_SETUP_FAILED",
      });
      const projects = path.join(wsRoot, sessionId, "repo", "projects");
      expect(existsSync(path.join(projects, "memory.md")), sessionId).toBe(false);
      const ws = await prep(sessionId, { prompt: "x".repeat(size) });
      const memory = await readFile(path.join(ws.repoDir, "projects", "memory.md"), "utf8");
      expect(memory.length, sessionId).toBeGreaterThan(size);
      expect(memory.endsWith("- (no progress yet)\n"), sessionId).toBe(true);
      expect(await readdir(projects), sessionId).toEqual(["memory.md"]);
    }
  });

  it("records the request without the FermiLink web's unified-memory instructions", async () => {
    // The web's UNIFIED_MEMORY_PROMPT_PREFIX (one version of its wording) + the transcript.
    const prefix = [
      "You are running in **FermiLink unified-memory mode**.",
      "",
      "Persistent shared memory lives at `projects/memory.md` (relative to the repo root).",
      "Before acting, read `projects/memory.md`.",
      "",
      "When you finish this turn, update memory with concise, factual entries:",
      "- Short-term memory:",
      "  - `## Short-Term Memory (Operational) -> ### Plan`",
      "",
      "Always include touched file paths in progress entries when applicable.",
      "",
      "Current request/context:",
      "",
    ].join("\n");
    const memoryOf = async (id: string, prompt: string) =>
      readFile(path.join((await prep(id, { prompt })).repoDir, "projects", "memory.md"), "utf8");
    const memory = await memoryOf("web", `${prefix}User: simulate a dipole in meep\n`);
    expect(memory).toContain("## Original request\n\nUser: simulate a dipole in meep\n\n## Plan");
    expect(memory).not.toContain("unified-memory mode");
    expect(await memoryOf("web-empty", `${prefix}  \n`)).toContain(
      "## Original request\n\n(request unavailable)\n",
    );
    // A prompt that only mentions the mode is the user's request, kept whole.
    const own = "You are running in **FermiLink unified-memory mode**. Explain it.";
    expect(await memoryOf("not-web", own)).toContain(`## Original request\n\n${own}\n`);
  });

  it.each(["CLAUDE.md", "GEMINI.md"])(
    "creates only the active provider alias %s",
    async (alias) => {
      const ws = await prep("s3", { providerAlias: alias });
      expect(await readlink(path.join(ws.repoDir, alias))).toBe("AGENTS.md");
      const other = ALIASES.find((a) => a !== alias) ?? "";
      expect(existsSync(path.join(ws.repoDir, other))).toBe(false);
    },
  );

  it("creates no alias for codex, removes a stale inactive symlink, and keeps a real inactive file", async () => {
    const ws = await prep("s4", { providerAlias: "GEMINI.md" });
    await writeFile(path.join(ws.repoDir, "CLAUDE.md"), "user's own");
    await prep("s4", { providerAlias: null });
    expect(existsSync(path.join(ws.repoDir, "GEMINI.md"))).toBe(false);
    expect(await readFile(path.join(ws.repoDir, "CLAUDE.md"), "utf8")).toBe("user's own");
  });

  it("puts back on the next run whatever was changed in an existing session, one change at a time", async () => {
    // Each change makes a session no longer in place, so its next run repairs it (a session left
    // as it was is checked without the thread pool: nothing to put back).
    const changes: [string, (repo: string) => Promise<void>][] = [
      ["AGENTS.md edited", (r) => writeFile(path.join(r, "AGENTS.md"), "edited")],
      [
        "AGENTS.md made a link",
        async (r) => {
          await rm(path.join(r, "AGENTS.md"));
          await symlink("projects/memory.md", path.join(r, "AGENTS.md"));
        },
      ],
      ["active alias removed", (r) => rm(path.join(r, "CLAUDE.md"))],
      [
        "active alias re-pointed",
        async (r) => {
          await rm(path.join(r, "CLAUDE.md"));
          await symlink("projects/memory.md", path.join(r, "CLAUDE.md"));
        },
      ],
      ["inactive alias linked", (r) => symlink("AGENTS.md", path.join(r, "GEMINI.md"))],
      [".git removed", (r) => rm(path.join(r, ".git"), { recursive: true })],
      [".git/HEAD removed", (r) => rm(path.join(r, ".git", "HEAD"))],
      // What a runner killed while writing the repo leaves: a HEAD created and not yet written.
      [".git/HEAD left empty", (r) => writeFile(path.join(r, ".git", "HEAD"), "")],
      [".git/objects missing", (r) => rm(path.join(r, ".git", "objects"), { recursive: true })],
      ["memory.md removed", (r) => rm(path.join(r, "projects", "memory.md"))],
      ["outputs removed", (r) => rm(path.join(r, "outputs"), { recursive: true })],
    ];
    for (const [what, change] of changes) {
      const id = `fix-${changes.findIndex(([w]) => w === what)}`;
      const ws = await prep(id, { providerAlias: "CLAUDE.md" });
      const template = await readFile(path.join(ws.repoDir, "AGENTS.md"), "utf8");
      await change(ws.repoDir);
      const again = await prep(id, { providerAlias: "CLAUDE.md" });
      expect(again.createdRepo, what).toBe(false);
      const repo = again.repoDir;
      expect((await lstat(path.join(repo, "AGENTS.md"))).isFile(), what).toBe(true);
      expect(await readFile(path.join(repo, "AGENTS.md"), "utf8"), what).toBe(template);
      expect(await readlink(path.join(repo, "CLAUDE.md")), what).toBe("AGENTS.md");
      expect(existsSync(path.join(repo, "GEMINI.md")), what).toBe(false);
      expect(
        execFileSync("git", ["rev-parse", "--git-dir"], { cwd: repo }).toString().trim(),
        what,
      ).toBe(".git");
      expect(existsSync(path.join(repo, "projects", "memory.md")), what).toBe(true);
      expect((await lstat(path.join(repo, "outputs"))).isDirectory(), what).toBe(true);
    }
  });

  it("refuses to write through a symlinked projects directory", async () => {
    const ws = await prep("s5");
    const outside = path.join(root, "outside");
    await mkdir(outside);
    await rm(path.join(ws.repoDir, "projects"), { recursive: true });
    await symlink(outside, path.join(ws.repoDir, "projects"));
    await expect(prep("s5")).rejects.toMatchObject({
      code: "WORKSPACE_SETUP_FAILED",
      message: expect.stringMatching(
        /^Failed to initialize workspace memory file: .*projects is a symlink and has no memory\.md/,
      ),
    });
    expect(await readdir(outside)).toEqual([]);
    expect((await lstat(path.join(ws.repoDir, "projects"))).isSymbolicLink()).toBe(true);
  });

  it("refuses a session directory that is a symlink or a file, creating nothing where a link points", async () => {
    const ws = path.join(root, "ws");
    const outside = path.join(root, "outside");
    await mkdir(outside);
    const other = await prep("other-session");
    await symlink(outside, path.join(ws, "to-outside"));
    // Another session's directory: the fast path for a session in place must not take it either.
    await symlink(other.sessionDir, path.join(ws, "to-other"));
    await writeFile(path.join(ws, "a-file"), "not a session");
    for (const id of ["to-outside", "to-other"]) {
      await expect(prep(id), id).rejects.toMatchObject({
        code: "WORKSPACE_SETUP_FAILED",
        message: `Workspace session directory at ${path.join(ws, id)} is a symlink; refusing to write through it.`,
      });
    }
    await expect(prep("a-file")).rejects.toMatchObject({
      code: "WORKSPACE_SETUP_FAILED",
      message: expect.stringMatching(/a-file is not a directory; move it aside/),
    });
    expect(await readdir(outside)).toEqual([]);
    expect(await readFile(path.join(ws, "a-file"), "utf8")).toBe("not a session");
  });

  it("runs a session whose symlinked projects directory has its memory.md, writing nothing through it", async () => {
    const ws = await prep("linked-projects");
    const notes = path.join(root, "notes");
    await mkdir(notes);
    await writeFile(path.join(notes, "memory.md"), "the agent's memory");
    await rm(path.join(ws.repoDir, "projects"), { recursive: true });
    await symlink(notes, path.join(ws.repoDir, "projects"));
    // Twice: the first run repairs nothing else, the second finds the session in place.
    for (let i = 0; i < 2; i++) {
      const again = await prep("linked-projects", { prompt: "another request" });
      expect(again.createdRepo).toBe(false);
    }
    expect(await readlink(path.join(ws.repoDir, "projects"))).toBe(notes);
    expect(await readdir(notes)).toEqual(["memory.md"]);
    expect(await readFile(path.join(notes, "memory.md"), "utf8")).toBe("the agent's memory");
  });

  it("leaves an outputs symlink as the session made it, creating nothing through it", async () => {
    const ws = await prep("linked-outputs");
    const scratch = path.join(root, "scratch");
    await mkdir(scratch);
    await rm(path.join(ws.repoDir, "outputs"), { recursive: true });
    await symlink(scratch, path.join(ws.repoDir, "outputs"));
    await prep("linked-outputs");
    expect(await readlink(path.join(ws.repoDir, "outputs"))).toBe(scratch);
    // Dangling (the scratch disk gone): still a run, and nothing made where it points.
    await rm(scratch, { recursive: true });
    const again = await prep("linked-outputs");
    expect(again.createdRepo).toBe(false);
    expect(existsSync(scratch)).toBe(false);
  });

  it("writes a new session's git repo without the parts git makes on demand, and git uses it", async () => {
    const ws = await prep("lean");
    const dotGit = path.join(ws.repoDir, ".git");
    expect((await readdir(dotGit)).sort()).toEqual(["HEAD", "config", "objects", "refs"]);
    const git = gitIn(ws.repoDir);
    git("add", "-A");
    git("commit", "-qm", "first");
    git("tag", "v1");
    git("gc", "-q");
    expect(git("fsck")).toBe("");
    expect(git("log", "--format=%s")).toBe("first\n");
  });

  it("keeps a session's git history when its .git lost HEAD, as FermiLink's `git init -q` does", async () => {
    const ws = await prep("lost-head");
    const dotGit = path.join(ws.repoDir, ".git");
    const git = gitIn(ws.repoDir);
    await writeFile(path.join(ws.repoDir, "result.txt"), "42\n");
    git("add", "-A");
    git("commit", "-qm", "the user's work");
    const head = git("rev-parse", "HEAD").trim();
    const branch = git("symbolic-ref", "HEAD").trim();
    await writeFile(path.join(dotGit, "config"), "[flr]\n\tmarker = kept\n", { flag: "a" });
    await rm(path.join(dotGit, "HEAD"));
    // An outside directory the agent links into .git is never written through.
    const outside = path.join(root, "outside-tags");
    await mkdir(outside);
    await rm(path.join(dotGit, "refs", "tags"), { recursive: true });
    await symlink(outside, path.join(dotGit, "refs", "tags"));

    const again = await prep("lost-head");
    expect(again.createdRepo).toBe(false);
    expect(git("symbolic-ref", "HEAD").trim()).toBe(branch);
    expect(git("rev-parse", "HEAD").trim()).toBe(head);
    expect(git("log", "--format=%s")).toBe("the user's work\n");
    expect(git("config", "flr.marker").trim()).toBe("kept");
    expect(await readdir(outside)).toEqual([]);
  });

  it("repairs a .git whose HEAD a killed runner left empty, keeping the session's history", async () => {
    const ws = await prep("empty-head");
    const git = gitIn(ws.repoDir);
    await writeFile(path.join(ws.repoDir, "result.txt"), "42\n");
    git("add", "-A");
    git("commit", "-qm", "the user's work");
    const head = git("rev-parse", "HEAD").trim();
    // The batch's order: memory.md comes after .git, so a kill there leaves it missing too.
    await writeFile(path.join(ws.repoDir, ".git", "HEAD"), "");
    await rm(path.join(ws.repoDir, "projects", "memory.md"));

    const again = await prep("empty-head");
    expect(again.createdRepo).toBe(false);
    expect(git("rev-parse", "HEAD").trim()).toBe(head);
    expect(git("log", "--format=%s")).toBe("the user's work\n");
    expect(await readFile(path.join(ws.repoDir, "result.txt"), "utf8")).toBe("42\n");
  });

  it("leaves nothing of a template copy cut short by a kill once a runner starts, and never a live runner's", async () => {
    const wsRoot = path.join(root, "ws");
    const sw = path.join(root, "software");
    await mkdir(sw);
    // Enough files that the copy is still going when the first one lands.
    await Promise.all(
      Array.from({ length: 400 }, (_, i) => writeFile(path.join(sw, `f-${i}.txt`), "x")),
    );
    const child = spawn(
      process.execPath,
      ["--import", "tsx", path.join(FIXTURES, "copy-then-die.ts"), wsRoot, sw],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    child.stdout.on("data", (b: Buffer) => {
      out += b.toString();
    });
    const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
    expect({ code, signal }).toEqual({ code: null, signal: "SIGKILL" });
    const dead = out.trim();
    const copied = () =>
      readdirSync(wsRoot, { recursive: true }).filter((p) => String(p).endsWith(".txt"));
    expect(copied().length).toBeGreaterThan(0);
    // A live runner's copy in progress (another process), and this one's own.
    const live = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      await once(live, "spawn");
      const liveOwner = ownerOf(live.pid as number) as string;
      const liveCopy = path.join(wsRoot, STAGING_DIRNAME, liveOwner, "s2-0123");
      await mkdir(liveCopy, { recursive: true });
      const ownCopy = await stagingPath(wsRoot, "s3");
      await mkdir(ownCopy);

      expect(await sweepStaging(wsRoot)).toEqual([path.join(wsRoot, STAGING_DIRNAME, dead)]);
      expect(copied()).toEqual([]);
      expect(existsSync(liveCopy)).toBe(true);
      expect(existsSync(ownCopy)).toBe(true);
    } finally {
      live.kill("SIGKILL");
    }
    // The session's next run copies the whole template.
    const ws = await prep("s", { softwareRoot: sw });
    expect(ws.createdRepo).toBe(true);
    expect(readdirSync(ws.repoDir).filter((n) => n.endsWith(".txt"))).toHaveLength(400);
  });

  it("sweeps what runners before staging directories left staged once it is an hour old, and nothing else", async () => {
    const wsRoot = path.join(root, "ws");
    const ws = await prep("s");
    const old = new Date(Date.now() - STALE_AFTER_MS - 60_000);
    const staged = async (dir: string, age?: Date) => {
      await mkdir(path.join(dir, "sub"), { recursive: true });
      await writeFile(path.join(dir, "sub", "f.txt"), "x");
      if (age) await utimes(dir, age, age);
      return dir;
    };
    // A git template and a template copy whose runners were killed an hour ago.
    const deadTemplate = await staged(path.join(wsRoot, ".runner-git-template.tmp-aB3xY9"), old);
    const deadCopy = await staged(path.join(ws.sessionDir, ".repo-0123456789ab.tmp"), old);
    // The same of an older runner still at work beside this one, and names it never made.
    const kept = [
      await staged(path.join(wsRoot, ".runner-git-template.tmp-Zz0000")),
      await staged(path.join(wsRoot, "t", ".repo-ba9876543210.tmp")),
      await staged(path.join(wsRoot, "t", ".repo-notours.tmp"), old),
      await staged(path.join(wsRoot, "t", "repo-0123456789ab.tmp"), old),
      await staged(path.join(wsRoot, ".repo-0123456789ab.tmp"), old),
    ];
    expect((await sweepStaging(wsRoot)).sort()).toEqual([deadCopy, deadTemplate].sort());
    for (const dir of kept) expect(existsSync(dir), dir).toBe(true);
    // The session itself is untouched.
    expect((await prep("s")).createdRepo).toBe(false);
    expect(await readdir(ws.sessionDir)).not.toContain(".repo-0123456789ab.tmp");
  });

  it("judges an owner from /proc in its own pid namespace, and elsewhere by how long ago it was touched", async () => {
    expect(ownerGone(runnerOwner(), 0)).toBe(false);
    const child = spawn("sleep", ["60"], { stdio: "ignore" });
    await once(child, "spawn");
    const token = ownerOf(child.pid as number) as string;
    expect(ownerGone(token, 0)).toBe(false);
    // The same pid with another start time is another process (the pid was reused).
    const [boot, ns, pid, start] = token.split("-");
    expect(ownerGone(`${boot}-${ns}-${pid}-${Number(start) + 1}`, Date.now())).toBe(true);
    child.kill("SIGKILL");
    await once(child, "exit");
    expect(ownerGone(token, Date.now())).toBe(true);
    // Another namespace (a container, a host on a shared volume): alive while it is touched.
    const other = `${boot}-1-${pid}-${start}`;
    expect(ownerGone(other, Date.now() - 60_000)).toBe(false);
    expect(ownerGone(other, Date.now() - STALE_AFTER_MS - 60_000)).toBe(true);
    // Names from before owners are nobody's.
    expect(ownerGone("1a2b3c4d-7", Date.now())).toBe(true);
  });

  it("writes the provider's directories and files with a new and with an existing session", async () => {
    const files = (s: string) => ({
      dirs: [path.join(root, "ws", s, ".home", "sessions")],
      files: [
        { path: path.join(root, "ws", s, ".home", "settings.json"), content: `{"s":"${s}"}` },
      ],
    });
    const fresh = await prep("pf", { providerFiles: files("pf") });
    expect(fresh.createdRepo).toBe(true);
    const settings = path.join(fresh.sessionDir, ".home", "settings.json");
    expect(await readFile(settings, "utf8")).toBe('{"s":"pf"}');
    expect((await lstat(settings)).mode & 0o777).toBe(0o600);
    expect(existsSync(path.join(fresh.sessionDir, ".home", "sessions"))).toBe(true);
    await writeFile(settings, "stale");
    const again = await prep("pf", { providerFiles: files("pf") });
    expect(again.createdRepo).toBe(false);
    expect(await readFile(settings, "utf8")).toBe('{"s":"pf"}');
  });

  it("makes a provider directory outside the session (an admin's CODEX_HOME) for new and existing sessions", async () => {
    // It was refused as "not under" the session, which failed every run with an admin home.
    const adminHome = path.join(root, "admin", "codex-home");
    const files = { dirs: [adminHome], files: [] };
    const fresh = await prep("adm", { providerFiles: files });
    expect(fresh.createdRepo).toBe(true);
    expect((await lstat(adminHome)).isDirectory()).toBe(true);
    await rm(path.join(root, "admin"), { recursive: true });
    const again = await prep("adm", { providerFiles: files });
    expect(again.createdRepo).toBe(false);
    expect((await lstat(adminHome)).isDirectory()).toBe(true);
  });

  it("makes a provider's directories real again in an existing session (a provider with no files, as codex)", async () => {
    const dirs = (s: string) => ({ dirs: [path.join(root, "ws", s, ".home", "tmp")], files: [] });
    const outside = path.join(root, "outside-dirs");
    await mkdir(outside);
    const ws = await prep("pd", { providerFiles: dirs("pd") });
    const home = path.join(ws.sessionDir, ".home");
    const changes: [string, () => Promise<void>][] = [
      ["removed", () => rm(home, { recursive: true })],
      [
        "a link out of the session",
        async () => {
          await rm(home, { recursive: true });
          await symlink(outside, home);
        },
      ],
      [
        "a file",
        async () => {
          await rm(path.join(home, "tmp"), { recursive: true });
          await writeFile(path.join(home, "tmp"), "x");
        },
      ],
    ];
    for (const [what, change] of changes) {
      await change();
      await prep("pd", { providerFiles: dirs("pd") });
      expect((await lstat(home)).isDirectory(), what).toBe(true);
      expect((await lstat(path.join(home, "tmp"))).isDirectory(), what).toBe(true);
    }
    expect(await readdir(outside)).toEqual([]);
  });

  it("writes nothing through what the session's agent planted: symlinks, a hard link, a FIFO, a file for a directory", async () => {
    const outside = path.join(root, "outside");
    await mkdir(outside, { recursive: true });
    const victim = path.join(outside, "victim.txt");
    await writeFile(victim, "precious");
    const s = path.join(root, "ws", "planted");
    const files = {
      dirs: [path.join(s, ".home", "sessions"), path.join(s, ".tmp")],
      files: [
        { path: path.join(s, ".home", "cfg", "settings.json"), content: "settings" },
        { path: path.join(s, "system.json"), content: "system" },
        { path: path.join(s, "hard.json"), content: "hard" },
        { path: path.join(s, "fifo.json"), content: "fifo" },
      ],
    };
    await prep("planted", { providerFiles: files });
    // What an agent with write access to its session could leave for the next run:
    await rm(path.join(s, ".home"), { recursive: true });
    await symlink(outside, path.join(s, ".home")); // the provider home -> outside
    await rm(path.join(s, "system.json"));
    await symlink(victim, path.join(s, "system.json")); // a settings file -> outside
    await rm(path.join(s, "hard.json"));
    await link(victim, path.join(s, "hard.json")); // a hard link to an outside file
    await rm(path.join(s, "fifo.json"));
    execFileSync("mkfifo", [path.join(s, "fifo.json")]); // an open() that never returns
    await rm(path.join(s, ".tmp"), { recursive: true });
    await writeFile(path.join(s, ".tmp"), "a file where a directory goes");

    await prep("planted", { providerFiles: files });
    expect(await readFile(victim, "utf8")).toBe("precious");
    expect(await readdir(outside)).toEqual(["victim.txt"]);
    for (const dir of [".home", ".home/cfg", ".home/sessions", ".tmp"]) {
      expect((await lstat(path.join(s, dir))).isDirectory()).toBe(true);
    }
    for (const f of files.files) {
      expect((await lstat(f.path)).isFile()).toBe(true);
      expect(await readFile(f.path, "utf8")).toBe(f.content);
    }
    // No temporary file is left behind.
    expect((await readdir(s)).filter((n) => n.endsWith(".tmp") && n !== ".tmp")).toEqual([]);
  });

  it("rewrites AGENTS.md through a fresh file, never a link planted at a name it could guess", async () => {
    const outside = path.join(root, "outside-agents");
    await mkdir(outside, { recursive: true });
    const victim = path.join(outside, "victim.txt");
    await writeFile(victim, "precious");
    const { repoDir } = await prep("guess");
    const policy = await readFile(path.join(repoDir, "AGENTS.md"), "utf8");
    // The agent edits the policy file (so the next run rewrites it) and plants links at every
    // name a pid-and-clock temp name could take in the next seconds.
    await writeFile(path.join(repoDir, "AGENTS.md"), "edited by the agent");
    const now = Date.now();
    for (let t = now; t < now + 3000; t++) {
      await symlink(victim, path.join(repoDir, `AGENTS.md.tmp-${process.pid}-${t}`));
    }
    await prep("guess");
    expect(await readFile(victim, "utf8")).toBe("precious");
    expect(await readFile(path.join(repoDir, "AGENTS.md"), "utf8")).toBe(policy);
    expect((await lstat(path.join(repoDir, "AGENTS.md"))).isFile()).toBe(true);
  });

  it("repairs a .git the agent replaced by a FIFO without ever opening it", async () => {
    const { repoDir } = await prep("fifo-git");
    await rm(path.join(repoDir, ".git"), { recursive: true });
    execFileSync("mkfifo", [path.join(repoDir, ".git")]);
    await prep("fifo-git");
    expect(existsSync(path.join(repoDir, ".git", "HEAD"))).toBe(true);
  });

  it("names the provider's files when they cannot be written", async () => {
    await mkdir(path.join(root, "ws", "pfx"), { recursive: true });
    // A name longer than any file system allows (ENAMETOOLONG).
    const providerFiles = { dirs: [path.join(root, "ws", "pfx", "x".repeat(300))], files: [] };
    await expect(prep("pfx", { providerFiles })).rejects.toMatchObject({
      code: "WORKSPACE_SETUP_FAILED",
      message: expect.stringContaining("Could not prepare the provider's files"),
    });
  });

  it("takes the checking path for a session whose repo exists without a git repo", async () => {
    const repo = path.join(root, "ws", "nogit", "repo");
    await mkdir(repo, { recursive: true });
    await writeFile(path.join(repo, "mine.txt"), "kept");
    const ws = await prep("nogit", { providerAlias: "CLAUDE.md" });
    expect(ws.createdRepo).toBe(false);
    expect(await readFile(path.join(repo, "mine.txt"), "utf8")).toBe("kept");
    expect(existsSync(path.join(repo, ".git", "HEAD"))).toBe(true);
    expect(await readlink(path.join(repo, "CLAUDE.md"))).toBe("AGENTS.md");
    expect(existsSync(path.join(repo, "projects", "memory.md"))).toBe(true);
  });

  it("prepares different sessions concurrently", async () => {
    const results = await Promise.all(["a", "b", "c", "d"].map((s) => prep(s)));
    expect(results.map((r) => path.basename(path.dirname(r.repoDir)))).toEqual([
      "a",
      "b",
      "c",
      "d",
    ]);
  });
});
