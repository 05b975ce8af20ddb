import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * Vitest's global set-up: build dist/ from the sources under test, once per
 * `vitest run`, so the tests that start the runner as `npm start` and the bin
 * do (dist/src/main.js, bin/fermilink-runner.mjs) never run a stale build.
 */
export default function setup(): void {
  execFileSync(process.execPath, [path.join(ROOT, "scripts/build.mjs")], {
    cwd: ROOT,
    stdio: "inherit",
  });
}
