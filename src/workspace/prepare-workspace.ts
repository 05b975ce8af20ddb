import { cp, lstat, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";
import type { PackageOverlaySummary } from "../packages/overlay.js";
import { BUILTIN_TEMPLATE_DIR, syncAgentsFile, templateAgentsPath } from "./agents-file.js";
import { ensureGitRepo } from "./git-repo.js";
import { resolveSessionDir } from "./session-path.js";

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
  /** Environment for `git init` (PATH at least). */
  gitEnv?: NodeJS.ProcessEnv;
  now?: Date;
}

/** The package stage as the workspace sees it (implemented by `packages/package-catalog.ts`). */
export interface SessionPackages {
  overlayForSession(opts: {
    sessionDir: string;
    repoDir: string;
    requested: string | null;
    createdRepo: boolean;
  }): Promise<PackageOverlaySummary | null>;
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

/** FermiLink's memory skeleton (spec §4.3 step 5). */
export function memorySkeleton(prompt: string, now: Date): string {
  const request = prompt.trim() === "" ? "(request unavailable)" : prompt.trim();
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

/** Refuse a path the runner writes into when it is a symlink (it could point outside the session). */
async function refuseSymlink(p: string, what: string): Promise<void> {
  if ((await lstat(p).catch(() => null))?.isSymbolicLink()) {
    throw new RunnerError(
      "WORKSPACE_SETUP_FAILED",
      `Workspace ${what} at ${p} is a symlink; refusing to write through it.`,
    );
  }
}

/**
 * Create or refresh a session workspace (spec §4.3), asynchronously so other
 * requests are never blocked: session dir; the template tree copied into
 * `repo/` on first use only; AGENTS.md and the provider alias; a git repo;
 * the session's package overlaid (then AGENTS.md again); `projects/memory.md`
 * created once; `outputs/`.
 */
export async function prepareWorkspace(opts: PrepareWorkspaceOptions): Promise<PreparedWorkspace> {
  const sessionDir = resolveSessionDir(opts.workspacesRoot, opts.sessionId);
  const repoDir = path.join(sessionDir, "repo");
  try {
    await mkdir(sessionDir, { recursive: true });
    await refuseSymlink(repoDir, "repo");
    const createdRepo = (await lstat(repoDir).catch(() => null)) === null;
    if (createdRepo) {
      await cp(opts.softwareRoot ?? BUILTIN_TEMPLATE_DIR, repoDir, {
        recursive: true,
        errorOnExist: false,
      });
    }
    const agentsTemplate = await templateAgentsPath(opts.softwareRoot);
    await syncAgentsFile(repoDir, agentsTemplate, opts.providerAlias, opts.knownAliases);
    await ensureGitRepo(
      repoDir,
      opts.gitEnv ?? { PATH: process.env.PATH },
      path.join(opts.workspacesRoot, GIT_TEMPLATE_DIRNAME),
    );
    const overlay =
      (await opts.packages?.overlayForSession({
        sessionDir,
        repoDir,
        requested: opts.packageId ?? null,
        createdRepo,
      })) ?? null;
    // Again after the overlay, so a package can never replace the policy file or its alias.
    if (overlay) {
      await syncAgentsFile(repoDir, agentsTemplate, opts.providerAlias, opts.knownAliases);
    }
    const projects = path.join(repoDir, "projects");
    await refuseSymlink(projects, "projects");
    try {
      await mkdir(projects, { recursive: true });
      // "wx": create once, never overwrite (the agent owns it afterwards).
      await writeFile(
        path.join(projects, "memory.md"),
        memorySkeleton(opts.prompt, opts.now ?? new Date()),
        {
          flag: "wx",
        },
      ).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "EEXIST") throw err;
      });
    } catch (err) {
      throw new RunnerError(
        "WORKSPACE_SETUP_FAILED",
        `Failed to initialize workspace memory file: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    const outputs = path.join(repoDir, "outputs");
    await refuseSymlink(outputs, "outputs");
    await mkdir(outputs, { recursive: true });
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
