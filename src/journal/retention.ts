import type { Logger } from "../log/logger.js";
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

/**
 * Enforce the run store's retention in the background: finished runs older
 * than `retentionMs`, then the oldest finished runs while stored events exceed
 * `maxBytes`. Live runs are never deleted, nor runs being read (READ_GRACE_MS).
 * `now` must be the clock the store stamps reads with (SqliteRunStore's `now`).
 */
export function startRetention(
  store: RunStore,
  limits: { retentionMs: number; maxBytes: number },
  logger: Logger,
  now: () => number = Date.now,
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
  };
  prune();
  const timer = setInterval(prune, RETENTION_INTERVAL_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
