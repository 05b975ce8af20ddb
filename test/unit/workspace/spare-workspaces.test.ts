import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createLogger } from "../../../src/log/logger.js";
import { FsBatchRunner } from "../../../src/workspace/fs-batch/fs-batch.js";
import { ownerOf, runnerOwner } from "../../../src/workspace/owner.js";
import { builtinSpareContent, prepareWorkspace } from "../../../src/workspace/prepare-workspace.js";
import {
  SPARES_DIRNAME,
  type SpareContent,
  type SpareOutcome,
  SpareWorkspaces,
} from "../../../src/workspace/spare-workspaces.js";
import { capturedLog } from "../../helpers/captured-log.js";

let root: string;
let ws: string;
let fs: FsBatchRunner;
const pools: SpareWorkspaces[] = [];
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "flr-spare-"));
  ws = path.join(root, "ws");
  await mkdir(ws);
  fs = new FsBatchRunner();
});
afterEach(async () => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
  for (const p of pools.splice(0)) await p.stop();
  await fs.close();
  await rm(root, { recursive: true, force: true });
});

function pool(
  target: number,
  workspacesRoot = ws,
  retryAfterFailureMs?: number,
  extra: { owner?: string; content?: () => Promise<SpareContent> } = {},
): SpareWorkspaces {
  const p = new SpareWorkspaces({
    workspacesRoot,
    target,
    content: () => builtinSpareContent(workspacesRoot),
    fs,
    logger: createLogger("silent"),
    ...(retryAfterFailureMs === undefined ? {} : { retryAfterFailureMs }),
    ...extra,
  });
  pools.push(p);
  return p;
}

const children: ChildProcess[] = [];

/** The owner token of another process that is running (killed after the test). */
async function liveOwner(): Promise<string> {
  const child = spawn("sleep", ["60"], { stdio: "ignore" });
  children.push(child);
  await once(child, "spawn");
  return ownerOf(child.pid as number) as string;
}

/** The owner token of a process that ran and is gone. */
async function deadOwner(): Promise<string> {
  const child = spawn("sleep", ["60"], { stdio: "ignore" });
  await once(child, "spawn");
  const token = ownerOf(child.pid as number) as string;
  child.kill("SIGKILL");
  await once(child, "exit");
  return token;
}

/** A pool started and filled. */
async function filledPool(target: number): Promise<SpareWorkspaces> {
  const p = pool(target);
  await p.start();
  await p.whenFilled();
  return p;
}

