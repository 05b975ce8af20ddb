import { quotedInput, RunnerError } from "../errors/runner-error.js";
import { normalizePackageId, tryNormalizePackageId } from "./package-id.js";
import {
  type PackageMeta,
  type Registry,
  resolveInstalledPath,
  validInstalledPath,
} from "./registry.js";

/** The package a run gets, and why. */
export interface ResolvedPackage {
  id: string;
  meta: PackageMeta;
  source: "requested" | "session" | "env" | "registry-active";
}

/**
 * Check a requested package before any slot or workspace is taken: it must
 * be registered with a valid install path. Unlike FermiLink (spec §10 item
 * 13) an empty registry does not make the request silently ignored.
 */
export async function checkRequested(
  registry: Registry,
  requested: string,
): Promise<ResolvedPackage> {
  const id = normalizePackageId(requested);
  const meta = registry.packages.get(id);
  if (!meta) {
    const why = registry.problem ? ` (the registry is unusable: ${registry.problem})` : "";
    throw new RunnerError(
      "PACKAGE_NOT_FOUND",
      `Requested package not found: ${quotedInput(id)}${why}`,
    );
  }
  await resolveInstalledPath(meta);
  return { id, meta, source: "requested" };
}

/**
 * Which package a session gets (spec §5.3): the requested one; else the one
 * the session's manifest recorded, if still registered and valid; else
 * FERMILINK_SCIPKG_ACTIVE; else the registry's active package; else none.
 * Steps after the first skip an invalid candidate instead of failing the run.
 */
export async function resolveSessionPackage(opts: {
  registry: Registry;
  requested: string | null;
  previousId: string | null;
  envActive: string | null;
}): Promise<ResolvedPackage | null> {
  const { registry } = opts;
  if (opts.requested !== null) return checkRequested(registry, opts.requested);
  if (registry.packages.size === 0) return null;
  const candidates: [string | null, ResolvedPackage["source"]][] = [
    [opts.previousId, "session"],
    [tryNormalizePackageId(opts.envActive), "env"],
    [registry.activePackage, "registry-active"],
  ];
  for (const [id, source] of candidates) {
    if (id === null) continue;
    const meta = registry.packages.get(id);
    if (meta && (await validInstalledPath(meta)) !== null) return { id, meta, source };
  }
  return null;
}
