import { RunnerError } from "../errors/runner-error.js";

/**
 * FermiLink's package id normalisation (spec §5.2): trim; keep Unicode
 * letters/digits, `-` and `_` (lowercased), anything else becomes `-`;
 * collapse `--`; strip leading/trailing `-` and `_`. The result can never
 * hold a path separator or be `.`/`..`, so an id is always a safe file name.
 */
export function normalizePackageId(raw: string): string {
  let id = "";
  for (const ch of raw.trim()) id += /[\p{L}\p{N}_-]/u.test(ch) ? ch.toLowerCase() : "-";
  while (id.includes("--")) id = id.replaceAll("--", "-");
  id = id.replace(/^[-_]+|[-_]+$/g, "");
  if (id === "") {
    // FermiLink's message and 400; the id is the caller's (ids read from the registry, the
    // manifest or the environment go through tryNormalizePackageId and never throw).
    throw new RunnerError("PACKAGE_ID_INVALID", "Package id is empty after normalization.");
  }
  return id;
}

/** `normalizePackageId`, or null when the id does not normalise. */
export function tryNormalizePackageId(raw: unknown): string | null {
  if (typeof raw !== "string") return null;
  try {
    return normalizePackageId(raw);
  } catch {
    return null;
  }
}

/** A list field given as a list or a comma-separated string (FermiLink accepts both). */
function splitListField(raw: unknown, field: string): unknown[] {
  if (typeof raw === "string") return raw.split(",");
  if (Array.isArray(raw)) return raw;
  throw new RunnerError(
    "PACKAGE_INVALID",
    `Package metadata field ${field} must be a list or comma-separated string.`,
  );
}

/**
 * A package's `dependency_package_ids`: normalised, without the package
 * itself and without duplicates; null when not set.
 */
export function normalizeDependencyIds(raw: unknown, ownerId: string): string[] | null {
  if (raw === null || raw === undefined) return null;
  const out: string[] = [];
  // A set beside the list: `includes` per id made a long list quadratic.
  const seen = new Set<string>();
  for (const candidate of splitListField(raw, "dependency_package_ids")) {
    if (typeof candidate !== "string") {
      throw new RunnerError("PACKAGE_INVALID", "dependency_package_ids can only contain strings.");
    }
    const trimmed = candidate.trim();
    if (trimmed === "") continue;
    const id = tryNormalizePackageId(trimmed);
    if (id === null) {
      throw new RunnerError(
        "PACKAGE_INVALID",
        `Invalid dependency package id: ${JSON.stringify(trimmed)}`,
      );
    }
    if (id !== ownerId && !seen.has(id)) {
      seen.add(id);
      out.push(id);
    }
  }
  return out;
}

/** Names that are never overlaid: the package cannot replace the runner's files. */
const SKIPPED_NAMES = new Set([
  ".git",
  "__pycache__",
  ".mypy_cache",
  ".pytest_cache",
  ".ruff_cache",
  ".venv",
  "node_modules",
]);

/**
 * FermiLink reserves only `agents.md`; the provider aliases (spec §10 item 6)
 * and the directories the runner itself manages in the repo are reserved too,
 * so a package can never shadow the policy file or the agent's memory.
 */
const RESERVED_NAMES = new Set([
  "agents.md",
  "claude.md",
  "gemini.md",
  "projects",
  "outputs",
  "external_packages",
]);

/** A top-level name a package may place in the repo (spec §5.4 step 3, hardened). */
export function isExportableEntryName(name: string): boolean {
  if (name === "" || name.startsWith(".")) return false;
  if (name.includes("/") || name.includes("\\") || name.includes("\0")) return false;
  if (SKIPPED_NAMES.has(name)) return false;
  return !RESERVED_NAMES.has(name.toLowerCase());
}

/**
 * A package's `overlay_entries` allow-list: top-level exportable names,
 * without duplicates; null (every exportable entry) when not set.
 */
export function normalizeOverlayEntries(raw: unknown): string[] | null {
  if (raw === null || raw === undefined) return null;
  const out: string[] = [];
  const seen = new Set<string>();
  for (const candidate of splitListField(raw, "overlay_entries")) {
    if (typeof candidate !== "string") {
      throw new RunnerError("PACKAGE_INVALID", "overlay_entries can only contain strings.");
    }
    const name = candidate.trim();
    if (name === "") continue;
    if (name === "." || name === ".." || name.includes("/") || name.includes("\\")) {
      throw new RunnerError(
        "PACKAGE_INVALID",
        "Overlay entry names must be top-level names (no path separators).",
      );
    }
    if (!isExportableEntryName(name)) {
      throw new RunnerError("PACKAGE_INVALID", `Overlay entry is not exportable: ${name}`);
    }
    if (!seen.has(name)) {
      seen.add(name);
      out.push(name);
    }
  }
  return out;
}
