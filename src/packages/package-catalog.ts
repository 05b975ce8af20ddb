import { statSync } from "node:fs";
import path from "node:path";
import type { Logger } from "../log/logger.js";
import {
  type LegacyMaxwellLink,
  planLegacyBootstrap,
  writeRegistry,
} from "./legacy-maxwelllink.js";
import { readManifest } from "./manifest.js";
import { type OverlayInput, overlayPackage, type PackageOverlaySummary } from "./overlay.js";
import { normalizeDependencyIds, normalizeOverlayEntries } from "./package-id.js";
import {
  REGISTRY_FILENAME,
  type Registry,
  readRegistryFile,
  validInstalledPath,
} from "./registry.js";
import { checkRequested, type ResolvedPackage, resolveSessionPackage } from "./resolve-package.js";

export interface PackageCatalogOptions {
  scipkgRoot: string;
  /** FERMILINK_SCIPKG_ACTIVE. */
  envActive: string | null;
  legacy: LegacyMaxwellLink | null;
  logger: Logger;
  now?: () => Date;
}

/** One installed package as `ListPackages` and `GET /packages` show it. */
export interface PackageListing {
  id: string;
  title: string;
  installedPath: string;
  source: string;
  status: string;
  /** The package new sessions get when they ask for none (env override, then registry). */
  active: boolean;
  /** Its install directory exists and its metadata is valid, so a run can use it. */
  available: boolean;
  overlayEntries: string[] | null;
  dependencyPackageIds: string[];
  legacy: boolean;
  installedAt: string;
  updatedAt: string;
}

/** A session's resolved package, ready to be overlaid into its repo. */
export interface SessionPackage {
  apply(opts: { repoDir: string; createdRepo: boolean }): Promise<PackageOverlaySummary>;
}

const str = (v: unknown): string => (typeof v === "string" ? v : "");

/**
 * The scientific package registry as the runner sees it: reads are
 * cached by file identity (a request costs one synchronous `stat`),
 * the only write (the legacy bootstrap) is serialised in-process and atomic,
 * and a corrupt registry is reported, never overwritten.
 */
export class PackageCatalog {
  private cached: { key: string; registry: Registry } | null = null;
  private writing: Promise<void> = Promise.resolve();
  private reportedProblem: string | null = null;
  private readonly now: () => Date;

  constructor(private readonly opts: PackageCatalogOptions) {
    this.now = opts.now ?? (() => new Date());
  }

  /** The current registry, after the legacy bootstrap when it applies. */
  async registry(): Promise<Registry> {
    let reg = await this.read();
    if (this.opts.legacy && reg.problem === null) {
      const legacy = this.opts.legacy;
      const planned = await planLegacyBootstrap(reg, legacy, this.now());
      if (planned) {
        // Serialised so two requests never interleave read-modify-write.
        const write = this.writing.then(async () => {
          const fresh = await this.read();
          if (fresh.problem !== null) return;
          const again = await planLegacyBootstrap(fresh, legacy, this.now());
          if (again) await writeRegistry(this.opts.scipkgRoot, again, this.now());
        });
        this.writing = write.catch(() => undefined);
        try {
          await write;
        } catch (err) {
          this.opts.logger.warn({ err }, "could not register the legacy MaxwellLink package");
        }
        reg = await this.read();
      }
    }
    return reg;
  }

  /** Validate a requested package id before a slot or workspace is taken. */
  async checkRequested(requested: string): Promise<ResolvedPackage> {
    return checkRequested(await this.registry(), requested);
  }

  /**
   * The package the session runs with (spec §5.3), read-only, or null when
   * it gets none; `apply` overlays it into the repo. Runs under the session
   * lock, before the workspace is written: a session without a package is
   * then written in one go.
   */
  async resolveForSession(opts: {
    sessionDir: string;
    requested: string | null;
  }): Promise<SessionPackage | null> {
    const registry = await this.registry();
    const previous = await readManifest(opts.sessionDir);
    const resolved = await resolveSessionPackage({
      registry,
      requested: opts.requested,
      previousId: previous?.packageId ?? null,
      envActive: this.opts.envActive,
    });
    if (!resolved) return null;
    return {
      apply: ({ repoDir, createdRepo }) => {
        const input: OverlayInput = {
          sessionDir: opts.sessionDir,
          repoDir,
          packageId: resolved.id,
          meta: resolved.meta,
          packages: registry.packages,
          allowReplaceExisting: createdRepo,
          now: this.now(),
        };
        return overlayPackage(input);
      },
    };
  }

  /** Every registered package, sorted by id, for clients to offer. */
  async list(): Promise<{
    packages: PackageListing[];
    activeId: string | null;
    problem: string | null;
  }> {
    const registry = await this.registry();
    const envActive = this.opts.envActive;
    const activeId =
      (await resolveSessionPackage({ registry, requested: null, previousId: null, envActive }))
        ?.id ?? null;
    const packages: PackageListing[] = [];
    for (const id of [...registry.packages.keys()].sort()) {
      const meta = registry.packages.get(id);
      if (!meta) continue;
      const usable = listedMetadata(meta, id);
      packages.push({
        id,
        title: str(meta.title) || id,
        installedPath: str(meta.installed_path),
        source: str(meta.source),
        status: str(meta.status),
        active: id === activeId,
        available: usable !== null && (await validInstalledPath(meta)) !== null,
        overlayEntries: usable?.overlayEntries ?? rawStrings(meta.overlay_entries),
        dependencyPackageIds:
          usable?.dependencyPackageIds ?? rawStrings(meta.dependency_package_ids) ?? [],
        legacy: meta.legacy === true,
        installedAt: str(meta.installed_at),
        updatedAt: str(meta.updated_at),
      });
    }
    return { packages, activeId, problem: registry.problem };
  }

  private async read(): Promise<Registry> {
    const file = path.join(this.opts.scipkgRoot, REGISTRY_FILENAME);
    // Synchronous for the reason readManifest gives; the file itself is read only when it changed.
    let key: string;
    try {
      const st = statSync(file, { throwIfNoEntry: false });
      key = st ? `${st.ino}:${st.size}:${st.mtimeMs}` : "absent";
    } catch (err) {
      // A link loop, a directory it may not search: reading it fails too, and says so as the
      // registry's problem (runs go on without packages) instead of failing every run here.
      key = `unusable:${(err as NodeJS.ErrnoException).code}`;
    }
    if (this.cached?.key === key) return this.cached.registry;
    const registry = await readRegistryFile(this.opts.scipkgRoot);
    this.cached = { key, registry };
    if (registry.problem !== null && registry.problem !== this.reportedProblem) {
      this.opts.logger.warn(
        { problem: registry.problem },
        "package registry is unusable; running without packages",
      );
    }
    this.reportedProblem = registry.problem;
    return registry;
  }
}

/**
 * The overlay list and dependencies a run would use (the overlay's own
 * normalisation), or null when a run would refuse them: such a package is
 * listed, but not as available.
 */
function listedMetadata(
  meta: Record<string, unknown>,
  id: string,
): { overlayEntries: string[] | null; dependencyPackageIds: string[] } | null {
  try {
    return {
      overlayEntries: normalizeOverlayEntries(meta.overlay_entries),
      dependencyPackageIds: normalizeDependencyIds(meta.dependency_package_ids, id) ?? [],
    };
  } catch {
    return null;
  }
}

/** The strings of a registry list field (an array, or comma-separated text) as recorded. */
function rawStrings(raw: unknown): string[] | null {
  if (Array.isArray(raw)) return raw.filter((x): x is string => typeof x === "string");
  if (typeof raw === "string")
    return raw
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  return null;
}
