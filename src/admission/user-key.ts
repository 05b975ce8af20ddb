/**
 * Admission keys: who a run is counted against (spec §1.1 step 2, §1.4, §3).
 *
 * FermiLink derives a prefixed key in the route (`user:` or `session:`) and the
 * controller normalises it again with `strip().lower()`. We keep both steps so
 * that `/run` and `/ops/admission` agree on the bucket a caller lands in.
 * `user_id` is trusted as given (spec §10 item 3): binding it to an
 * authenticated identity is the transport's job, not this module's.
 */

import { pyStrip } from "./py-strip.js";

/** The key used when nothing identifies the caller (spec §3, §1.4). */
export const ANONYMOUS_KEY = "anonymous";

/**
 * The controller's normalisation (spec §3): `strip().lower()`, and an empty
 * result becomes `"anonymous"`. Idempotent.
 */
export function normalizeAdmissionKey(key: string): string {
  const k = pyStrip(key).toLowerCase();
  return k === "" ? ANONYMOUS_KEY : k;
}

/** `lower(strip(user_id))`, or `undefined` when it is absent or blank. */
function userPart(userId: string | undefined): string | undefined {
  const u = userId === undefined ? undefined : pyStrip(userId).toLowerCase();
  return u ? u : undefined;
}

/**
 * The key a `POST /run` (or `RunService.Run`) is admitted under (spec §1.1
 * step 2): `user:<lower(strip(user_id))>`, or `session:<session_id>` when
 * `user_id` is missing or blank. `sessionId` is the already chosen (generated
 * if absent) session id. The controller normalises the result once more (spec
 * §3), so `session:ABC` and `session:abc` share one bucket, as in FermiLink.
 */
export function admissionKeyForRun(userId: string | undefined, sessionId: string): string {
  const user = userPart(userId);
  return user !== undefined ? `user:${user}` : `session:${sessionId}`;
}

/**
 * The key `/ops/admission` (and `OpsService.GetAdmission`) reports on (spec
 * §1.4): `user:<lower(strip(user_id))>`, else `session:<strip(session_id)>`,
 * else `session:anonymous`. Returned normalised, as `user_key` is in the
 * response.
 */
export function admissionKeyForQuery(userId?: string, sessionId?: string): string {
  const user = userPart(userId);
  if (user !== undefined) return normalizeAdmissionKey(`user:${user}`);
  const session = (sessionId === undefined ? "" : pyStrip(sessionId)) || ANONYMOUS_KEY;
  return normalizeAdmissionKey(`session:${session}`);
}
