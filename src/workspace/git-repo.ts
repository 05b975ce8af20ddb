import { execFile } from "node:child_process";
import { readFile, stat } from "node:fs/promises";
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

/** `git init -q` when needed, asynchronously, with FermiLink's messages on failure. */
export async function ensureGitRepo(repoDir: string, env: NodeJS.ProcessEnv): Promise<void> {
  if (await isGitRepo(repoDir)) return;
  await new Promise<void>((resolve, reject) => {
    execFile(
      "git",
      ["init", "-q"],
      { cwd: repoDir, env, timeout: 30_000, maxBuffer: 64 * 1024 },
      (err, _out, stderr) => {
        if (!err) return resolve();
        const code = (err as NodeJS.ErrnoException).code;
        reject(
          new RunnerError(
            "WORKSPACE_SETUP_FAILED",
            code === "ENOENT"
              ? `Git is required but not found on PATH, and ${repoDir} is not a valid git repo.`
              : `Failed to initialize git repo at ${repoDir}: ${String(stderr).trim() || err.message}`,
            { cause: err },
          ),
        );
      },
    );
  });
  if (!(await isGitRepo(repoDir))) {
    throw new RunnerError(
      "WORKSPACE_SETUP_FAILED",
      `Git did not produce a valid git repo at ${repoDir}.`,
    );
  }
}
