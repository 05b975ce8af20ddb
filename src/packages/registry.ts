import { readFile, stat } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";
import { normalizeDependencyIds, tryNormalizePackageId } from "./package-id.js";

/** One package's metadata as stored in registry.json (FermiLink's dict, normalised). */
export type PackageMeta = Readonly<Record<string, unknown>> & { readonly id: string };

/** `<scipkg_root>/registry.json` after FermiLink's normalisation (spec §5.1). */
export interface Registry {
  version: number;
  /** Kept only when it names a registered package (no fallback to the first one). */
  activePackage: string | null;
  packages: ReadonlyMap<string, PackageMeta>;
  updatedAt: string | null;
  /** Why the file could not be used (corrupt JSON, unreadable); null when it was fine or absent. */
  problem: string | null;
}

export const REGISTRY_FILENAME = "registry.json";

export function emptyRegistry(problem: string | null = null): Registry {
  return { version: 1, activePackage: null, packages: new Map(), updatedAt: null, problem };
}

/**
 * FermiLink's runner-side normalisation: ids re-normalised, non-object
 * entries and invalid ids dropped, dependency lists normalised (dropped when
 * invalid or empty), `active_package` kept only when registered.
 */
export function normalizeRegistry(payload: unknown): Registry {
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) {
    return emptyRegistry("registry.json does not hold a JSON object");
  }
  const obj = payload as Record<string, unknown>;
  const packages = new Map<string, PackageMeta>();
  const rawPackages = obj.packages;
  if (rawPackages && typeof rawPackages === "object" && !Array.isArray(rawPackages)) {
    for (const [rawId, rawMeta] of Object.entries(rawPackages)) {
      const id = tryNormalizePackageId(rawId);
      if (id === null || !rawMeta || typeof rawMeta !== "object" || Array.isArray(rawMeta))
        continue;
      const meta: Record<string, unknown> = { ...(rawMeta as Record<string, unknown>), id };
      let deps: string[] | null = null;
      try {
        deps = normalizeDependencyIds(meta.dependency_package_ids, id);
      } catch {
        deps = null;
      }
      if (deps && deps.length > 0) meta.dependency_package_ids = deps;
      else delete meta.dependency_package_ids;
      packages.set(id, meta as PackageMeta);
    }
  }
  const active = tryNormalizePackageId(obj.active_package);
  return {
    version: 1,
    activePackage: active !== null && packages.has(active) ? active : null,
    packages,
    updatedAt: typeof obj.updated_at === "string" && obj.updated_at ? obj.updated_at : null,
    problem: null,
  };
}

/** The registry as FermiLink writes it (spec §5.1: sorted keys, indent 2, trailing newline). */
export function registryToJson(reg: Registry, updatedAt: string): unknown {
  const packages: Record<string, unknown> = {};
  for (const [id, meta] of reg.packages) packages[id] = meta;
  return { version: 1, active_package: reg.activePackage, packages, updated_at: updatedAt };
}

/**
 * Read registry.json without blocking the event loop. A missing file is the
 * empty registry; a corrupt or unreadable one is the empty registry with a
 * `problem` the caller reports (FermiLink silently ignores it).
 */
export async function readRegistryFile(scipkgRoot: string): Promise<Registry> {
  const file = path.join(scipkgRoot, REGISTRY_FILENAME);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return emptyRegistry();
    return emptyRegistry(`${file} cannot be read: ${(err as Error).message}`);
  }
  try {
    const reg = normalizeRegistry(JSON.parse(text));
    return reg.problem ? { ...reg, problem: `${file}: ${reg.problem}` } : reg;
  } catch (err) {
    return emptyRegistry(`${file} is not valid JSON (${(err as Error).message})`);
  }
}

/** Where the local accounts are: Python's `pwd.getpwnam` also asks NSS (LDAP and the like). */
const PASSWD_FILE = "/etc/passwd";

/** The home directory of the account `name` in the passwd file, or null (none, or unreadable). */
async function passwdHome(name: string): Promise<string | null> {
  const text = await readFile(PASSWD_FILE, "utf8").catch(() => "");
  for (const line of text.split("\n")) {
    // name:password:uid:gid:gecos:home:shell; the first entry of a name wins, as getpwnam's does.
    const fields = line.split(":");
    if (fields.length >= 7 && fields[0] === name) return fields[5] ?? null;
  }
  return null;
}

/**
 * Python's `os.path.expanduser`, which FermiLink applies to `installed_path`:
 * `~` and `~/...` from the runner's home, `~name` and `~name/...` from that
 * account's home; a name with no account leaves the path as it is.
 */
async function expandUser(p: string): Promise<string> {
  if (!p.startsWith("~")) return p;
  const slash = p.indexOf("/", 1);
  const end = slash < 0 ? p.length : slash;
  const home = end === 1 ? homedir() : await passwdHome(p.slice(1, end));
  if (home === null) return p;
  return home.replace(/\/+$/, "") + p.slice(end) || "/";
}

/**
 * The validated install directory of a package (spec §5.3: a string naming an
 * existing directory; `~` and `~user` expanded, relative paths resolved against the CWD).
 */
export async function resolveInstalledPath(meta: PackageMeta): Promise<string> {
  const raw = meta.installed_path;
  if (typeof raw !== "string" || raw === "") {
    throw new RunnerError("PACKAGE_INVALID", "Package metadata is missing installed_path.");
  }
  const abs = path.resolve(process.cwd(), await expandUser(raw));
  const st = await stat(abs).catch(() => null);
  if (!st?.isDirectory()) {
    throw new RunnerError("PACKAGE_INVALID", `Installed package path is invalid: ${abs}`);
  }
  return abs;
}

/** `resolveInstalledPath`, or null when the package's path is not valid. */
export async function validInstalledPath(meta: PackageMeta): Promise<string | null> {
  try {
    return await resolveInstalledPath(meta);
  } catch {
    return null;
  }
}
