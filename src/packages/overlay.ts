import type { Dirent } from "node:fs";
import {
  cp,
  lstat,
  mkdir,
  readdir,
  realpath,
  rm,
  rmdir,
  stat,
  symlink,
  unlink,
} from "node:fs/promises";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";
import { writeJsonAtomic } from "./atomic-json.js";
import {
  type LinkedDependency,
  type ManagedEntry,
  manifestPath,
  type OverlayMode,
  type PackageManifest,
  readManifest,
} from "./manifest.js";
import {
  isExportableEntryName,
  normalizeDependencyIds,
  normalizeOverlayEntries,
} from "./package-id.js";
import { type PackageMeta, resolveInstalledPath, validInstalledPath } from "./registry.js";

/** FermiLink's overlay summary (spec §5.4 step 9); it becomes `meta.package`. */
export interface PackageOverlaySummary {
  package_id: string;
  package_path: string;
  linked_count: number;
  collision_count: number;
  collisions: string[];
  requested_entries: string[] | null;
  missing_requested_entries: string[];
  dependency_package_ids: string[];
  linked_dependency_count: number;
  linked_dependency_packages: LinkedDependency[];
  missing_dependency_packages: string[];
  dependency_collision_count: number;
  dependency_collisions: string[];
}

export interface OverlayInput {
  sessionDir: string;
  repoDir: string;
  packageId: string;
  meta: PackageMeta;
  /** Every registered package, for dependencies. */
  packages: ReadonlyMap<string, PackageMeta>;
  /** True on a session's first run only: entries already in the repo may be replaced. */
  allowReplaceExisting: boolean;
  now: Date;
}

export const DEPENDENCIES_DIRNAME = "external_packages";

const lstatOrNull = (p: string) => lstat(p).catch(() => null);

/** Remove whatever is at `p` without following a symlink. */
async function removeEntry(p: string): Promise<void> {
  await rm(p, { recursive: true, force: true });
}

async function realOrNull(p: string): Promise<string | null> {
  return realpath(p).catch(() => null);
}

/** FermiLink's error for a package directory that is not there (any more). */
function rootInvalid(packageRoot: string, cause?: unknown): RunnerError {
  return new RunnerError("PACKAGE_OVERLAY_FAILED", `Package root is invalid: ${packageRoot}`, {
    cause,
  });
}

function isInside(child: string, root: string): boolean {
  return child === root || child.startsWith(root + path.sep);
}

/**
 * Remove entries a previous overlay placed: a symlink-mode entry only while it
 * is still a symlink (the agent may have replaced it with its own file), a
 * copy-mode entry always (the runner passes remove_non_symlink=True).
 */
async function removeManaged(dir: string, entries: readonly ManagedEntry[]): Promise<void> {
  for (const e of entries) {
    const target = path.join(dir, e.name);
    const st = await lstatOrNull(target);
    if (!st) continue;
    if (e.mode === "symlink") {
      if (st.isSymbolicLink()) await unlink(target).catch(() => undefined);
    } else {
      await removeEntry(target);
    }
  }
}

/** `external_packages/` as a real directory (never through a symlink), or null. */
async function realDependencyDir(repoDir: string): Promise<string | null> {
  const dir = path.join(repoDir, DEPENDENCIES_DIRNAME);
  const st = await lstatOrNull(dir);
  return st?.isDirectory() ? dir : null;
}

async function removeDirIfEmpty(dir: string): Promise<void> {
  const st = await lstatOrNull(dir);
  if (st?.isDirectory() && (await readdir(dir)).length === 0)
    await rmdir(dir).catch(() => undefined);
}

/** Create `dst` as an absolute symlink to `src` (as FermiLink does), or a copy when links fail. */
async function linkOrCopy(
  src: string,
  dst: string,
  isDir: boolean,
): Promise<OverlayMode | "existing"> {
  if (await lstatOrNull(dst)) return "existing";
  try {
    await symlink(src, dst, isDir ? "dir" : "file");
    return "symlink";
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return "existing";
    // verbatimSymlinks: links inside the package are copied as links, never followed out of it.
    await cp(src, dst, { recursive: true, verbatimSymlinks: true, errorOnExist: false });
    return "copy";
  }
}

/**
 * Package entries to place: exportable, sorted, and only ones that stay
 * inside the package (`rootReal`, the root's real path).
 */
