/**
 * bubblewrap around a provider whose own read-only mode leaves its shell free
 * to write: opencode's plan agent denies edits but still runs bash, so
 * `echo hi > f` lands in the session repo. The whole file system is bound
 * read-only and only the provider's private dirs (never the repo) writable.
 *
 * Like resolve-binary.ts this module touches the system (it looks for a bwrap
 * and tries it once, and resolves the workspaces root for the binds); the
 * argv `bwrapArgs` builds is pure. Without a working bwrap a read-only run
 * keeps the provider's own permissions and the runner says so once in its log
 * (doctor says it too): refusing every read-only run would also refuse
 * FermiLink's routing preflight, which is always read-only.
 *
 * A provider killed alone by signal N (the OOM killer) shows as bwrap's exit
 * 128+N, not FermiLink's -N: bwrap's `--json-status-fd` reports that same
 * 128+N, and the CLIs exit 128+N themselves (opencode 143 on SIGTERM, gemini
 * 144 for an HTTP 400), so the runner cannot tell a signal from such an exit
 * and passes the code on as it is.
 */
import { execFile } from "node:child_process";
import { accessSync, constants, realpathSync, statSync } from "node:fs";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";
import type { AgentPolicy } from "../events/run-event.js";
import { PROJECT_ROOT } from "../project-root.js";
import { enforcedMode } from "./command-parts.js";
import type { ProviderAdapter } from "./provider-adapter.js";

/**
 * The bwrap codex's npm package bundles, by CPU (the package and target
 * names of codex's own launcher, bin/codex.js). Used when the system has none,
 * as codex itself does.
 */
const CODEX_BUNDLED_BWRAP: Readonly<Partial<Record<string, string>>> = {
  x64: "node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/codex-resources/bwrap",
  arm64:
    "node_modules/@openai/codex-linux-arm64/vendor/aarch64-unknown-linux-musl/codex-resources/bwrap",
};

/**
 * bwrap's options before the wrapped command. Each flag and why:
 * - `--unshare-user`: a user namespace even for a root runner. As root
 *   without one, the sandboxed process keeps a path to the host's writable
 *   mounts: `/proc/<bwrap's pid>/root` of its own monitor process, which it
 *   may open because they share uid and (dropped) capabilities. From a child
 *   user namespace that needs CAP_SYS_PTRACE in the parent, which it lacks.
 * - `--cap-drop ALL`: as root, bwrap keeps every capability by default, and
 *   `mount -o remount,rw /` then undoes the read-only bind.
 * - no `--unshare-net`: the model endpoint is reached over the network.
 * - no `--unshare-pid`: the runner finds a run's processes by pid (group
 *   kill) and by their run-id variable in /proc (orphan sweep).
 * - no `--new-session`: the runner ends a run by killing its process group,
 *   which must include bwrap and everything under it.
 * - `--die-with-parent`: the provider dies with bwrap (and bwrap with its
 *   parent) even when only the leader was killed.
 */
export function bwrapArgs(writableDirs: readonly string[]): string[] {
  return [
    "--unshare-user",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    ...writableDirs.flatMap((dir) => ["--bind", dir, dir]),
    "--die-with-parent",
    "--cap-drop",
    "ALL",
    "--",
  ];
}

/**
 * `dirs`, all inside the session dir `runDir`, as bwrap's `--bind` must name
 * them. bwrap makes each mount point under its new root, where an absolute
 * symlink on the way (a workspaces root under a linked /home, as on Fedora
 * Atomic, or a linked FERMILINK_HOME) is read against its empty staging root:
 * "Can't mkdir ...", and every read-only run failed. Only the session dir's
 * parent, the admin's workspaces root, is resolved: the dirs below it are made
 * real by the runner just before the spawn (`ownDir`), whereas resolving them
 * here would follow a link an agent planted (one to the repo) into the bind.
 */
export function bindPaths(dirs: readonly string[], runDir: string): string[] {
  let root: string;
  try {
    root = realpathSync(path.dirname(runDir));
  } catch {
    // Not there (yet): bwrap then says what is wrong with the path.
    return [...dirs];
  }
  const realRunDir = path.join(root, path.basename(runDir));
  return dirs.map((dir) => path.join(realRunDir, path.relative(runDir, dir)));
}

