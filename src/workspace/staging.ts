/**
 * Where a tree is made before it is renamed into place (a session's template
 * copy, the pristine git repo): `<root>/.runner-staging/<owner>/<name>`. A
 * runner killed part way leaves its staging directory there, and the next
 * runner to start removes those whose owner is gone (owner.ts) without a
 * look into every session.
 */
import { randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { keepFresh, ownerGone, runnerOwner } from "./owner.js";

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
 * Remove what runners that are gone left in `root`'s staging directory
 * (start-up calls it). `self`: the caller's owner token, never removed.
 * Returns the owner directories removed.
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
  return removed;
}
