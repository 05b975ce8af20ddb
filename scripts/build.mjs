/**
 * `npm run build` (and the first step of `npm start`): the TypeScript of src/
 * and gen/ transpiled file by file into dist/, in the checkout's tree (so
 * dist/src imports dist/gen as src imports gen), and the plain-JavaScript
 * modules (.mjs: the spawn helper, the file-system worker, what they share;
 * .cjs: the run store's checkpoint worker) copied beside their compiled neighbours, which load them by relative path.
 * Transpiling only, in a fraction of a second: `npm test` type-checks.
 */
import {
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dist = path.join(root, "dist");
// dist is a symbolic link to one build, .dist-<ms>-<pid>/, and a new build goes in by one
// rename(2) of a new link over it: dist/ resolves at every moment, to one whole build. (Two
// renames of directories left it missing between them, for as long as the build was descheduled
// there.) From scratch: a module deleted from src/ must not live on in dist/.
const building = path.join(root, `.dist-tmp-${process.pid}`);
rmSync(building, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: ["src/**/*.ts", "gen/**/*.ts"],
  outdir: building,
  outbase: ".",
  format: "esm",
  platform: "node",
  target: "node20",
  logLevel: "warning",
});
for (const entry of readdirSync(path.join(root, "src"), { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || (!entry.name.endsWith(".mjs") && !entry.name.endsWith(".cjs"))) continue;
  const from = path.join(entry.parentPath, entry.name);
  const to = path.join(building, path.relative(root, from));
  mkdirSync(path.dirname(to), { recursive: true });
  copyFileSync(from, to);
}

// npm pack leaves symbolic links out of the package: packing (the `prepare` script) makes dist/ a
// directory, in two renames, and the next build makes it a link again.
if (process.env.npm_command === "pack" || process.env.npm_command === "publish") {
  replaceDirectory(building);
} else {
  // Named when it goes in, so the names order the builds as they went in (prune reads them so).
  const version = `.dist-${Date.now()}-${process.pid}`;
  const link = path.join(root, `.dist-link-${process.pid}`);
  rmSync(link, { force: true });
  // The link exists, naming its build, before the build has that name: a concurrent build's prune
  // sees a live build's link and keeps its target until it is in.
  symlinkSync(version, link);
  renameSync(building, path.join(root, version));
  try {
    renameSync(link, dist);
  } catch (err) {
    if (err.code !== "EISDIR" && err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    // dist/ is a directory (built for npm pack, or by this script before it made links): no rename
    // puts a link in its place, so it goes aside first. Servers started from it resolved their
    // modules through dist/ itself, which is the new build from now on.
    replaceDirectory(link);
  }
}
prune();

/** `from` made dist in two renames (dist is missing between them). */
function replaceDirectory(from) {
  const aside = path.join(root, `.dist-old-${process.pid}`);
  for (let attempt = 0; ; attempt++) {
    rmSync(aside, { recursive: true, force: true });
    try {
      renameSync(dist, aside);
    } catch (err) {
      if (err.code !== "ENOENT") throw err;
    }
    try {
      renameSync(from, dist);
      break;
    } catch (err) {
      // A concurrent build put its dist in between: the last one to go in wins, each whole.
      const lost = ["ENOTEMPTY", "EEXIST", "EISDIR", "ENOTDIR"].includes(err.code);
      if (!lost || attempt >= 5) throw err;
    }
  }
  rmSync(aside, { recursive: true, force: true });
}

/**
 * Removes the builds no process may still load from, and what dead builds left. Node resolves
 * a module to its real path: a server started through dist/ loads its later modules (the spawn
 * helper, started with the first run; the file-system and checkpoint workers) from the build dist
 * named when it started, by that build's own name, for as long as it runs. A build is kept while a
 * process that refers to this checkout (its working directory or a path in its command line) may
 * have started on it: one that started between the build's going in (less START_SLACK_MS, the
 * time from a process's start to its loading dist/, e.g. `npm start`'s shell building first) and
 * its being replaced. Without /proc nothing can tell: every build is kept.
 */
function prune() {
  const START_SLACK_MS = 5 * 60_000;
  // /proc/stat's boot time is in whole seconds.
  const CLOCK_ERROR_MS = 2_000;
  const builds = [];
  const pending = new Set();
  for (const name of readdirSync(root)) {
    const build = /^\.dist-(\d+)-\d+$/.exec(name);
    if (build) {
      builds.push({ name, wentIn: Number(build[1]) });
      continue;
    }
    // Left by a build: tmp (transpiling), link (going in), old (going out); .dist-<pid> is a
    // build in progress of this script's earlier versions.
    const left = /^\.dist-(?:(tmp|link|old)-)?(\d+)$/.exec(name);
    if (!left) continue;
    if (isAlive(Number(left[2]))) {
      if (left[1] === "link") {
        try {
          pending.add(readlinkSync(path.join(root, name)));
        } catch {
          // Gone in: its target is dist's, read below.
        }
      }
    } else {
      rmSync(path.join(root, name), { recursive: true, force: true });
    }
  }
  let current = null;
  try {
    current = readlinkSync(dist);
  } catch {
    // A directory (made for npm pack): every build is out.
  }
  const starts = startsOfProcessesUsing(root);
  if (starts === null) return;
  builds.sort((a, b) => a.wentIn - b.wentIn);
  const now = Date.now();
  for (const [i, b] of builds.entries()) {
    if (b.name === current || pending.has(b.name)) continue;
    const replaced = builds[i + 1]?.wentIn ?? now;
    const mayUse = starts.some(
      (s) => s - CLOCK_ERROR_MS < replaced && s + START_SLACK_MS + CLOCK_ERROR_MS > b.wentIn,
    );
    if (!mayUse) rmSync(path.join(root, b.name), { recursive: true, force: true });
  }
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === "EPERM";
  }
}

/**
 * Start times (ms since the epoch) of the other processes whose working directory is in `dir`
 * or whose command line names a path in it (`node dist/src/main.js`, the bin); null without
 * /proc. A process of another user, whose working directory cannot be read, counts when an
 * argument mentions dist/ or the bin.
 */
function startsOfProcessesUsing(dir) {
  let bootTime;
  try {
    bootTime = Number(/^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"))?.[1]);
  } catch {
    return null;
  }
  if (!Number.isFinite(bootTime)) return null;
  const dirs = [...new Set([dir, realpathSync(dir)])];
  const inDir = (p) => dirs.some((d) => p === d || p.startsWith(d + path.sep));
  const real = (p) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  // This build's own ancestors (npm, `npm start`'s shell, a test run) load nothing from the
  // build it replaces (`npm start`'s shell goes on to the new one).
  const ours = new Set();
  for (let pid = process.pid; pid > 1 && !ours.has(pid); ) {
    ours.add(pid);
    try {
      pid = Number(statFields(readFileSync(`/proc/${pid}/stat`, "utf8"))[1]);
    } catch {
      break;
    }
  }
  const starts = [];
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid) || ours.has(Number(pid))) continue;
    let argv;
    let stat;
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue; // Gone meanwhile.
    }
    let cwd = null;
    try {
      cwd = readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      // Another user's.
    }
    const uses =
      cwd === null
        ? argv.some((a) => /dist\/|fermilink-runner/.test(a) || (path.isAbsolute(a) && inDir(a)))
        : inDir(cwd) || argv.some((a) => a.includes("/") && inDir(real(path.resolve(cwd, a))));
    if (!uses) continue;
    const fields = statFields(stat);
    // Its own children (esbuild's service) are not servers.
    if (Number(fields[1]) === process.pid) continue;
    // Field 22, starttime, in clock ticks (USER_HZ, 100 on Linux) since boot.
    const ticks = Number(fields[19]);
    if (Number.isFinite(ticks)) starts.push((bootTime + ticks / 100) * 1000);
  }
  return starts;
}

/** The fields of a /proc/<pid>/stat from the third (state) on: after the command name, which may hold spaces and parentheses. */
function statFields(stat) {
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}
