import {
  copyFile,
  lstat,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  unlink,
  writeFile,
} from "node:fs/promises";
import path from "node:path";

/** Built-in template (used when FERMILINK_SOFTWARE_ROOT does not exist). */
export const BUILTIN_TEMPLATE_DIR = path.join(
  path.dirname(new URL(import.meta.url).pathname),
  "template",
);

/**
 * The template AGENTS.md: the admin's FERMILINK_SOFTWARE_ROOT/AGENTS.md wins
 * over the built-in one (fixes spec §10 item 14, where the packaged file
 * shadowed it).
 */
export async function templateAgentsPath(softwareRoot: string | null): Promise<string> {
  if (softwareRoot) {
    const custom = path.join(softwareRoot, "AGENTS.md");
    if ((await lstat(custom).catch(() => null))?.isFile()) return custom;
  }
  return path.join(BUILTIN_TEMPLATE_DIR, "AGENTS.md");
}

/**
 * Make `repo/AGENTS.md` the template's (the policy file is the runner's, so a
 * package or an edit cannot replace it), then the provider alias rules of
 * spec §4.3 step 3: the active alias is a relative symlink to AGENTS.md (a
 * copy when symlinks fail); inactive aliases are removed only when they are
 * symlinks; real alias files are never touched.
 */
export async function syncAgentsFile(
  repoDir: string,
  templatePath: string,
  providerAlias: string | null,
  knownAliases: readonly string[],
): Promise<void> {
  const target = path.join(repoDir, "AGENTS.md");
  const wanted = await readFile(templatePath);
  const st = await lstat(target).catch(() => null);
  const current = st?.isFile() ? await readFile(target).catch(() => null) : null;
  if (!current?.equals(wanted)) {
    if (st && !st.isFile()) await rm(target, { recursive: true, force: true });
    const tmp = `${target}.tmp-${process.pid}-${Date.now()}`;
    await writeFile(tmp, wanted);
    await rename(tmp, target);
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
  try {
    await symlink("AGENTS.md", aliasPath);
  } catch {
    await copyFile(target, aliasPath);
  }
}
