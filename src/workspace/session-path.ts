import { randomUUID } from "node:crypto";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";

const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A new session id like FermiLink's `uuid4().hex`: 32 lowercase hex characters. */
export function generateSessionId(): string {
  return randomUUID().replaceAll("-", "");
}

/**
 * The session directory for `sessionId`, refusing anything that could escape
 * the workspace root (spec §10 item 2): only 1–128 characters of
 * [A-Za-z0-9._-] starting with a letter or digit, never `.`/`..`, and the
 * resolved path must lie strictly under the resolved root.
 */
export function resolveSessionDir(workspacesRoot: string, sessionId: string): string {
  const rule =
    "use 1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit";
  const refuse = () =>
    new RunnerError(
      "SESSION_ID_INVALID",
      sessionId.trim() === ""
        ? `session_id ${JSON.stringify(sessionId.slice(0, 140))} is blank: ${rule}, or omit it (or send it empty) to get a new session.`
        : `session_id ${JSON.stringify(sessionId.slice(0, 140))} is not allowed: ${rule} (or omit it to get a new one).`,
    );
  if (!SESSION_ID.test(sessionId) || sessionId === "." || sessionId === "..") throw refuse();
  const root = path.resolve(workspacesRoot);
  const dir = path.resolve(root, sessionId);
  const rel = path.relative(root, dir);
  if (rel === "" || rel.startsWith("..") || path.isAbsolute(rel) || rel.includes(path.sep))
    throw refuse();
  return dir;
}

/** The session's temp dir (TMPDIR of its runs, unless the provider's command sets its own). */
export const SESSION_TMP_DIRNAME = ".tmp";

/** The session's repo, where the provider runs (spec §4.3). */
export function sessionRepoDir(sessionDir: string): string {
  return path.join(sessionDir, "repo");
}

/**
 * Where `projects/memory.md` is written before it is renamed into place, so a
 * write cut short (a kill, a full disk) leaves no memory.md at all, which the
 * next run writes whole, rather than an empty or partial one taken as the
 * agent's. A fixed name: what a cut-short write left is replaced by that next
 * write.
 */
export const MEMORY_TEMP_NAME = ".memory.md.tmp";
