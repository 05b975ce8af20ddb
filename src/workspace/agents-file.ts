import { copyFile, lstat, readFile, readlink, rm, symlink, unlink } from "node:fs/promises";
import path from "node:path";
import { PROJECT_ROOT } from "../project-root.js";
import type { FsOp } from "./fs-batch/fs-batch.js";
import { readUntrustedFile, replaceFileAtomic } from "./untrusted-file.js";

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
    if ((await lstat(custom).catch(() => null))?.isFile()) return readFile(custom);
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
    if ((await lstat(p).catch(() => null))?.isSymbolicLink()) await unlink(p);
  }
  if (!providerAlias) return;
  const aliasPath = path.join(repoDir, providerAlias);
  const ast = await lstat(aliasPath).catch(() => null);
  if (ast?.isSymbolicLink()) {
    if ((await readlink(aliasPath)) === "AGENTS.md") return;
    await unlink(aliasPath);
  } else if (ast) {
    return; // a real file: the user's, left alone
  }
  await linkAlias(target, aliasPath);
}

/** The alias as a relative symlink to AGENTS.md, or a copy where symlinks fail. */
async function linkAlias(target: string, aliasPath: string): Promise<void> {
  try {
    await symlink("AGENTS.md", aliasPath);
  } catch {
    await copyFile(target, aliasPath);
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
