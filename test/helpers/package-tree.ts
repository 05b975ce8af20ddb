import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";

/** A package to install for a test: its top-level files/dirs and registry fields. */
export interface TestPackage {
  /** Relative path -> content; a path ending in `/` is an empty directory. */
  files: Record<string, string>;
  meta?: Record<string, unknown>;
}

/**
 * Write a FermiLink-style scientific package root: `packages/<id>/...` trees
 * and `registry.json` pointing at them. Returns the install path of each package.
 */
export async function writePackageRoot(
  scipkgRoot: string,
  packages: Record<string, TestPackage>,
  opts: { active?: string | null; extraRegistry?: Record<string, unknown> } = {},
): Promise<Record<string, string>> {
  const installed: Record<string, string> = {};
  const registryPackages: Record<string, unknown> = {};
  for (const [id, pkg] of Object.entries(packages)) {
    const dir = path.join(scipkgRoot, "packages", id);
    await mkdir(dir, { recursive: true });
    for (const [rel, content] of Object.entries(pkg.files)) {
      const p = path.join(dir, rel);
      if (rel.endsWith("/")) await mkdir(p, { recursive: true });
      else {
        await mkdir(path.dirname(p), { recursive: true });
        await writeFile(p, content);
      }
    }
    installed[id] = dir;
    registryPackages[id] = {
      id,
      title: id,
      installed_path: dir,
      source: `local-path:${dir}`,
      status: "installed",
      ...pkg.meta,
    };
  }
  await writeRegistry(scipkgRoot, {
    version: 1,
    active_package: opts.active ?? null,
    packages: registryPackages,
    updated_at: "2026-01-01T00:00:00+00:00",
    ...opts.extraRegistry,
  });
  return installed;
}

export async function writeRegistry(scipkgRoot: string, payload: unknown): Promise<void> {
  await mkdir(scipkgRoot, { recursive: true });
  await writeFile(path.join(scipkgRoot, "registry.json"), JSON.stringify(payload, null, 2));
}
