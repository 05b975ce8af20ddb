import { execFile } from "node:child_process";
import { constants, statSync } from "node:fs";
import { lstat, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";
import { type FsOp, workspaceFs } from "./fs-batch/fs-batch.js";
import { stagingPath } from "./staging.js";
import { readUntrustedFileSync } from "./untrusted-file.js";

/** A `.git` file holds one `gitdir: <path>` line. */
const MAX_GITDIR_FILE_BYTES = 64 * 1024;

/**
 * FermiLink's validity rule (spec §4.3 step 4): `.git` dir with HEAD, or a
 * `gitdir:` file; a `.git` dir also needs what git itself looks for before it
 * takes a directory for a repo: a HEAD that is not empty, `objects/` and
 * `refs/`. A runner killed while it wrote the repo leaves HEAD empty (created,
 * not yet written) or missing, and `git init` killed part way can leave
 * `objects/` out: git then says "not a git repository" in the session, or
 * finds a repo above the workspaces root and works in that one. Such a `.git`
 * counts as unfinished and is repaired (`ensureGitRepo`). Synchronous: a few
 * stat calls and at most one read of a small file, microseconds, where each
 * thread-pool round trip costs more.
 */
export function isGitRepo(repoDir: string): boolean {
  const dotGit = path.join(repoDir, ".git");
  const stOf = (p: string) => {
    try {
      return statSync(p, { throwIfNoEntry: false });
    } catch {
      return undefined;
    }
  };
  const st = stOf(dotGit);
  if (!st) return false;
  if (st.isDirectory()) {
    const head = stOf(path.join(dotGit, "HEAD"));
    return (
      head !== undefined &&
      !(head.isFile() && head.size === 0) &&
      stOf(path.join(dotGit, "objects"))?.isDirectory() === true &&
      stOf(path.join(dotGit, "refs"))?.isDirectory() === true
    );
  }
  // The agent can put anything at .git (a FIFO, a link to /dev/zero): read it as untrusted.
  return readUntrustedFileSync(dotGit, MAX_GITDIR_FILE_BYTES)?.startsWith("gitdir:") ?? false;
}

function gitInit(dir: string, env: NodeJS.ProcessEnv, target: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    execFile(
      "git",
      ["init", "-q"],
      { cwd: dir, env, timeout: 30_000, maxBuffer: 64 * 1024 },
      (err, _out, stderr) => {
        if (!err) return resolve();
        const code = (err as NodeJS.ErrnoException).code;
        reject(
          new RunnerError(
            "WORKSPACE_SETUP_FAILED",
            code === "ENOENT"
              ? `Git is required but not found on PATH, and ${target} is not a valid git repo.`
              : `Failed to initialize git repo at ${target}: ${String(stderr).trim() || err.message}`,
            { cause: err },
          ),
        );
      },
    );
  });
}

/** An empty repo as directories to make (parents first) and files to write. */
export interface GitSkeleton {
  dirs: string[];
  files: { rel: string; content: Buffer }[];
}

/**
 * What `git init` writes that nothing needs until it is used: git creates
 * these on demand (sample hooks, gitweb's description, the legacy branches
 * dir, the comment-only info/exclude, empty pack dirs). Leaving them out
 * makes a new session's repo 4 directories and 2 files instead of 14 entries.
 */
const ON_DEMAND = new Set([
  "hooks",
  "description",
  "branches",
  "info",
  "objects/info",
  "objects/pack",
]);

/**
 * Code-unit order: any fixed order keeps the skeleton the same from run to
 * run, and `localeCompare` would load ICU's collation data (2-3 MB of
 * resident memory) into the runner at its first new session.
 */
const byName = (a: { name: string }, b: { name: string }) =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

async function readSkeleton(gitDir: string): Promise<GitSkeleton> {
  const skeleton: GitSkeleton = { dirs: [], files: [] };
  const walk = async (rel: string): Promise<void> => {
    const entries = await readdir(path.join(gitDir, rel), { withFileTypes: true });
    for (const e of entries.sort(byName)) {
      const child = rel === "" ? e.name : `${rel}/${e.name}`;
      if (ON_DEMAND.has(child)) continue;
      if (e.isDirectory()) {
        skeleton.dirs.push(child);
        await walk(child);
      } else if (e.isFile()) {
        skeleton.files.push({ rel: child, content: await readFile(path.join(gitDir, child)) });
      }
    }
  };
  await walk("");
  return skeleton;
}

/** One skeleton per template dir and process, read from a repo the real `git init` made once. */
const pristine = new Map<string, Promise<GitSkeleton>>();

/**
 * The layout of an empty repo made by `git init` (so the host's git and its
 * `init.*` settings decide it: branch name, ref format, config), made once
 * and kept in memory: a new session writes it instead of starting a git
 * process or copying a tree, which keeps a burst of new sessions from
 * queueing behind hundreds of process spawns or file-system walks.
 */
export function gitSkeleton(
  templateDir: string,
  env: NodeJS.ProcessEnv,
  target: string,
): Promise<GitSkeleton> {
  let made = pristine.get(templateDir);
  if (!made) {
    made = sharedOrOwnSkeleton(templateDir, env, target);
    pristine.set(templateDir, made);
    // A failure (git missing) is retried by the next run rather than cached forever.
    made.catch(() => pristine.delete(templateDir));
  }
  return made;
}

/** The shared template's layout, or null when it is not valid or went away while it was read. */
async function readShared(templateDir: string): Promise<GitSkeleton | null> {
  if (!isGitRepo(templateDir)) return null;
  return readSkeleton(path.join(templateDir, ".git")).catch(() => null);
}

