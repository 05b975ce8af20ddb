import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The runner's checkout: the nearest directory above this module holding a
 * package.json. The same from the TypeScript sources (src/) and from their
 * build (dist/src/, which has none), so assets outside the compiled code
 * (node_modules/.bin, web/, src/workspace/template) are found either way.
 */
function findProjectRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "package.json"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export const PROJECT_ROOT = findProjectRoot(path.dirname(fileURLToPath(import.meta.url)));

/** The provider CLIs installed as the project's own dependencies, searched first. */
export const PROJECT_BIN_DIR = path.join(PROJECT_ROOT, "node_modules", ".bin");
