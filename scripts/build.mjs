/**
 * `npm run build` (and the first step of `npm start`): the TypeScript of src/
 * and gen/ transpiled file by file into dist/, in the checkout's tree (so
 * dist/src imports dist/gen as src imports gen), and the plain-JavaScript
 * modules (.mjs: the spawn helper, the file-system worker, what they share;
 * .cjs: the run store's checkpoint worker) copied beside their compiled neighbours, which load them by relative path.
 * Transpiling only, in a fraction of a second: `npm test` type-checks.
 */
import { copyFileSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dist = path.join(root, "dist");
// Built beside dist/ and swapped in: a server running from dist/ loads its workers (spawn
// helper, file-system batch, checkpoint) from it later, and a build that emptied dist/ first left
// it without them for the build's duration. From scratch: a module deleted from src/ must not
// live on in dist/.
const next = path.join(root, `.dist-${process.pid}`);
const old = path.join(root, `.dist-old-${process.pid}`);
rmSync(next, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: ["src/**/*.ts", "gen/**/*.ts"],
  outdir: next,
  outbase: ".",
  format: "esm",
  platform: "node",
  target: "node20",
  logLevel: "warning",
});
for (const entry of readdirSync(path.join(root, "src"), { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || (!entry.name.endsWith(".mjs") && !entry.name.endsWith(".cjs"))) continue;
  const from = path.join(entry.parentPath, entry.name);
  const to = path.join(next, path.relative(root, from));
  mkdirSync(path.dirname(to), { recursive: true });
  copyFileSync(from, to);
}
// Two renames: dist/ is missing only between them. A build running at the same time may put its
// dist/ in between; the last one to swap wins, each whole.
for (let attempt = 0; ; attempt++) {
  rmSync(old, { recursive: true, force: true });
  try {
    renameSync(dist, old);
  } catch (err) {
    if (err.code !== "ENOENT") throw err;
  }
  try {
    renameSync(next, dist);
    break;
  } catch (err) {
    if ((err.code !== "ENOTEMPTY" && err.code !== "EEXIST") || attempt >= 5) throw err;
  }
}
rmSync(old, { recursive: true, force: true });
