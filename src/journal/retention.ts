import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import type { Logger } from "../log/logger.js";
import { resolveSessionDir } from "../workspace/session-path.js";
import type { RunStore } from "./run-store.js";

/** How often retention runs (it also runs once at start-up). */
const RETENTION_INTERVAL_MS = 10 * 60 * 1000;

/**
 * A finished run whose events a viewer read within this long (SSE
 * `GET /runs/{id}/events`, Attach, a lagging Run caller) is left to a later
 * pass: deleting it would cut that stream short. One interval, so a viewer
 * that keeps reading keeps its run, and one stalled this long no longer holds
 * the store above its limits (it is then told the run was deleted).
 */
export const READ_GRACE_MS = RETENTION_INTERVAL_MS;

/** Owner records looked at in one synchronous step of `pruneSessionOwners` (≈ 1 ms). */
const SESSION_PAGE = 1000;

/** What of a session, besides its stored runs, keeps its owner record (`pruneSessionOwners`). */
export interface SessionRemains {
  /** The workspaces root: a session's directory there is its workspace. */
  workspacesRoot: string;
  /** Sessions of the runs held in memory (live, or ended with writes still pending). */
  sessionsInMemory(): ReadonlySet<string>;
}

/**
 * Delete the owner records of sessions nothing is left of: no stored run, no
 * run in memory, no workspace directory. While any of these remains, another
 * user claiming the session would take over its owner's files or history.
 * The runner never deletes workspaces, so a record goes once the operator
 * removed its session's directory (the records number at most the
 * directories plus the sessions with stored runs).
 *
 * The root is listed off the event loop and rules out most sessions; the few
 * left are checked again, with the store, in one synchronous step per page:
 * a run that claimed a session meanwhile is in memory or stored by then, and
 * its directory is seen. Pages of SESSION_PAGE records, with the loop free
 * between them (100,000 records at once held it 0.1–1 s on a busy 2-core
 * box). An unreadable root deletes nothing.
 */
export async function pruneSessionOwners(
  store: RunStore,
  remains: SessionRemains,
): Promise<number> {
  let listed: Set<string>;
  try {
    listed = new Set(await readdir(remains.workspacesRoot));
  } catch {
    return 0;
  }
  const keep = (inMemory: ReadonlySet<string>) => (id: string) => {
    if (listed.has(id) || inMemory.has(id)) return true;
    try {
      return existsSync(resolveSessionDir(remains.workspacesRoot, id));
    } catch {
      // An id no directory can be made of (never stored by this runner) has nothing on disk.
      return false;
    }
  };
  let deleted = 0;
  let after: string | null = "";
  while (after !== null) {
    if (store.isClosed) break;
    const page = store.pruneSessions(keep(remains.sessionsInMemory()), {
      after,
      limit: SESSION_PAGE,
    });
    deleted += page.deleted;
    after = page.next;
    if (after !== null) await new Promise((r) => setImmediate(r));
  }
  return deleted;
}

/**
 * Enforce the run store's retention in the background: finished runs older
 * than `retentionMs`, then the oldest finished runs while stored events exceed
 * `maxBytes`. Live runs are never deleted, nor runs being read (READ_GRACE_MS).
 * Then, with `sessions`, the owner records of sessions nothing is left of.
 * `now` must be the clock the store stamps reads with (SqliteRunStore's `now`).
 */
export function startRetention(
  store: RunStore,
  limits: { retentionMs: number; maxBytes: number },
  logger: Logger,
  now: () => number = Date.now,
  sessions: SessionRemains | null = null,
): { stop(): void } {
  const prune = () => {
    try {
      const at = now();
      const removed = store.prune({
        endedBeforeMs: at - limits.retentionMs,
        maxBytes: limits.maxBytes,
        readSinceMs: at - READ_GRACE_MS,
      });
      if (removed > 0) logger.info({ removed }, "run store retention removed finished runs");
    } catch (err) {
      logger.error({ err }, "run store retention failed");
    }
    if (sessions === null) return;
    pruneSessionOwners(store, sessions).then(
      (removed) => {
        if (removed > 0) logger.info({ removed }, "run store retention removed session owners");
      },
      (err: unknown) => logger.error({ err }, "run store retention of session owners failed"),
    );
  };
  prune();
  const timer = setInterval(prune, RETENTION_INTERVAL_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
