import { statSync } from "node:fs";
import path from "node:path";
import { writeJsonAtomic } from "./atomic-json.js";
import { type PackageMeta, REGISTRY_FILENAME, type Registry, registryToJson } from "./registry.js";

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
 * The registry after FermiLink's legacy bootstrap, or null when nothing would
 * change. FermiLink rewrites registry.json on every request (spec §10 item
 * 28); here a write happens only when the entry is missing or differs, or
 * when there is no active package (register_package then activates it).
 */
export async function planLegacyBootstrap(
  registry: Registry,
  legacy: LegacyMaxwellLink,
  now: Date,
): Promise<Registry | null> {
  const st = statSync(legacy.root, { throwIfNoEntry: false });
  if (!st?.isDirectory()) return null;
  const root = path.resolve(legacy.root);
  const wanted = legacyFields(root);
  const current = registry.packages.get(legacy.packageId);
  const upToDate =
    current !== undefined &&
    Object.entries(wanted).every(([k, v]) => current[k] === v) &&
    registry.activePackage !== null;
  if (upToDate) return null;
  const stamp = now.toISOString();
  const meta: PackageMeta = {
    ...(current ?? {}),
    ...wanted,
    id: legacy.packageId,
    updated_at: stamp,
    installed_at: current?.installed_at ?? stamp,
  };
  const packages = new Map(registry.packages);
  packages.set(legacy.packageId, meta);
  return {
    ...registry,
    packages,
    activePackage: registry.activePackage ?? legacy.packageId,
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
