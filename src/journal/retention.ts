import type { Logger } from "../log/logger.js";
import type { RunStore } from "./run-store.js";

/** How often retention runs (it also runs once at start-up). */
const RETENTION_INTERVAL_MS = 10 * 60 * 1000;

/**
 * Enforce the run store's retention in the background: finished runs older
 * than `retentionMs`, then the oldest finished runs while stored events exceed
 * `maxBytes`. Live runs are never deleted.
 */
export function startRetention(
  store: RunStore,
  limits: { retentionMs: number; maxBytes: number },
  logger: Logger,
  now: () => number = Date.now,
): { stop(): void } {
  const prune = () => {
    try {
      const removed = store.prune({
        endedBeforeMs: now() - limits.retentionMs,
        maxBytes: limits.maxBytes,
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
