import type { PackageCatalog } from "../packages/package-catalog.js";
import { type AnyResponse, sendJson } from "./http-types.js";

/**
 * `GET /packages`: the JSON twin of `PackageService.ListPackages`, in
 * FermiLink's snake_case (`active_package` as in registry.json).
 */
export async function handlePackagesRoute(
  res: AnyResponse,
  catalog: Pick<PackageCatalog, "list">,
): Promise<void> {
  const { packages, activeId, problem } = await catalog.list();
  sendJson(res, 200, {
    active_package: activeId,
    registry_problem: problem,
    packages: packages.map((p) => ({
      id: p.id,
      title: p.title,
      installed_path: p.installedPath,
      source: p.source,
      status: p.status,
      active: p.active,
      available: p.available,
      overlay_entries: p.overlayEntries,
      dependency_package_ids: p.dependencyPackageIds,
      legacy: p.legacy,
      installed_at: p.installedAt || null,
      updated_at: p.updatedAt || null,
    })),
  });
}
