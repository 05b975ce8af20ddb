import { spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** A checkout of its own (the build script and links to the sources), so dist/ here is nobody else's. */
function scratchCheckout(): string {
  const root = mkdtempSync(path.join(tmpdir(), "flr-build-"));
  mkdirSync(path.join(root, "scripts"));
  copyFileSync(path.join(ROOT, "scripts/build.mjs"), path.join(root, "scripts/build.mjs"));
  for (const d of ["src", "gen", "node_modules"])
    symlinkSync(path.join(ROOT, d), path.join(root, d));
  return root;
}

function build(root: string): { done: Promise<number | null> } {
  const child = spawn(process.execPath, [path.join(root, "scripts/build.mjs")], {
    stdio: "ignore",
  });
  return { done: new Promise((r) => child.on("exit", (code) => r(code))) };
}

describe("scripts/build.mjs", () => {
  it("rebuilds dist/ without leaving a running server's later loads without it", async () => {
    dir = scratchCheckout();
    expect(await build(dir).done).toBe(0);
    const helper = path.join(dir, "dist/src/process/spawner/spawner-child.mjs");
    expect(existsSync(helper)).toBe(true);
    // A second build while something keeps loading from dist/: it is there at (nearly) every
    // look. Emptied first, it was missing for the whole transpile (hundreds of looks); swapped
    // in, only between two renames.
    const second = build(dir);
    let exited = false;
    void second.done.then(() => {
      exited = true;
    });
    let looks = 0;
    let missing = 0;
    while (!exited) {
      looks++;
      if (!existsSync(helper)) missing++;
      await new Promise((r) => setImmediate(r));
    }
    expect(await second.done).toBe(0);
    expect(looks).toBeGreaterThan(50);
    expect(missing).toBeLessThanOrEqual(3);
    // Nothing of the build is left beside dist/.
    expect(readdirSync(dir).sort()).toEqual(["dist", "gen", "node_modules", "scripts", "src"]);
  });
});
