import { lstatSync, readlinkSync } from "node:fs";
import { lstat, readFile, readlink, rm, stat, symlink, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { PROJECT_ROOT } from "../project-root.js";
import type { FsOp } from "./fs-batch/fs-batch.js";
import { readUntrustedFile, readUntrustedFileSync, replaceFileAtomic } from "./untrusted-file.js";

/** Built-in template (used when FERMILINK_SOFTWARE_ROOT does not exist). */
export const BUILTIN_TEMPLATE_DIR = path.join(PROJECT_ROOT, "src", "workspace", "template");

/** The built-in AGENTS.md never changes while the runner runs: read once. */
let builtinAgents: Promise<Buffer> | null = null;

/**
 * The template AGENTS.md's content: the admin's FERMILINK_SOFTWARE_ROOT/AGENTS.md
 * (read for every run, so an edit applies to the next run) wins over the
 * built-in one (fixes spec §10 item 14, where the packaged file shadowed it).
 */
export async function templateAgentsText(softwareRoot: string | null): Promise<Buffer> {
  if (softwareRoot) {
    const custom = path.join(softwareRoot, "AGENTS.md");
    // Followed: the admin's tree, not the agent's, and a policy file kept elsewhere and linked
    // in (config management) must not silently give way to the built-in one.
    if ((await stat(custom).catch(() => null))?.isFile()) return readFile(custom);
  }
  builtinAgents ??= readFile(path.join(BUILTIN_TEMPLATE_DIR, "AGENTS.md"));
  builtinAgents.catch(() => {
    builtinAgents = null;
  });
  return builtinAgents;
}

/** An AGENTS.md larger than this is not the template's, whatever it holds: it is rewritten. */
const MAX_AGENTS_BYTES = 4 * 1024 * 1024;

/**
 * Make `repo/AGENTS.md` the template's (the policy file is the runner's, so a
 * package or an edit cannot replace it), then the provider alias rules of
 * spec §4.3 step 3: the active alias is a relative symlink to AGENTS.md (a
 * copy when symlinks fail); inactive aliases are removed only when they are
 * symlinks; real alias files are never touched.
 */
export async function syncAgentsFile(
  repoDir: string,
  wanted: Buffer,
  providerAlias: string | null,
  knownAliases: readonly string[],
): Promise<void> {
  const target = path.join(repoDir, "AGENTS.md");
  const st = await lstat(target).catch(() => null);
  // The agent can write its repo: the file is read as untrusted (no FIFO or link is opened).
  const current = st?.isFile() ? await readUntrustedFile(target, MAX_AGENTS_BYTES) : null;
  if (current !== wanted.toString("utf8")) {
    if (st && !st.isFile()) await rm(target, { recursive: true, force: true });
    await replaceFileAtomic(target, wanted);
  }
  for (const alias of knownAliases) {
    if (alias === providerAlias) continue;
    const p = path.join(repoDir, alias);
    if ((await lstat(p).catch(() => null))?.isSymbolicLink()) await unlink(p).catch(unlessGone);
  }
  if (providerAlias) await syncAlias(path.join(repoDir, providerAlias), wanted);
}

/**
 * True when `syncAgentsFile` would change nothing: AGENTS.md is the template's,
 * no inactive alias is a symlink, and the active alias is the link (or a real
 * file, which is left alone). Synchronous and read-only (a few lstat calls and
 * one untrusted read, microseconds): a session's every later run checks this
 * first instead of a dozen thread-pool round trips.
 */
export function agentsFileInPlace(
  repoDir: string,
  wanted: Buffer,
  providerAlias: string | null,
  knownAliases: readonly string[],
): boolean {
  const target = path.join(repoDir, "AGENTS.md");
  if (!lstatSync(target, { throwIfNoEntry: false })?.isFile()) return false;
  if (readUntrustedFileSync(target, MAX_AGENTS_BYTES) !== wanted.toString("utf8")) return false;
  for (const alias of knownAliases) {
    if (alias === providerAlias) continue;
    if (lstatSync(path.join(repoDir, alias), { throwIfNoEntry: false })?.isSymbolicLink())
      return false;
  }
  if (providerAlias === null) return true;
  const aliasPath = path.join(repoDir, providerAlias);
  const ast = lstatSync(aliasPath, { throwIfNoEntry: false });
  if (!ast) return false;
  if (!ast.isSymbolicLink()) return true;
  try {
    return readlinkSync(aliasPath) === "AGENTS.md";
  } catch {
    return false;
  }
}

/** Rethrows anything but ENOENT: what was to be removed is gone already (the agent's doing). */
function unlessGone(err: NodeJS.ErrnoException): void {
  if (err.code !== "ENOENT") throw err;
}

/**
 * Rounds of looking at the alias and making it: a process left over from an
 * earlier run may still be changing the repo, and each round it changed the
 * alias under us starts again. After the last, what it left stays, as a real
 * alias file would: the repo is the agent's, only writing outside it matters.
 */
const ALIAS_ROUNDS = 3;

/** The active alias: the link is kept or made; a real file (the user's) is left alone. */
async function syncAlias(aliasPath: string, wanted: Buffer): Promise<void> {
  for (let round = 0; round < ALIAS_ROUNDS; round++) {
    const ast = await lstat(aliasPath).catch(() => null);
    if (ast?.isSymbolicLink()) {
      const to = await readlink(aliasPath).catch(() => null);
      if (to === "AGENTS.md") return;
      // No longer a link (or gone): look again.
      if (to === null) continue;
      await unlink(aliasPath).catch(unlessGone);
    } else if (ast) {
      return;
    }
    if (await linkAlias(aliasPath, wanted)) return;
  }
}

/**
 * The alias as a relative symlink to AGENTS.md, or a copy where symlinks fail;
 * false when something took its place first. Never a copy over what took it:
 * that may be a link out of the repo, and a copy opened through it would
 * overwrite whatever it names. The copy is created exclusively (O_EXCL opens
 * no link) from the template's text in hand, not from the repo's AGENTS.md,
 * which the agent could have made a link to a file it may not read.
 */
async function linkAlias(aliasPath: string, wanted: Buffer): Promise<boolean> {
  try {
    await symlink("AGENTS.md", aliasPath);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
  }
  try {
    await writeFile(aliasPath, wanted, { flag: "wx" });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
}

/** AGENTS.md and the provider alias in a repo the caller has just created empty, as file-system ops. */
export function freshAgentsFileOps(
  repoDir: string,
  wanted: Buffer,
  providerAlias: string | null,
): FsOp[] {
  return [
    { op: "write", path: path.join(repoDir, "AGENTS.md"), content: wanted },
    ...aliasLinkOps(repoDir, providerAlias),
  ];
}

/** The provider alias of a repo whose AGENTS.md is the template's, as file-system ops. */
export function aliasLinkOps(repoDir: string, providerAlias: string | null): FsOp[] {
  if (!providerAlias) return [];
  const target = path.join(repoDir, "AGENTS.md");
  return [
    { op: "link", path: path.join(repoDir, providerAlias), target: "AGENTS.md", copyFrom: target },
  ];
}