async function selectEntries(
  packageRoot: string,
  rootReal: string,
  configured: string[] | null,
): Promise<{
  selected: { name: string; source: string; isDir: boolean }[];
  missing: string[];
  unsafe: string[];
}> {
  let dirents: Dirent[];
  try {
    dirents = await readdir(packageRoot, { withFileTypes: true });
  } catch (err) {
    throw rootInvalid(packageRoot, err);
  }
  const exportable = dirents
    .map((d) => d.name)
    .filter(isExportableEntryName)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  // A set: an array's `includes` for each name was quadratic (seconds for a 40k-entry package).
  const isExportable = new Set(exportable);
  const names = configured ?? exportable;
  const missing = configured ? configured.filter((n) => !isExportable.has(n)) : [];
  const selected: { name: string; source: string; isDir: boolean }[] = [];
  const unsafe: string[] = [];
  for (const name of names) {
    if (!isExportable.has(name)) continue;
    // A package entry that is a symlink leading outside the package (or nowhere) would let the
    // package place arbitrary host paths in the repo; it is refused and reported as a collision.
    const source = await realOrNull(path.join(packageRoot, name));
    if (source === null || !isInside(source, rootReal)) {
      unsafe.push(name);
      continue;
    }
    const st = await lstatOrNull(source);
    selected.push({ name, source, isDir: st?.isDirectory() ?? false });
  }
  return { selected, missing, unsafe };
}

/**
 * Place a package in a session repo (spec §5.4, FermiLink's
 * `overlay_package_into_repo` as the runner calls it), then record ownership
 * in `<session>/.package_manifest.json`, written atomically. Collisions are
 * reported, never fatal. Every path touched is `repo/<plain name>` or
 * `repo/external_packages/<normalised id>`, checked with lstat so no symlink
 * placed by an agent or a package redirects a removal outside the repo.
 */
