import { realpathSync, statSync } from "node:fs";
import path from "node:path";
import { writeJsonAtomic } from "./atomic-json.js";
import {
  REGISTRY_FILENAME,
  type Registry,
  registryToJson,
  validInstalledPath,
} from "./registry.js";

/** Where FermiLink's legacy MaxwellLink checkout is and the id it registers under (spec §5.6). */
export interface LegacyMaxwellLink {
  root: string;
  packageId: string;
}

/** The registry entry FermiLink's `register_package` writes for the legacy checkout. */
function legacyFields(root: string): Record<string, unknown> {
  return {
    title: "MaxwellLink (local)",
    installed_path: root,
    source: `local-path:${root}`,
    status: "installed",
    legacy: true,
  };
}

/**
 * The registry after FermiLink's legacy bootstrap (spec §5.6), or null when
 * nothing would change. When the checkout is a directory it is registered
 * (not activated), and it becomes the active package when there is no valid
 * one: none, or one whose `installed_path` is not an existing directory
 * (spec §5.3's validity: a package whose directory was deleted is not kept
 * active). FermiLink rewrites registry.json on every request (spec §10 item
 * 28); here a write happens only when the entry is missing or differs, or the
 * active package has to change.
 */
export async function planLegacyBootstrap(
  registry: Registry,
  legacy: LegacyMaxwellLink,
  now: Date,
): Promise<Registry | null> {
  let root: string;
  try {
    if (!statSync(legacy.root, { throwIfNoEntry: false })?.isDirectory()) return null;
    // FermiLink stores `Path.resolve()`, links resolved: the same entry whichever program wrote
    // it, not one rewritten back and forth when the checkout is reached through a link.
    root = realpathSync(legacy.root);
  } catch {
    // A link loop or a directory it may not search: no checkout it could register.
    return null;
  }
  const wanted = legacyFields(root);
  const current = registry.packages.get(legacy.packageId);
  const entryUpToDate =
    current !== undefined && Object.entries(wanted).every(([k, v]) => current[k] === v);
  const stamp = now.toISOString();
  const packages = new Map(registry.packages);
  if (!entryUpToDate) {
    packages.set(legacy.packageId, {
      ...(current ?? {}),
      ...wanted,
      id: legacy.packageId,
      updated_at: stamp,
      installed_at: current?.installed_at ?? stamp,
    });
  }
  // Judged on the registry as it will be: an active legacy entry is valid once it is rewritten.
  const activeMeta =
    registry.activePackage === null ? undefined : packages.get(registry.activePackage);
  const activeValid = activeMeta !== undefined && (await validInstalledPath(activeMeta)) !== null;
  if (entryUpToDate && activeValid) return null;
  return {
    ...registry,
    packages,
    activePackage: activeValid ? registry.activePackage : legacy.packageId,
    updatedAt: stamp,
  };
}

export async function writeRegistry(
  scipkgRoot: string,
  registry: Registry,
  now: Date,
): Promise<void> {
  await writeJsonAtomic(
    path.join(scipkgRoot, REGISTRY_FILENAME),
    registryToJson(registry, now.toISOString()),
  );
}
