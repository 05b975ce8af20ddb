import { createHash, timingSafeEqual } from "node:crypto";
import { RunnerError } from "../errors/runner-error.js";

/** The header FermiLink's web sends with `/ops/*` calls (spec §7.3). */
export const METRICS_TOKEN_HEADER = "x-runner-metrics-token";

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest();

/**
 * FermiLink's token guard with its messages: missing → 401, wrong → 403.
 * The comparison is constant-time (spec §10 item 5): both sides are hashed
 * first so the length of the token does not leak either.
 */
export function checkMetricsToken(
  expected: string | null,
  presented: string | null | undefined,
): void {
  if (expected === null) return;
  const given = (presented ?? "").trim();
  if (given === "") throw new RunnerError("UNAUTHENTICATED", "Missing X-Runner-Metrics-Token.");
  if (!timingSafeEqual(digest(given), digest(expected))) {
    throw new RunnerError("PERMISSION_DENIED", "Invalid X-Runner-Metrics-Token.");
  }
}