export async function overlayPackage(input: OverlayInput): Promise<PackageOverlaySummary> {
  const { repoDir, packageId, meta, allowReplaceExisting: allowReplace } = input;
  let packageRoot: string;
  let configured: string[] | null;
  let dependencyIds: string[];
  try {
    packageRoot = await resolveInstalledPath(meta);
    configured = normalizeOverlayEntries(meta.overlay_entries);
    dependencyIds = normalizeDependencyIds(meta.dependency_package_ids, packageId) ?? [];
  } catch (err) {
    throw new RunnerError(
      "PACKAGE_OVERLAY_FAILED",
      `Package ${packageId} cannot be overlaid: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const packagePath = await realpath(packageRoot).catch((err: unknown) => {
    throw rootInvalid(packageRoot, err);
  });
  const { selected, missing, unsafe } = await selectEntries(packageRoot, packagePath, configured);
  const targetNames = new Set(selected.map((e) => e.name));

  const previous = await readManifest(input.sessionDir);
  if (previous && previous.packageId !== null && previous.packageId !== packageId) {
    await removeManaged(repoDir, previous.entries);
    const depDir = await realDependencyDir(repoDir);
    if (depDir) {
      await removeManaged(depDir, previous.dependencies);
      await removeDirIfEmpty(depDir);
    }
  } else if (previous && previous.packageId === packageId) {
    await removeManaged(
      repoDir,
      previous.entries.filter((e) => !targetNames.has(e.name)),
    );
    const depDir = await realDependencyDir(repoDir);
    if (depDir) {
      const wanted = new Set(dependencyIds);
      await removeManaged(
        depDir,
        previous.dependencies.filter((d) => !wanted.has(d.name)),
      );
      await removeDirIfEmpty(depDir);
    }
  }
  const previousNames = new Set(previous?.entries.map((e) => e.name) ?? []);
  const previousDeps = new Set(previous?.dependencies.map((d) => d.name) ?? []);

  const linkedEntries: PackageManifest["linked_entries"] = [];
  const collisions: string[] = [...unsafe];
  for (const entry of selected) {
    const dst = path.join(repoDir, entry.name);
    const st = await lstatOrNull(dst);
    if (st?.isSymbolicLink()) {
      if ((await realOrNull(dst)) === entry.source) {
        linkedEntries.push({ name: entry.name, mode: "symlink", source: entry.source });
        continue;
      }
      if (previousNames.has(entry.name) || allowReplace) await unlink(dst);
      else {
        collisions.push(entry.name);
        continue;
      }
    } else if (st) {
      if (allowReplace) await removeEntry(dst);
      else {
        collisions.push(entry.name);
        continue;
      }
    }
    const mode = await linkOrCopy(entry.source, dst, entry.isDir);
    if (mode === "existing") collisions.push(entry.name);
    else linkedEntries.push({ name: entry.name, mode, source: entry.source });
  }

  const linkedDeps: LinkedDependency[] = [];
  const missingDeps: string[] = [];
  const depCollisions: string[] = [];
  const depRoot = path.join(repoDir, DEPENDENCIES_DIRNAME);
  let depRootReady = true;
  if (dependencyIds.length > 0) {
    const st = await lstatOrNull(depRoot);
    if (st && !st.isDirectory()) {
      if (allowReplace) await removeEntry(depRoot);
      else {
        depRootReady = false;
        depCollisions.push(...dependencyIds);
      }
    }
    if (depRootReady) await mkdir(depRoot, { recursive: true });
  }
  for (const depId of depRootReady ? dependencyIds : []) {
    const dst = path.join(depRoot, depId);
    const depMeta = input.packages.get(depId);
    const depSrc = depMeta ? await validInstalledPath(depMeta) : null;
    const depReal = depSrc ? await realOrNull(depSrc) : null;
    if (depReal === null) {
      missingDeps.push(depId);
      // Its stale link (or copy) goes; a directory the agent put in the link's place stays.
      await removeManaged(
        depRoot,
        (previous?.dependencies ?? []).filter((d) => d.name === depId),
      );
      continue;
    }
    const st = await lstatOrNull(dst);
    if (st?.isSymbolicLink()) {
      if ((await realOrNull(dst)) === depReal) {
        linkedDeps.push({ package_id: depId, mode: "symlink", source: depReal });
        continue;
      }
      if (previousDeps.has(depId) || allowReplace) await unlink(dst);
      else {
        depCollisions.push(depId);
        continue;
      }
    } else if (st) {
      // As for top-level entries (spec §5.4 steps 6-7): a real directory there, even where the
      // overlay's link was, is the agent's now (kept and reported), not deleted.
      if (allowReplace) await removeEntry(dst);
      else {
        depCollisions.push(depId);
        continue;
      }
    }
    const mode = await linkOrCopy(depReal, dst, true);
    if (mode === "existing") depCollisions.push(depId);
    else linkedDeps.push({ package_id: depId, mode, source: depReal });
  }
  await removeDirIfEmpty(depRoot);

  const missingSorted = [...new Set(missingDeps)].sort();
  const depCollisionsSorted = [...new Set(depCollisions)].sort();
  const manifest: PackageManifest = {
    version: 1,
    package_id: packageId,
    package_path: packagePath,
    requested_entries: configured,
    missing_requested_entries: missing,
    linked_entries: linkedEntries,
    collisions,
    configured_dependency_package_ids: dependencyIds,
    linked_dependency_packages: linkedDeps,
    missing_dependency_packages: missingSorted,
    dependency_collisions: depCollisionsSorted,
    updated_at: input.now.toISOString(),
  };
  const manifestFile = manifestPath(input.sessionDir);
  // The session's agent can write there: a directory in the manifest's place (which a rename
  // cannot replace) would otherwise fail every later run of the session.
  if ((await lstatOrNull(manifestFile))?.isDirectory()) await removeEntry(manifestFile);
  await writeJsonAtomic(manifestFile, manifest);
  // A package removed while it was overlaid (an uninstall, a re-install) left links pointing
  // nowhere, or every entry taken for unsafe and reported as a collision: the run would go on
  // without it. Checked after the manifest, which records what was placed for the next overlay
  // to clean up.
  if (!(await stat(packageRoot).catch(() => null))?.isDirectory()) throw rootInvalid(packageRoot);
  return {
    package_id: packageId,
    package_path: packagePath,
    linked_count: linkedEntries.length,
    collision_count: collisions.length,
    collisions,
    requested_entries: configured,
    missing_requested_entries: missing,
    dependency_package_ids: dependencyIds,
    linked_dependency_count: linkedDeps.length,
    linked_dependency_packages: linkedDeps,
    missing_dependency_packages: missingSorted,
    dependency_collision_count: depCollisionsSorted.length,
    dependency_collisions: depCollisionsSorted,
  };
}