/** Every entry under `dir`: path, kind, mode, and the content or link target. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(path.join(dir, rel))).sort()) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const p = path.join(dir, r);
      const st = await lstat(p);
      const mode = (st.mode & 0o777).toString(8);
      if (st.isSymbolicLink()) out.push(`${r} -> ${await readlink(p)}`);
      else if (st.isDirectory()) {
        out.push(`${r}/ ${mode}`);
        await walk(r);
      } else out.push(`${r} ${mode} ${JSON.stringify(await readFile(p, "utf8"))}`);
    }
  };
  await walk("");
  return out;
}

const NOW = new Date("2026-11-28T12:00:00Z");
const prep = (sessionId: string, spares: SpareWorkspaces | undefined, root2 = ws) =>
  prepareWorkspace({
    workspacesRoot: root2,
    sessionId,
    softwareRoot: null,
    providerAlias: "CLAUDE.md",
    knownAliases: ["CLAUDE.md", "GEMINI.md"],
    prompt: "simulate a dipole",
    now: NOW,
    spares,
    providerFiles: {
      dirs: [path.join(root2, sessionId, ".tmp"), path.join(root2, sessionId, ".claude-home")],
      files: [{ path: path.join(root2, sessionId, ".claude-home", "s.json"), content: "{}" }],
    },
  });

describe("file-system worker ops for spares", () => {
  it("claims by rename, refusing any existing target (an empty directory included); removes trees", async () => {
    const from = path.join(root, "from");
    await mkdir(path.join(from, "sub"), { recursive: true });
    const taken = path.join(root, "taken");
    await mkdir(taken);
    expect(await fs.run([{ op: "claim", from, to: taken }])).toMatchObject({
      failedAt: 0,
      code: "EEXIST",
    });
    expect(existsSync(path.join(from, "sub"))).toBe(true);
    const to = path.join(root, "to");
    expect((await fs.run([{ op: "claim", from, to }])).failedAt).toBe(-1);
    expect(existsSync(path.join(to, "sub"))).toBe(true);
    expect(existsSync(from)).toBe(false);
    expect((await fs.run([{ op: "remove", path: to }])).failedAt).toBe(-1);
    expect(existsSync(to)).toBe(false);
  });
});

describe("SpareWorkspaces", () => {
  it("keeps `target` spares ready, each a new session's directory with nothing of a run in it", async () => {
    const spares = await filledPool(3);
    expect(spares.readyCount).toBe(3);
    const keyDirs = await readdir(path.join(ws, SPARES_DIRNAME));
    expect(keyDirs).toHaveLength(1);
    // Under this runner's own directory (owner.ts).
    const mine = path.join(ws, SPARES_DIRNAME, keyDirs[0] as string, runnerOwner());
    const names = await readdir(mine);
    expect(names.filter((n) => !n.startsWith("."))).toHaveLength(3);
    const one = path.join(mine, names[0] as string);
    const layout = await tree(one);
    expect(layout).toContain(".tmp/ 755");
    expect(layout).toContain('repo/projects/.memory.md.tmp 644 ""');
    expect(layout.some((l) => l.startsWith("repo/projects/memory.md"))).toBe(false);
    expect(layout.some((l) => l.startsWith("repo/.git/HEAD "))).toBe(true);
  });

  it("gives a new session exactly the tree it gets without spares, by renaming one, then makes another", async () => {
    const spares = await filledPool(2);
    const spare = spares.take() as string;
    spares.settle(spare, "unused");
    const inode = (await stat(spare)).ino;

    const made = await prep("with-spare", spares);
    expect(made.createdRepo).toBe(true);
    // The same directory, moved: a spare was used, not a new tree written.
    expect((await stat(made.sessionDir)).ino).toBe(inode);
    expect(existsSync(spare)).toBe(false);

    const plainRoot = path.join(root, "plain");
    await mkdir(plainRoot);
    const plain = await prep("with-spare", undefined, plainRoot);
    expect(await tree(made.sessionDir)).toEqual(await tree(plain.sessionDir));
    expect(await readFile(path.join(made.repoDir, "projects", "memory.md"), "utf8")).toContain(
      "simulate a dipole",
    );

    await spares.whenFilled();
    expect(spares.readyCount).toBe(2);
  });

  it("leaves a session that exists to the checking path without taking the spare from the next one", async () => {
    const spares = await filledPool(1);
    const first = await prep("again", undefined);
    await writeFile(path.join(first.repoDir, "projects", "memory.md"), "the agent's notes");
    const outcomes: SpareOutcome[] = [];
    const watched = {
      take: () => spares.take(),
      settle: (dir: string, outcome: SpareOutcome) => {
        outcomes.push(outcome);
        spares.settle(dir, outcome);
      },
    };
    const again = await prepareWorkspace({
      workspacesRoot: ws,
      sessionId: "again",
      softwareRoot: null,
      providerAlias: null,
      knownAliases: [],
      prompt: "x",
      spares: watched,
    });
    expect(again.createdRepo).toBe(false);
    // Seen to exist before any claim: no spare taken (a claim that loses to a session made
    // meanwhile returns its spare as "unused").
    expect(outcomes).toEqual([]);
    expect(spares.readyCount).toBe(1);
    expect(await readFile(path.join(again.repoDir, "projects", "memory.md"), "utf8")).toBe(
      "the agent's notes",
    );
  });

  it("drops a spare that is gone and prepares the session file by file", async () => {
    const spares = await filledPool(1);
    const spare = spares.take() as string;
    await rm(spare, { recursive: true });
    const outcomes: SpareOutcome[] = [];
    const made = await prepareWorkspace({
      workspacesRoot: ws,
      sessionId: "gone",
      softwareRoot: null,
      providerAlias: null,
      knownAliases: [],
      prompt: "x",
      spares: {
        take: () => spare,
        settle: (_dir, outcome) => outcomes.push(outcome),
      },
    });
    expect(outcomes).toEqual(["broken"]);
    expect(made.createdRepo).toBe(true);
    expect(existsSync(path.join(made.repoDir, ".git", "HEAD"))).toBe(true);
    // No new spare is made right after one could not be claimed (it could fail the same way).
    spares.settle(spare, "broken");
    await spares.whenFilled();
    expect(spares.readyCount).toBe(0);
  });

  it("takes over a gone runner's spares of its layout and removes the rest of what gone runners left", async () => {
    const dead = await deadOwner();
    const first = pool(2, ws, undefined, { owner: dead });
    await first.start();
    await first.whenFilled();
    await first.stop();
    const left = [first.take() as string, first.take() as string];
    const inodes = new Set(await Promise.all(left.map(async (p) => (await stat(p)).ino)));
    const base = path.join(ws, SPARES_DIRNAME);
    const [key] = await readdir(base);
    const keyDir = path.join(base, key as string);
    // Half-made by the gone runner; another layout's, gone too; one from before owners.
    await mkdir(path.join(keyDir, dead, ".building-3", "repo"), { recursive: true });
    await mkdir(path.join(base, "0123456789abcdef", dead, "1"), { recursive: true });
    await mkdir(path.join(base, "fedcba9876543210", "deadbeef-1"), { recursive: true });
    // What a removal cut short left (renamed aside first, so no runner takes a half-removed
    // spare from it): removed, never taken, though it holds a spare's name.
    await mkdir(path.join(keyDir, ".trash-0a1b2c3d4e5f", "1", "repo"), { recursive: true });

    const second = await filledPool(2);
    expect(second.readyCount).toBe(2);
    // The same directories, moved into this runner's own: none was made anew.
    const taken = [second.take() as string, second.take() as string];
    expect(taken.every((p) => path.dirname(p) === path.join(keyDir, runnerOwner()))).toBe(true);
    expect(new Set(await Promise.all(taken.map(async (p) => (await stat(p)).ino)))).toEqual(inodes);
    expect(await readdir(keyDir)).toEqual([runnerOwner()]);
    expect(await readdir(base)).toEqual([key]);
  });

  it("never removes or takes a live runner's spares, of its layout or of another (a rolling deploy)", async () => {
    // Two other runners, alive: one with an older template (another layout), one with this one's.
    const older = pool(2, ws, undefined, {
      owner: await liveOwner(),
      content: async () => ({ ...(await builtinSpareContent(ws)), agents: Buffer.from("old") }),
    });
    const same = pool(2, ws, undefined, { owner: await liveOwner() });
    for (const p of [older, same]) {
      await p.start();
      await p.whenFilled();
    }
    const theirs = [older.take(), older.take(), same.take(), same.take()] as string[];

    const mine = await filledPool(2);
    expect(mine.readyCount).toBe(2);
    for (const p of theirs) expect(existsSync(path.join(p, "repo", ".git", "HEAD")), p).toBe(true);
    const own = [mine.take(), mine.take()] as string[];
    expect(own.some((p) => theirs.includes(p))).toBe(false);
  });

  it("makes spares only while the worker has nothing else to do, and waits for them within a bound", async () => {
    const spares = pool(2);
    // The git template made first: start() then takes well under the busy batch's time.
    await builtinSpareContent(ws);
    const busy = Array.from({ length: 2000 }, (_, i) => ({
      op: "mkdir" as const,
      path: path.join(root, `busy-${i}`),
    }));
    const a = fs.run(busy);
    await spares.start();
    // Bounded wait (start-up's): back before any spare could be made.
    await spares.whenFilled(5);
    expect(spares.readyCount).toBe(0);
    // Sent while `a` runs: it goes before any spare.
    const b = await fs.run([{ op: "mkdir", path: path.join(root, "b") }]);
    expect(b.failedAt).toBe(-1);
    expect((await a).failedAt).toBe(-1);
    expect(spares.readyCount).toBe(0);
    await spares.whenFilled();
    expect(spares.readyCount).toBe(2);
  });

  it("makes nothing with a target of 0, and stays empty when its directory cannot be made", async () => {
    const none = pool(0);
    await none.start();
    expect(existsSync(path.join(ws, SPARES_DIRNAME))).toBe(false);
    expect(none.take()).toBeNull();

    const blocked = path.join(root, "blocked");
    await mkdir(blocked);
    await writeFile(path.join(blocked, SPARES_DIRNAME), "a file where the spares go");
    const broken = pool(2, blocked);
    await broken.start();
    await broken.whenFilled();
    expect(broken.take()).toBeNull();
    const made = await prep("still-works", broken, blocked);
    expect(made.createdRepo).toBe(true);
  });

  it("gets its content again after a pause when it could not at start-up, logging the first failure", async () => {
    const { logger, lines } = capturedLog("info");
    let calls = 0;
    const spares = new SpareWorkspaces({
      workspacesRoot: ws,
      target: 2,
      content: async () => {
        // Twice unavailable (a git that failed for a moment), then there.
        if (++calls <= 2) throw new Error("git init failed");
        return builtinSpareContent(ws);
      },
      fs,
      logger,
      retryAfterFailureMs: 50,
    });
    pools.push(spares);
    await spares.start();
    await spares.whenFilled();
    expect(spares.take()).toBeNull();
    for (let i = 0; i < 200 && spares.readyCount < 2; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect([calls, spares.readyCount]).toEqual([3, 2]);
    const said = lines.map((l) => l.msg ?? "").filter((m) => m.startsWith("spare workspaces"));
    expect(said).toEqual([
      "spare workspaces unavailable for now; new sessions are made file by file",
      "spare workspaces available",
    ]);
    // One made after the retry becomes a new session, as any spare does.
    const spare = spares.take() as string;
    spares.settle(spare, "unused");
    const inode = (await stat(spare)).ino;
    const made = await prep("after-retry", spares);
    expect((await stat(made.sessionDir)).ino).toBe(inode);
  });

  it("stops trying to set up once stopped", async () => {
    let calls = 0;
    const spares = pool(2, ws, 20, {
      content: async () => {
        calls++;
        throw new Error("never there");
      },
    });
    await spares.start();
    await spares.stop();
    const after = calls;
    await new Promise((r) => setTimeout(r, 100));
    expect(calls).toBe(after);
  });

  it("makes spares again after the pause that follows a failure, with no claim to wake it", async () => {
    const spares = pool(2, ws, 100);
    await spares.start();
    await spares.whenFilled();
    const keyDir = path.dirname(spares.take() as string);
    spares.take();
    // The pool's directory gone and a file in its place: the next spare cannot be made.
    await rm(keyDir, { recursive: true });
    await writeFile(keyDir, "in the way");
    spares.settle(path.join(keyDir, "gone"), "broken");
    await spares.whenFilled();
    expect(spares.readyCount).toBe(0);
    await rm(keyDir);
    await mkdir(keyDir);
    for (let i = 0; i < 100 && spares.readyCount < 2; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(spares.readyCount).toBe(2);
  });

  it("survives the worker dying under a batch of spares: no crash, and it makes them again", async () => {
    const spares = pool(50, ws, 100);
    const content = await builtinSpareContent(ws);
    expect(content.agents.length).toBeGreaterThan(0);
    await spares.start();
    // The worker killed while it makes the first spares: their batch is rejected.
    await fs.close();
    await spares.whenFilled();
    for (let i = 0; i < 200 && spares.readyCount < 50; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(spares.readyCount).toBe(50);
  });
});
