import { randomBytes } from "node:crypto";
import { lstatSync, type Stats, statSync } from "node:fs";
import { cp, lstat, mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";
import type { PackageOverlaySummary } from "../packages/overlay.js";
import type { SessionPackage } from "../packages/package-catalog.js";
import {
  agentsFileInPlace,
  aliasLinkOps,
  BUILTIN_TEMPLATE_DIR,
  freshAgentsFileOps,
  syncAgentsFile,
  templateAgentsText,
} from "./agents-file.js";
import { type FsBatchResult, type FsOp, workspaceFs } from "./fs-batch/fs-batch.js";
import { ensureGitRepo, freshGitRepoOps, gitSkeleton, isGitRepo } from "./git-repo.js";
import { MEMORY_TEMP_NAME, resolveSessionDir, sessionRepoDir } from "./session-path.js";
import type { SpareContent, SpareSource } from "./spare-workspaces.js";
import { stagingPath } from "./staging.js";

/** Input of `prepareWorkspace`. */
export interface PrepareWorkspaceOptions {
  workspacesRoot: string;
  sessionId: string;
  softwareRoot: string | null;
  providerAlias: string | null;
  knownAliases: readonly string[];
  prompt: string;
  /** The package the request named (normalised), or null. */
  packageId?: string | null;
  /** Resolves and overlays the session's package (spec §5.3, §5.4); absent = no packages. */
  packages?: SessionPackages;
  /** Created after the workspace (in the same file-system batch for a new session). */
  providerFiles?: ProviderFiles;
  /** Ready-made session directories a new session on the built-in template claims (spare-workspaces.ts). */
  spares?: SpareSource;
  /** Environment for `git init` (PATH at least). */
  gitEnv?: NodeJS.ProcessEnv;
  now?: Date;
}

/** The package stage as the workspace sees it (implemented by `packages/package-catalog.ts`). */
export interface SessionPackages {
  resolveForSession(opts: {
    sessionDir: string;
    requested: string | null;
  }): Promise<SessionPackage | null>;
}

/** Directories and files the provider's command needs in the session (its home, settings). */
export interface ProviderFiles {
  dirs: readonly string[];
  files: readonly { path: string; content: string }[];
}

/** Where the run happens. */
export interface PreparedWorkspace {
  sessionDir: string;
  repoDir: string;
  createdRepo: boolean;
  /** The overlay summary (`meta.package`), or null when the session runs without a package. */
  package: PackageOverlaySummary | null;
}

/** Where the pristine repo new sessions copy lives (a dot name: no session id can take it). */
export const GIT_TEMPLATE_DIRNAME = ".runner-git-template";

/** What a spare session holds when new sessions use the built-in template (spare-workspaces.ts). */
export async function builtinSpareContent(workspacesRoot: string): Promise<SpareContent> {
  const gitTemplate = path.join(workspacesRoot, GIT_TEMPLATE_DIRNAME);
  return {
    agents: await templateAgentsText(null),
    skeleton: await gitSkeleton(gitTemplate, { PATH: process.env.PATH }, workspacesRoot),
  };
}

/**
 * FermiLink's web prepends its unified-memory instructions (1–2k characters)
 * to every prompt; the memory file records the request after them (spec
 * §4.3 step 5). Their wording changes between FermiLink versions, their
 * first and last lines do not.
 */
const WEB_MEMORY_PREFIX_START = "You are running in **FermiLink unified-memory mode**.";
const WEB_MEMORY_PREFIX_END = "Current request/context:\n";

/** The prompt without the web's memory instructions, as memory.md's "Original request". */
function originalRequest(prompt: string): string {
  let request = prompt;
  if (request.startsWith(WEB_MEMORY_PREFIX_START)) {
    const end = request.indexOf(WEB_MEMORY_PREFIX_END);
    if (end >= 0) request = request.slice(end + WEB_MEMORY_PREFIX_END.length);
  }
  return request.trim() === "" ? "(request unavailable)" : request.trim();
}

/** FermiLink's memory skeleton (spec §4.3 step 5). */
export function memorySkeleton(prompt: string, now: Date): string {
  const request = originalRequest(prompt);
  return [
    "# FermiLink Loop Memory",
    "",
    `- started_at_utc: ${now.toISOString()}`,
    "",
    "## Original request",
    "",
    request,
    "",
    "## Plan",
    "",
    "- (not yet planned)",
    "",
    "## Progress log",
    "",
    "- (no progress yet)",
    "",
  ].join("\n");
}

function symlinkRefused(p: string, what: string): RunnerError {
  return new RunnerError(
    "WORKSPACE_SETUP_FAILED",
    `Workspace ${what} at ${p} is a symlink; refusing to write through it.`,
  );
}

function memoryFileFailed(err: unknown): RunnerError {
  return new RunnerError(
    "WORKSPACE_SETUP_FAILED",
    `Failed to initialize workspace memory file: ${(err as Error).message}`,
    { cause: err },
  );
}

/**
 * A new session's `projects/memory.md` as file-system ops: written whole under
 * MEMORY_TEMP_NAME, then renamed into place. `flag`: "w" fills the temporary
 * file a spare holds, "wx" makes it in a `projects/` just made.
 */
function memoryFileOps(repoDir: string, text: string, flag: "w" | "wx"): FsOp[] {
  const temp = path.join(repoDir, "projects", MEMORY_TEMP_NAME);
  return [
    { op: "write", path: temp, content: text, flag },
    { op: "claim", from: temp, to: path.join(repoDir, "projects", "memory.md") },
  ];
}

/**
 * `projects/memory.md`, created once and never overwritten (the agent owns it
 * afterwards), whole or not at all (MEMORY_TEMP_NAME). A symlinked `projects/`
 * (the session keeps its notes elsewhere) is never written through, as it may
 * lead out of the session: with a `memory.md` there already the runner has
 * nothing to write, so the run goes on.
 */
async function ensureMemoryFile(repoDir: string, text: string): Promise<void> {
  const projects = path.join(repoDir, "projects");
  const file = path.join(projects, "memory.md");
  if ((await lstat(projects).catch(() => null))?.isSymbolicLink()) {
    // lstat: memory.md itself may be a link (or anything else the agent made); it is not opened.
    if (await lstat(file).catch(() => null)) return;
    throw new RunnerError(
      "WORKSPACE_SETUP_FAILED",
      `Failed to initialize workspace memory file: ${projects} is a symlink and has no memory.md; the runner does not create files through it. Create memory.md where it points, or replace the link with a directory.`,
    );
  }
  try {
    await mkdir(projects, { recursive: true });
    if (await lstat(file).catch(() => null)) return;
    // What a write cut short left goes, and so does whatever the agent put at the name: removed,
    // never written through, and the new file made exclusively.
    const temp = path.join(projects, MEMORY_TEMP_NAME);
    await rm(temp, { recursive: true, force: true });
    await writeFile(temp, text, { flag: "wx" });
    // No one else writes memory.md meanwhile: the session's runs are serialised, across runners too.
    await rename(temp, file);
  } catch (err) {
    throw memoryFileFailed(err);
  }
}

async function ensureOutputs(repoDir: string): Promise<void> {
  const outputs = path.join(repoDir, "outputs");
  // The runner writes nothing into outputs/, so a link there (results kept on a scratch disk)
  // is left as the session made it: never created through, and no reason to fail every run.
  if ((await lstat(outputs).catch(() => null))?.isSymbolicLink()) return;
  await mkdir(outputs, { recursive: true });
}

/**
 * The template tree as `repoDir`, whole or not at all: the copy is made under
 * a staging name and renamed into place. Copied straight into `repoDir`, a
 * copy that failed part way (disk full, an entry cp cannot copy) left a repo
 * every later run took as made (it exists), so the rest of the template never
 * arrived and the session's package overlay lost its first-run replacements.
 * The staging name is in this runner's staging directory (staging.ts), where
 * a copy cut short by a kill is found and removed at the next start-up; a
 * session directory on another file system (a link to another disk) gets it
 * beside its repo instead, as a rename cannot cross file systems.
 */
async function copyTemplate(
  template: string,
  repoDir: string,
  workspacesRoot: string,
): Promise<void> {
  const copyVia = async (staging: string) => {
    try {
      // Links are copied as they are: by default cp re-points a relative link at the template's
      // own file, so an agent editing its copy would change the template of every later session.
      await cp(template, staging, { recursive: true, errorOnExist: false, verbatimSymlinks: true });
      await rename(staging, repoDir);
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      throw err;
    }
  };
  try {
    await copyVia(await stagingPath(workspacesRoot, path.basename(path.dirname(repoDir))));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    await copyVia(
      path.join(
        path.dirname(repoDir),
        `.${path.basename(repoDir)}-${randomBytes(6).toString("hex")}.tmp`,
      ),
    );
  }
}

/** Which stage an op belongs to, for the error message when it fails. */
type Stage = "workspace" | "memory" | "provider";

/**
 * The provider's home and settings files, in the session directory. They are
 * the runner's, rewritten for every run; the session's agent can write there
 * too, so nothing it left is followed: each directory is made real (a planted
 * symlink replaced) and each file replaced by a rename, never written through.
 */
function providerFileOps(files: ProviderFiles, sessionDir: string): FsOp[] {
  return [
    // A directory outside the session is the admin's (CODEX_HOME): made if missing, as FermiLink
    // does; nothing the agent plants is in its path.
    ...files.dirs.map(
      (dir): FsOp =>
        underSession(dir, sessionDir)
          ? { op: "ownDir", root: sessionDir, path: dir }
          : { op: "mkdir", path: dir, recursive: true },
    ),
    ...files.files.flatMap((f): FsOp[] => [
      { op: "ownDir", root: sessionDir, path: path.dirname(f.path) },
      { op: "replaceFile", path: f.path, content: f.content, mode: 0o600 },
    ]),
  ];
}

const underSession = (p: string, sessionDir: string) => p.startsWith(`${sessionDir}/`);

/** What is at `p`, a link not followed; undefined when nothing is, or it cannot be looked at. */
function lstatQuiet(p: string): Stats | undefined {
  try {
    return lstatSync(p, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

/** Something (a link included) at `p`; false when it cannot be looked at either. */
const exists = (p: string): boolean => lstatQuiet(p) !== undefined;

/** A real directory (not a link to one) at `p`. */
const isRealDir = (p: string) => lstatSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;

/**
 * True when the checking path would change nothing in an existing session's
 * repo: a real repo directory, AGENTS.md and its aliases in place, a valid git
 * repo, `projects/memory.md` and `outputs/`. Synchronous and read-only (about a
 * dozen lstat calls, microseconds on the loop), where that path's checks are a
 * chain of about fifteen thread-pool round trips (≈ 2 ms per run). Anything
 * else, an error included, takes that path, which repairs or reports it.
 */
function sessionInPlace(
  repoDir: string,
  agents: Buffer,
  providerAlias: string | null,
  knownAliases: readonly string[],
): boolean {
  try {
    return (
      isRealDir(repoDir) &&
      agentsFileInPlace(repoDir, agents, providerAlias, knownAliases) &&
      isGitRepo(repoDir) &&
      // Through a symlinked projects/ too: with memory.md there, nothing is written (ensureMemoryFile).
      exists(path.join(repoDir, "projects", "memory.md")) &&
      isRealDir(path.join(repoDir, "outputs"))
    );
  } catch {
    return false;
  }
}

/**
 * True when the provider's files need no batch: no files to write, and each of
 * its directories is a real directory at every level below the session
 * directory (what `ownDir` would otherwise make so). Files are always
 * rewritten: the runner's settings of this run.
 */
function providerDirsInPlace(files: ProviderFiles, sessionDir: string): boolean {
  if (files.files.length > 0) return false;
  try {
    return files.dirs.every((dir) => {
      if (!underSession(dir, sessionDir))
        return statSync(dir, { throwIfNoEntry: false })?.isDirectory() ?? false;
      let at = sessionDir;
      for (const part of dir.slice(sessionDir.length + 1).split("/")) {
        if (part === "") continue;
        at = `${at}/${part}`;
        if (!isRealDir(at)) return false;
      }
      return true;
    });
  } catch {
    return false;
  }
}

/** Run staged ops on the worker; on failure, which stage the failed op belongs to. */
async function runStaged(
  staged: { stage: Stage; ops: FsOp[] }[],
): Promise<FsBatchResult & { stage: Stage | null }> {
  const result = await workspaceFs.run(staged.flatMap((s) => s.ops));
  let end = 0;
  for (const s of staged) {
    end += s.ops.length;
    if (result.failedAt >= 0 && result.failedAt < end) return { ...result, stage: s.stage };
  }
  return { ...result, stage: null };
}

function stageError(stage: Stage, message: string, code: string): RunnerError {
  const cause = Object.assign(new Error(message), { code });
  if (stage === "memory") return memoryFileFailed(cause);
  return new RunnerError(
    "WORKSPACE_SETUP_FAILED",
    stage === "provider"
      ? `Could not prepare the provider's files: ${message}`
      : `Could not prepare the session workspace: ${message}`,
    { cause },
  );
}

/** The provider's files on the worker, or nothing when they need nothing (`providerDirsInPlace`). */
async function writeProviderFiles(files: ProviderFiles, sessionDir: string): Promise<void> {
  if (providerDirsInPlace(files, sessionDir)) return;
  const result = await runStaged([{ stage: "provider", ops: providerFileOps(files, sessionDir) }]);
  if (result.failedAt >= 0) throw stageError("provider", result.message, result.code);
}

/**
 * Create or refresh a session workspace (spec §4.3): session dir; the
 * template tree copied into `repo/` on first use only; AGENTS.md and the
 * provider alias; a git repo; the session's package overlaid (then
 * AGENTS.md again); `projects/memory.md` created once; `outputs/`; then the
 * provider's own files.
 *
 * A new session on the built-in template without a package is one batch of
 * about twenty file creations on the file-system worker (`fs-batch/`): the
 * runner's loop sends one message and stays free, and a burst of new
 * sessions is written in arrival order. Any other session takes the
 * asynchronous path, which checks every step.
 */
export async function prepareWorkspace(opts: PrepareWorkspaceOptions): Promise<PreparedWorkspace> {
  const sessionDir = resolveSessionDir(opts.workspacesRoot, opts.sessionId);
  const repoDir = sessionRepoDir(sessionDir);
  const providerFiles = opts.providerFiles ?? { dirs: [], files: [] };
  try {
    // Not followed: a link there (to /, or to another session's directory) would have the
    // runner make the session, and run its agent, wherever it points.
    const found = lstatQuiet(sessionDir);
    if (found?.isSymbolicLink()) throw symlinkRefused(sessionDir, "session directory");
    if (found !== undefined && !found.isDirectory()) {
      throw new RunnerError(
        "WORKSPACE_SETUP_FAILED",
        `Workspace session directory at ${sessionDir} is not a directory; move it aside to start the session again.`,
      );
    }
    const agents = await templateAgentsText(opts.softwareRoot);
    const gitEnv = opts.gitEnv ?? { PATH: process.env.PATH };
    const gitTemplate = path.join(opts.workspacesRoot, GIT_TEMPLATE_DIRNAME);
    const memory = memorySkeleton(opts.prompt, opts.now ?? new Date());
    const pkg =
      (await opts.packages?.resolveForSession({
        sessionDir,
        requested: opts.packageId ?? null,
      })) ?? null;
    // A new session on the built-in template without a package is made in one batch (or claimed).
    const builtinPlain = opts.softwareRoot === null && pkg === null;
    // A session seen to exist claims no spare (the claim would fail): a worker round trip saved.
    const seen = found !== undefined;
    if (
      seen &&
      pkg === null &&
      sessionInPlace(repoDir, agents, opts.providerAlias, opts.knownAliases)
    ) {
      await writeProviderFiles(providerFiles, sessionDir);
      return { sessionDir, repoDir, createdRepo: false, package: null };
    }
    let sessionExists = false;
    const spare = builtinPlain && !seen ? (opts.spares?.take() ?? null) : null;
    if (spare !== null) {
      // One rename instead of a dozen creations; the claim fails when the session dir exists.
      // A batch that never answered (the worker died) leaves the spare unknown: given up.
      const result = await runStaged([
        {
          stage: "workspace",
          ops: [
            { op: "claim", from: spare, to: sessionDir },
            ...aliasLinkOps(repoDir, opts.providerAlias),
          ],
        },
        { stage: "memory", ops: memoryFileOps(repoDir, memory, "w") },
        { stage: "provider", ops: providerFileOps(providerFiles, sessionDir) },
      ]).catch((err: unknown) => {
        opts.spares?.settle(spare, "broken");
        throw err;
      });
      const claimed = result.failedAt !== 0;
      sessionExists = !claimed && result.code === "EEXIST";
      opts.spares?.settle(spare, claimed ? "claimed" : sessionExists ? "unused" : "broken");
      if (result.failedAt < 0) return { sessionDir, repoDir, createdRepo: true, package: null };
      if (claimed) throw stageError(result.stage ?? "workspace", result.message, result.code);
    }
    // A session that exists takes the checking path below at once.
    if (builtinPlain && !sessionExists) {
      const skeleton = await gitSkeleton(gitTemplate, gitEnv, repoDir);
      // Creating repo/ decides: when it exists (a symlink included), the checking path below
      // takes the session, so two runtimes racing on one session cannot both write it.
      const result = await runStaged([
        {
          stage: "workspace",
          ops: [
            { op: "mkdir", path: sessionDir, recursive: true },
            { op: "mkdir", path: repoDir },
            ...freshAgentsFileOps(repoDir, agents, opts.providerAlias),
            ...freshGitRepoOps(repoDir, skeleton),
          ],
        },
        {
          stage: "memory",
          ops: [
            { op: "mkdir", path: path.join(repoDir, "projects") },
            ...memoryFileOps(repoDir, memory, "wx"),
          ],
        },
        { stage: "workspace", ops: [{ op: "mkdir", path: path.join(repoDir, "outputs") }] },
        { stage: "provider", ops: providerFileOps(providerFiles, sessionDir) },
      ]);
      if (result.failedAt < 0) return { sessionDir, repoDir, createdRepo: true, package: null };
      if (!(result.failedAt === 1 && result.code === "EEXIST")) {
        throw stageError(result.stage ?? "workspace", result.message, result.code);
      }
    }
    await mkdir(sessionDir, { recursive: true });
    const repoStat = await lstat(repoDir).catch(() => null);
    if (repoStat?.isSymbolicLink()) throw symlinkRefused(repoDir, "repo");
    const createdRepo = repoStat === null;
    if (createdRepo)
      await copyTemplate(opts.softwareRoot ?? BUILTIN_TEMPLATE_DIR, repoDir, opts.workspacesRoot);
    // AGENTS.md and .git are disjoint paths: both at once.
    await Promise.all([
      syncAgentsFile(repoDir, agents, opts.providerAlias, opts.knownAliases),
      ensureGitRepo(repoDir, gitEnv, gitTemplate),
    ]);
    const overlay = pkg ? await pkg.apply({ repoDir, createdRepo }) : null;
    // Again after the overlay, so a package can never replace the policy file or its alias.
    if (overlay) await syncAgentsFile(repoDir, agents, opts.providerAlias, opts.knownAliases);
    await ensureMemoryFile(repoDir, memory);
    await ensureOutputs(repoDir);
    await writeProviderFiles(providerFiles, sessionDir);
    return { sessionDir, repoDir, createdRepo, package: overlay };
  } catch (err) {
    if (err instanceof RunnerError) throw err;
    throw new RunnerError(
      "WORKSPACE_SETUP_FAILED",
      `Could not prepare the session workspace: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}