/**
 * Runners sharing the workspaces root (a rolling deploy) share the template,
 * and one may replace it (found broken) while another reads it: a read of
 * the shared one that fails falls back to a repo of this runner's own, and
 * this runner's own is read before it is put in place, so that the layout
 * this runner keeps never depends on a tree another runner may move.
 */
async function sharedOrOwnSkeleton(
  templateDir: string,
  env: NodeJS.ProcessEnv,
  target: string,
): Promise<GitSkeleton> {
  const shared = await readShared(templateDir);
  if (shared) return shared;
  const root = path.dirname(templateDir);
  // Made in this runner's staging directory: a runner killed during `git init` leaves
  // nothing that the next one to start does not remove.
  const tmp = await stagingPath(root, "git-template");
  await mkdir(tmp);
  try {
    try {
      await gitInit(tmp, env, target);
    } catch (err) {
      // Another runner's template can still serve where this host's git failed.
      const theirs = await readShared(templateDir);
      if (theirs) return theirs;
      throw err;
    }
    const own = await readSkeleton(path.join(tmp, ".git"));
    if (!isGitRepo(templateDir)) {
      // Moved aside whole, not removed in place: a removal under way there could catch a template
      // another runner renames in meanwhile, and readers would see half a tree.
      const aside = await stagingPath(root, "broken-git-template");
      try {
        await rename(templateDir, aside);
        await rm(aside, { recursive: true, force: true });
      } catch {
        // Nothing there (ENOENT); or it stays in this runner's staging, swept once it is gone.
      }
    }
    const taken = await rename(tmp, templateDir).then(
      () => false,
      // Another runner's template is there: used when it is valid, so that runners sharing a root
      // agree on the layout. Any other failure leaves the template to the next runner.
      (err: NodeJS.ErrnoException) => err.code === "ENOTEMPTY" || err.code === "EEXIST",
    );
    return (taken ? await readShared(templateDir) : null) ?? own;
  } finally {
    // Nothing left to remove once it was renamed into place.
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Make `repoDir` a git repo when it is not one (FermiLink runs `git init -q`;
 * the result here is the same empty repo, written from the pristine one's
 * layout), with FermiLink's messages on failure.
 */
export async function ensureGitRepo(
  repoDir: string,
  env: NodeJS.ProcessEnv,
  templateDir: string,
): Promise<void> {
  if (isGitRepo(repoDir)) return;
  const skeleton = await gitSkeleton(templateDir, env, repoDir);
  const dotGit = path.join(repoDir, ".git");
  if ((await lstat(dotGit).catch(() => null))?.isDirectory()) {
    // A real .git that lost its HEAD still holds the session's history, which FermiLink's
    // `git init -q` keeps: only what is missing is added, never the directory replaced.
    await restoreGitDir(dotGit, skeleton);
  } else {
    await rm(dotGit, { recursive: true, force: true });
    const written = await workspaceFs.run(freshGitRepoOps(repoDir, skeleton));
    // The OS error as it is; prepareWorkspace reports it as a workspace setup failure.
    if (written.failedAt >= 0)
      throw Object.assign(new Error(written.message), { code: written.code });
  }
  if (!isGitRepo(repoDir)) {
    throw new RunnerError(
      "WORKSPACE_SETUP_FAILED",
      `Git did not produce a valid git repo at ${repoDir}.`,
    );
  }
}

function keepExisting(err: NodeJS.ErrnoException): void {
  if (err.code !== "EEXIST") throw err;
}

/** True when every directory from `dotGit` down to `rel`'s parent is a real one, not a link. */
async function realParents(dotGit: string, rel: string): Promise<boolean> {
  let at = dotGit;
  for (const part of path.dirname(rel).split("/")) {
    if (part === ".") continue;
    at = path.join(at, part);
    if (!(await lstat(at).catch(() => null))?.isDirectory()) return false;
  }
  return true;
}

/**
 * Add the skeleton's missing parts to an existing `.git`, as `git init` does
 * when it reinitialises. Nothing there is replaced, and no link the agent
 * planted inside is gone through (it could lead out of the session).
 */
async function restoreGitDir(dotGit: string, skeleton: GitSkeleton): Promise<void> {
  // An empty HEAD is a write cut short (git never leaves one): it holds nothing to keep, and
  // the skeleton's takes its place. Not through a link: O_NOFOLLOW.
  const head = path.join(dotGit, "HEAD");
  const headSt = await lstat(head).catch(() => null);
  const fresh = skeleton.files.find((f) => f.rel === "HEAD");
  if (headSt?.isFile() && headSt.size === 0 && fresh !== undefined) {
    const flags = constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW;
    await writeFile(head, fresh.content, { flag: flags });
  }
  for (const d of skeleton.dirs) {
    if (await realParents(dotGit, d)) await mkdir(path.join(dotGit, d)).catch(keepExisting);
  }
  for (const f of skeleton.files) {
    if (await realParents(dotGit, f.rel))
      await writeFile(path.join(dotGit, f.rel), f.content, { flag: "wx" }).catch(keepExisting);
  }
}

/** The empty repo written into `repoDir`, which has no `.git` (just created, or removed first), as file-system ops. */
export function freshGitRepoOps(repoDir: string, skeleton: GitSkeleton): FsOp[] {
  const dst = path.join(repoDir, ".git");
  return [
    { op: "mkdir", path: dst },
    ...skeleton.dirs.map((d): FsOp => ({ op: "mkdir", path: path.join(dst, d) })),
    ...skeleton.files.map(
      (f): FsOp => ({ op: "write", path: path.join(dst, f.rel), content: f.content }),
    ),
  ];
}
