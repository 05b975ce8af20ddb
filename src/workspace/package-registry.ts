import { readFile } from "node:fs/promises";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";

/**
 * FermiLink's package id normalisation (spec §5.2): trim; keep Unicode
 * letters/digits, `-` and `_` (lowercased), anything else becomes `-`;
 * collapse `--`; strip leading/trailing `-` and `_`.
 */
export function normalizePackageId(raw: string): string {
  let id = "";
  for (const ch of raw.trim()) id += /[\p{L}\p{N}_-]/u.test(ch) ? ch.toLowerCase() : "-";
  while (id.includes("--")) id = id.replaceAll("--", "-");
  id = id.replace(/^[-_]+|[-_]+$/g, "");
  if (id === "") {
    throw new RunnerError("PACKAGE_INVALID", "Package id is empty after normalization.");
  }
  return id;
}

/** The installed package ids of `<scipkgRoot>/registry.json`; an unreadable or corrupt file counts as empty. */
export async function readRegistryPackageIds(scipkgRoot: string): Promise<Set<string>> {
  const text = await readFile(path.join(scipkgRoot, "registry.json"), "utf8").catch(() => null);
  if (text === null) return new Set();
  try {
    const parsed: unknown = JSON.parse(text);
    const packages =
      parsed && typeof parsed === "object"
        ? (parsed as { packages?: unknown }).packages
        : undefined;
    if (!packages || typeof packages !== "object") return new Set();
    const ids = new Set<string>();
    for (const [key, meta] of Object.entries(packages)) {
      if (!meta || typeof meta !== "object") continue;
      try {
        ids.add(normalizePackageId(key));
      } catch {
        // FermiLink drops entries whose ids do not normalise.
      }
    }
    return ids;
  } catch {
    return new Set();
  }
}

/**
 * Refuse a requested package that is not installed, before any slot or
 * workspace is taken. Unlike FermiLink (§10 item 13), an empty registry does
 * not make a requested package silently ignored.
 */
export async function checkRequestedPackage(
  scipkgRoot: string,
  packageId: string,
): Promise<string> {
  const id = normalizePackageId(packageId);
  const installed = await readRegistryPackageIds(scipkgRoot);
  if (!installed.has(id)) {
    throw new RunnerError("PACKAGE_NOT_FOUND", `Requested package not found: ${id}`);
  }
  return id;
}
