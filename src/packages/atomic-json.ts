import { mkdir } from "node:fs/promises";
import path from "node:path";
import { replaceFileAtomic } from "../workspace/untrusted-file.js";

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort())
      out[k] = sortKeys((value as Record<string, unknown>)[k]);
    return out;
  }
  return value;
}

/**
 * JSON text as FermiLink writes its registry and manifests (Python's
 * `json.dump(indent=2, sort_keys=True)` plus a newline, non-ASCII escaped),
 * so files stay byte-identical whichever of the two programs wrote them.
 */
export function fermilinkJsonText(value: unknown): string {
  const text = JSON.stringify(sortKeys(value), null, 2).replace(
    /[\u007f-\uffff]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return `${text}\n`;
}

/**
 * Replace `file` atomically: readers see the old or the new content, never a
 * partial one. The temporary name is unique so concurrent writers never
 * share it (FermiLink's fixed `.tmp` suffix can collide).
 */
export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await replaceFileAtomic(file, fermilinkJsonText(value), 0o644);
}
