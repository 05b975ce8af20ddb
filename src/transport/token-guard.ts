import { createHash, timingSafeEqual } from "node:crypto";
import { createContextKey } from "@connectrpc/connect";
import { isPyBlank, pyStrip } from "../admission/py-strip.js";
import type { AuthTokens, Caller } from "../auth/auth-tokens.js";
import { RunnerError } from "../errors/runner-error.js";
import { firstHeader } from "./http-types.js";

/** The header FermiLink's web sends with `/ops/*` calls (spec §7.3). */
export const METRICS_TOKEN_HEADER = "x-runner-metrics-token";

/**
 * A Connect call's raw request headers (set by the main handler's
 * `contextValues`): `ctx.requestHeader` joins a repeated header's values
 * like node does, and the token guard wants the first one.
 */
export const RAW_REQUEST_HEADERS = createContextKey<readonly string[] | undefined>(undefined, {
  description: "raw request headers",
});

/**
 * Who a Connect call's bearer token named (set by the auth interceptor);
 * null when auth is off.
 */
export const AUTH_CALLER = createContextKey<Caller | null>(null, { description: "auth caller" });

/** The first `Authorization: Bearer` header's token (the scheme in any case). */
export function bearerToken(req: { readonly rawHeaders: readonly string[] }): string | undefined {
  const auth = firstHeader(req, "authorization");
  return auth?.toLowerCase().startsWith("bearer ") ? auth.slice(7) : undefined;
}

/** The caller a main-port request's bearer token names; null when auth is off. */
export function authenticate(
  auth: AuthTokens | null,
  req: { readonly rawHeaders: readonly string[] },
): Caller | null {
  return auth === null ? null : auth.authenticate(bearerToken(req));
}

/**
 * The token a request presents: the first X-Runner-Metrics-Token header
 * (Starlette, hence FermiLink, reads the first of repeated headers), or with
 * `bearer`, when that is missing or blank, the first `Authorization: Bearer`.
 */
export function presentedToken(
  req: { readonly rawHeaders: readonly string[] },
  opts: { bearer: boolean } = { bearer: false },
): string | undefined {
  const header = firstHeader(req, METRICS_TOKEN_HEADER);
  // A blank header says nothing: a bearer token beside it still counts.
  if (!opts.bearer || (header !== undefined && !isPyBlank(header))) return header;
  return bearerToken(req);
}

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
  // Stripped as Python strips (FermiLink's guard): node hands over the bytes as latin-1, so a
  // trailing U+0085 (NEL, byte 0x85) is whitespace there and must be here.
  const given = pyStrip(presented ?? "");
  if (given === "") throw new RunnerError("UNAUTHENTICATED", "Missing X-Runner-Metrics-Token.");
  if (!timingSafeEqual(digest(given), digest(expected))) {
    throw new RunnerError("PERMISSION_DENIED", "Invalid X-Runner-Metrics-Token.");
  }
}
