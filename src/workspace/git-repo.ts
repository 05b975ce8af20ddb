import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";

/** FermiLink's validity rule (spec §4.3 step 4): `.git` dir with HEAD, or a `gitdir:` file. */
async function isGitRepo(repoDir: string): Promise<boolean> {
  const dotGit = path.join(repoDir, ".git");
  const st = await stat(dotGit).catch(() => null);
  if (!st) return false;
  if (st.isDirectory()) return (await stat(path.join(dotGit, "HEAD")).catch(() => null)) !== null;
  const text = await readFile(dotGit, "utf8").catch(() => "");
  return text.startsWith("gitdir:");
}

function gitInit(dir: string, env: NodeJS.ProcessEnv, target: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    execFile(
      "git",
      ["init", "-q"],
      { cwd: dir, env, timeout: 30_000, maxBuffer: 64 * 1024 },
      (err, _out, stderr) => {
        if (!err) return resolve();
        const code = (err as NodeJS.ErrnoException).code;
        reject(
          new RunnerError(
            "WORKSPACE_SETUP_FAILED",
            code === "ENOENT"
              ? `Git is required but not found on PATH, and ${target} is not a valid git repo.`
              : `Failed to initialize git repo at ${target}: ${String(stderr).trim() || err.message}`,
            { cause: err },
          ),
        );
      },
    );
  });
}

/** Copy a small tree of plain files and directories (fs.cp does far more work per file). */
async function copyTree(src: string, dst: string): Promise<void> {
  await mkdir(dst);
  const entries = await readdir(src, { withFileTypes: true });
  await Promise.all(
    entries.map((e) => {
      const from = path.join(src, e.name);
      const to = path.join(dst, e.name);
      if (e.isDirectory()) return copyTree(from, to);
      return copyFile(from, to);
    }),
  );
}

/** One pristine repo per template dir and process, made by the real `git init` once. */
const pristine = new Map<string, Promise<string>>();

/**
 * A directory holding an empty repo made by `git init` (so the host's git and
 * its `init.*` settings decide the layout), created once and reused: a new
 * session copies its `.git` instead of starting a git process, which keeps a
 * burst of new sessions from queueing behind hundreds of process spawns.
 */
function pristineRepo(
  templateDir: string,
  env: NodeJS.ProcessEnv,
  target: string,
): Promise<string> {
  let made = pristine.get(templateDir);
  if (!made) {
    made = (async () => {
      if (await isGitRepo(templateDir)) return templateDir;
      await rm(templateDir, { recursive: true, force: true });
      const tmp = await mkdtemp(`${templateDir}.tmp-`);
      try {
        await gitInit(tmp, env, target);
        // git's sample hooks are inert; not copying them into every session halves the files.
        await rm(path.join(tmp, ".git", "hooks"), { recursive: true, force: true });
        await mkdir(path.join(tmp, ".git", "hooks"));
        await rename(tmp, templateDir);
      } catch (err) {
        await rm(tmp, { recursive: true, force: true });
        if (!(await isGitRepo(templateDir))) throw err;
      }
      return templateDir;
    })();
    pristine.set(templateDir, made);
    // A failure (git missing) is retried by the next run rather than cached forever.
    made.catch(() => pristine.delete(templateDir));
  }
  return made;
}

/**
 * Make `repoDir` a git repo when it is not one (FermiLink runs `git init -q`;
 * the result here is the same repo, copied from a pristine one), with
 * FermiLink's messages on failure.
 */
export async function ensureGitRepo(
  repoDir: string,
  env: NodeJS.ProcessEnv,
  templateDir: string,
): Promise<void> {
  if (await isGitRepo(repoDir)) return;
  const copy = async () => {
    const source = await pristineRepo(templateDir, env, repoDir);
    await rm(path.join(repoDir, ".git"), { recursive: true, force: true });
    await copyTree(path.join(source, ".git"), path.join(repoDir, ".git"));
  };
  try {
    await copy();
  } catch (err) {
    if (err instanceof RunnerError) throw err;
    // The pristine repo vanished under us (someone cleaned the workspaces root): make it again.
    pristine.delete(templateDir);
    await copy();
  }
  if (!(await isGitRepo(repoDir))) {
    throw new RunnerError(
      "WORKSPACE_SETUP_FAILED",
      `Git did not produce a valid git repo at ${repoDir}.`,
    );
  }
}
