import { existsSync } from "node:fs";
import path from "node:path";
import { readUntrustedFileSync } from "../workspace/untrusted-file.js";
import { tryNormalizePackageId } from "./package-id.js";

export const MANIFEST_FILENAME = ".package_manifest.json";

/** How an entry was placed in the repo. */
export type OverlayMode = "symlink" | "copy";

/** One managed entry recorded in the manifest. */
export interface ManagedEntry {
  name: string;
  mode: OverlayMode | string;
}

/** A linked dependency as recorded in the manifest and in `meta.package`. */
export interface LinkedDependency {
  package_id: string;
  mode: OverlayMode;
  source: string;
}

/** `<session>/.package_manifest.json` with FermiLink's field names (spec §5.4 step 8). */
export interface PackageManifest {
  version: 1;
  package_id: string;
  package_path: string;
  requested_entries: string[] | null;
  missing_requested_entries: string[];
  linked_entries: { name: string; mode: OverlayMode; source: string }[];
  collisions: string[];
  configured_dependency_package_ids: string[];
  linked_dependency_packages: LinkedDependency[];
  missing_dependency_packages: string[];
  dependency_collisions: string[];
  updated_at: string;
}

/** What a previous overlay left in the session, read defensively. */
export interface PreviousManifest {
  packageId: string | null;
  entries: ManagedEntry[];
  dependencies: ManagedEntry[];
}

export function manifestPath(sessionDir: string): string {
  return path.join(sessionDir, MANIFEST_FILENAME);
}

/**
 * A name from the manifest is used to delete things in the repo, and the
 * manifest is a file anyone with access to the workspace can edit: only a
 * plain top-level name is ever trusted.
 */
function isPlainName(name: unknown): name is string {
  return (
    typeof name === "string" &&
    name !== "" &&
    name !== "." &&
    name !== ".." &&
    !/[/\\\0]/.test(name)
  );
}

/** A manifest lists a package's top-level entries: far below this. */
const MAX_MANIFEST_BYTES = 1024 * 1024;

/**
 * Read the previous manifest; a missing, corrupt, foreign or oversized file
 * counts as none. Synchronous: one small local file, read before a run's
 * workspace is written (through the thread pool it would wait for a whole
 * burst of arriving requests to be parsed first). The session's agent can
 * write it, so it is read as an untrusted file (a FIFO or a link to
 * /dev/zero there would otherwise stop the runner).
 */
export async function readManifest(sessionDir: string): Promise<PreviousManifest | null> {
  const file = manifestPath(sessionDir);
  // A new session has none: asking first is far cheaper than the exception a failed open builds.
  if (!existsSync(file)) return null;
  const text = readUntrustedFileSync(file, MAX_MANIFEST_BYTES);
  if (text === null) return null;
  let payload: unknown;
  try {
    payload = JSON.parse(text);
  } catch {
    return null;
  }
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) return null;
  const obj = payload as Record<string, unknown>;
  // Names seen, so a long list costs linear time (the agent can write this file).
  const entries: ManagedEntry[] = [];
  const entryNames = new Set<string>();
  for (const item of Array.isArray(obj.linked_entries) ? obj.linked_entries : []) {
    const rec = item && typeof item === "object" ? (item as Record<string, unknown>) : null;
    const name = rec ? rec.name : item;
    const mode = rec && typeof rec.mode === "string" && rec.mode ? rec.mode : "symlink";
    if (isPlainName(name) && !entryNames.has(name)) {
      entryNames.add(name);
      entries.push({ name, mode });
    }
  }
  const dependencies: ManagedEntry[] = [];
  const dependencyIds = new Set<string>();
  for (const item of Array.isArray(obj.linked_dependency_packages)
    ? obj.linked_dependency_packages
    : []) {
    const rec = item && typeof item === "object" ? (item as Record<string, unknown>) : null;
    const id = tryNormalizePackageId(rec ? rec.package_id || rec.name : item);
    const mode = rec && typeof rec.mode === "string" && rec.mode ? rec.mode : "symlink";
    if (id !== null && !dependencyIds.has(id)) {
      dependencyIds.add(id);
      dependencies.push({ name: id, mode });
    }
  }
  return { packageId: tryNormalizePackageId(obj.package_id), entries, dependencies };
}