/** Where a bwrap may be: the system's on PATH (Debian's `bubblewrap`), then codex's bundled one. */
export function bwrapCandidates(pathEnv: string, projectRoot = PROJECT_ROOT): string[] {
  const candidates = pathEnv
    .split(path.delimiter)
    .filter((d) => d !== "" && path.isAbsolute(d))
    .map((d) => path.join(d, "bwrap"));
  const bundled = CODEX_BUNDLED_BWRAP[process.arch];
  if (bundled !== undefined) candidates.push(path.join(projectRoot, bundled));
  return candidates;
}

/** What the lookup found: the first bwrap that ran a sandbox here, and what was refused and why. */
export interface BwrapLookup {
  bin: string | null;
  /** Its `--version` line, or null. */
  version: string | null;
  /** `<path> (<why>)` for each candidate that exists but could not be used. */
  refused: string[];
}

function isExecutableFile(file: string): boolean {
  try {
    if (!statSync(file).isFile()) return false;
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Run `bin args` (5 s at most): its output, or why it failed. */
function run(
  bin: string,
  args: string[],
  pathEnv: string,
): Promise<{ out: string; err: string | null }> {
  return new Promise((resolve) => {
    execFile(bin, args, { timeout: 5_000, env: { PATH: pathEnv } }, (err, stdout, stderr) => {
      const said = `${stderr}`.trim().split("\n").at(-1) ?? "";
      resolve({ out: `${stdout}`, err: err ? said || err.message : null });
    });
  });
}

/**
 * Try each candidate as the runner will use it: the same options (namespaces
 * may be refused, as in many containers), running bwrap's own `--version`
 * inside (a file every candidate has, and bound read-only like the rest).
 */
async function lookUp(pathEnv: string, projectRoot: string): Promise<BwrapLookup> {
  const refused: string[] = [];
  for (const candidate of bwrapCandidates(pathEnv, projectRoot)) {
    if (!isExecutableFile(candidate)) continue;
    const probe = await run(candidate, [...bwrapArgs([]), candidate, "--version"], pathEnv);
    if (probe.err === null) {
      const version = probe.out.trim().split("\n")[0] ?? "";
      return { bin: candidate, version, refused };
    }
    refused.push(`${candidate} (${probe.err})`);
  }
  return { bin: null, version: null, refused };
}

/** Lookups per PATH and project (see `findWorkingBwrap`). */
const lookups = new Map<string, { found: Promise<BwrapLookup>; atMs: number }>();

/**
 * How long a lookup that found no working bwrap stands before the next run
 * looks again: a probe can fail for a passing reason (its 5 s deadline on a
 * machine busy with a burst), and a failure kept for the process's life would
 * leave every later read-only run unsandboxed.
 */
export const RETRY_LOOKUP_MS = 60_000;

/**
 * The first bwrap that works on this machine (see `lookUp`): found once for
 * the process's life, or not found for RETRY_LOOKUP_MS. Never rejects.
 */
export function findWorkingBwrap(
  pathEnv: string,
  projectRoot = PROJECT_ROOT,
  nowMs = Date.now(),
): Promise<BwrapLookup> {
  const key = `${projectRoot}\0${pathEnv}`;
  const cached = lookups.get(key);
  if (cached !== undefined) {
    const stale = nowMs - cached.atMs >= RETRY_LOOKUP_MS;
    return cached.found.then((r) => (r.bin === null && stale ? relook() : r));
  }
  return relook();

  function relook(): Promise<BwrapLookup> {
    const entry = lookups.get(key);
    // One probe at a time: callers that see the same stale failure share the new lookup.
    if (entry !== undefined && nowMs - entry.atMs < RETRY_LOOKUP_MS) return entry.found;
    const found = lookUp(pathEnv, projectRoot);
    lookups.set(key, { found, atMs: nowMs });
    return found;
  }
}

/** What a read-only run without a working bwrap still has, for the log and doctor. */
export const NO_BWRAP_CONSEQUENCE =
  "opencode's read-only runs are not isolated: its plan agent denies edits, but its shell can still write in the session repo";

let warnedNoBwrap = false;

/**
 * The bwrap for one run (`BuildCommandInput.bwrap`): only a read-only run of
 * a provider that needs it (`ProviderAdapter.readOnlyNeedsBwrap`) looks it
 * up, so other deployments never start the probe. When none works, says so
 * once per process.
 */
export async function bwrapForRun(
  adapter: Pick<ProviderAdapter, "readOnlyNeedsBwrap">,
  policy: AgentPolicy,
  pathEnv: string,
  logger: { warn(fields: object, message: string): void },
  projectRoot = PROJECT_ROOT,
): Promise<string | null> {
  if (adapter.readOnlyNeedsBwrap !== true || enforcedMode(policy) !== "read-only") return null;
  const found = await findWorkingBwrap(pathEnv, projectRoot);
  if (found.bin === null && !warnedNoBwrap) {
    warnedNoBwrap = true;
    logger.warn(
      { tried: found.refused },
      `No working bubblewrap (install Debian's bubblewrap): ${NO_BWRAP_CONSEQUENCE}.`,
    );
  }
  return found.bin;
}

/**
 * Forget every lookup: the bwrap found cannot be executed any more (removed
 * or replaced, as by an upgrade), so the next read-only run looks again, and
 * says again when none is left.
 */
export function forgetWorkingBwrap(): void {
  lookups.clear();
  warnedNoBwrap = false;
}

/**
 * The error of a sandboxed run whose bwrap could not be executed (`err`, the
 * launch's `PROVIDER_BINARY_MISSING`, names bwrap as the CLI and advises
 * FERMILINK_<PROVIDER>_BIN): a runner-side failure, and the lookup is
 * forgotten. Any other start failure is returned as it is.
 */
export function bwrapStartError(bwrap: string, err: unknown): unknown {
  if (!(err instanceof RunnerError) || err.code !== "PROVIDER_BINARY_MISSING") return err;
  forgetWorkingBwrap();
  const code = (err.cause as NodeJS.ErrnoException | undefined)?.code ?? "";
  return new RunnerError(
    "PROVIDER_START_FAILED",
    `The runner failed to start the provider CLI inside its read-only sandbox: the bubblewrap ${bwrap} it had found can no longer be executed${code === "" ? "" : ` (${code})`}, removed or replaced since. This is a runner-side failure, not a problem with the CLI; the next read-only run looks for a working bubblewrap again, so retry the run (install Debian's bubblewrap if none is left).`,
    { cause: err },
  );
}

/**
 * The errno names of exec's failures as bwrap prints them (strerror): glibc's
 * words, and musl's where they differ (codex's bundled bwrap is a musl build).
 */
const EXEC_ERRNO_BY_TEXT: Readonly<Record<string, string>> = {
  "No such file or directory": "ENOENT",
  "Permission denied": "EACCES",
  "Operation not permitted": "EPERM",
  "Not a directory": "ENOTDIR",
  "Is a directory": "EISDIR",
  "Too many levels of symbolic links": "ELOOP",
  "Symbolic link loop": "ELOOP",
  "File name too long": "ENAMETOOLONG",
  "Filename too long": "ENAMETOOLONG",
  "Exec format error": "ENOEXEC",
  "Text file busy": "ETXTBSY",
};

const execFailurePrefix = (bin: string) => `bwrap: execvp ${bin}: `;

/**
 * Whether a sandboxed run's lines so far (`onlyLine` as for `sandboxExecFailure`,
 * while it runs) may still be bwrap failing to exec `bin`: until they cannot,
 * or its exit says, the CLI may never have started.
 */
export function maybeSandboxExecFailure(bin: string, onlyLine: string | null): boolean {
  return onlyLine?.startsWith(execFailurePrefix(bin)) ?? false;
}

/**
 * The spawn error a direct start of `bin` would have given, when a sandboxed
 * run is bwrap failing to exec it (the CLI removed after the runner checked
 * it): bwrap then prints `bwrap: execvp <bin>: <strerror>` and exits 1, and
 * nothing else is printed, since the CLI never ran. So it takes that line as
 * the run's only line (`onlyLine`, null when the run printed none or more
 * than one, or its only one on stdout) and exit code 1; null otherwise.
 */
export function sandboxExecFailure(
  bin: string,
  exitCode: number | null,
  onlyLine: string | null,
): NodeJS.ErrnoException | null {
  if (exitCode !== 1 || !maybeSandboxExecFailure(bin, onlyLine)) return null;
  const said = (onlyLine as string).slice(execFailurePrefix(bin).length);
  const code = EXEC_ERRNO_BY_TEXT[said];
  const err: NodeJS.ErrnoException = new Error(`spawn ${bin} ${code ?? said}`);
  if (code !== undefined) err.code = code;
  return err;
}
