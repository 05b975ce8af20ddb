/**
 * `npm run build` (and the first step of `npm start`): the TypeScript of src/
 * and gen/ transpiled file by file into dist/, in the checkout's tree (so
 * dist/src imports dist/gen as src imports gen), and the plain-JavaScript
 * modules (.mjs: the spawn helper, the file-system worker, what they share;
 * .cjs: the run store's checkpoint worker) copied beside their compiled neighbours, which load them by relative path.
 * Transpiling only, in a fraction of a second: `npm test` type-checks.
 */
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dist = path.join(root, "dist");
// From scratch: a module deleted from src/ must not live on in dist/.
rmSync(dist, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: ["src/**/*.ts", "gen/**/*.ts"],
  outdir: "dist",
  outbase: ".",
  format: "esm",
  platform: "node",
  target: "node20",
  logLevel: "warning",
});
for (const entry of readdirSync(path.join(root, "src"), { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || (!entry.name.endsWith(".mjs") && !entry.name.endsWith(".cjs"))) continue;
  const from = path.join(entry.parentPath, entry.name);
  const to = path.join(dist, path.relative(root, from));
  mkdirSync(path.dirname(to), { recursive: true });
  copyFileSync(from, to);
}
