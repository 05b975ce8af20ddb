/**
 * Where a tree is made before it is renamed into place (a session's template
 * copy, the pristine git repo): `<root>/.runner-staging/<owner>/<name>`. A
 * runner killed part way leaves its staging directory there, and the next
 * runner to start removes those whose owner is gone (owner.ts) without a
 * look into every session (only what runners before staging directories
 * left in sessions needs that look).
 */
import { randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { keepFresh, ownerGone, runnerOwner, STALE_AFTER_MS } from "./owner.js";

/** Under the workspaces root; a dot name, so no session id can take it. */
export const STAGING_DIRNAME = ".runner-staging";

/** A new path in this runner's staging directory of `root` (nothing is made there yet). */
export async function stagingPath(root: string, label: string): Promise<string> {
  const mine = path.join(root, STAGING_DIRNAME, runnerOwner());
  await mkdir(mine, { recursive: true });
  keepFresh(mine);
  return path.join(mine, `${label}-${randomBytes(6).toString("hex")}`);
}

/**
 * Where runners before session 22 staged: the git template as
 * `<root>/.runner-git-template.tmp-XXXXXX` (mkdtemp), a template copy as
 * `<session dir>/.repo-<12 hex>.tmp` (where this runner still stages a copy
 * into a session dir on another file system).
 */
const OLD_GIT_TEMPLATE = /^\.runner-git-template\.tmp-[A-Za-z0-9]{6}$/;
const OLD_COPY = /^\.repo-[0-9a-f]{12}\.tmp$/;

/**
 * Remove what runners that are gone left in `root`'s staging directory
 * (start-up calls it), and what runners before staging directories left
 * staged elsewhere. `self`: the caller's owner token, never removed. Returns
 * the directories removed.
 */
export async function sweepStaging(root: string, self = runnerOwner()): Promise<string[]> {
  const base = path.join(root, STAGING_DIRNAME);
  const names = await readdir(base).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    if (name === self) continue;
    const dir = path.join(base, name);
    const st = await lstat(dir).catch(() => null);
    if (st === null || !ownerGone(name, st.mtimeMs)) continue;
    await rm(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed.concat(await sweepOldStaging(root));
}

/**
 * What runners before staging directories left staged: such a name names no
 * owner, and an older runner may still run beside this one (a rolling
 * deploy), so it is removed once untouched for STALE_AFTER_MS, as a
 * directory of an owner that cannot be looked up. A look into every session
 * directory, one at a time: in the background, and not to hold the thread
 * pool from the runs.
 */
async function sweepOldStaging(root: string): Promise<string[]> {
  const removed: string[] = [];
  const removeIfOld = async (dir: string) => {
    const st = await lstat(dir).catch(() => null);
    if (st === null || Date.now() - st.mtimeMs <= STALE_AFTER_MS) return;
    await rm(dir, { recursive: true, force: true });
    removed.push(dir);
  };
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (OLD_GIT_TEMPLATE.test(name)) await removeIfOld(path.join(root, name));
    // The runner's own directories are dot names; no session id starts with a dot.
    if (name.startsWith(".")) continue;
    const session = path.join(root, name);
    for (const entry of await readdir(session).catch(() => [] as string[]))
      if (OLD_COPY.test(entry)) await removeIfOld(path.join(session, entry));
  }
  return removed;
}
