/**
 * Optional bearer-token auth (design §7): FERMILINK_RUNNER_AUTH_TOKENS lists
 * service tokens (a trusted front end, which may name any user) and user
 * tokens (that user only). Fixes FermiLink's §10 items 1 (no auth on /run)
 * and 3 (a user_id anyone can claim).
 */
import { createHash } from "node:crypto";
import { isPyBlank } from "../admission/py-strip.js";
import { RunnerError } from "../errors/runner-error.js";
import { normalizeUser } from "../journal/run-store.js";

/** One entry of FERMILINK_RUNNER_AUTH_TOKENS. */
export type AuthTokenEntry =
  | { kind: "service"; token: string }
  | { kind: "user"; userId: string; token: string };

/** Who an accepted token says the caller is. */
export type Caller = { kind: "service" } | { kind: "user"; userId: string };

/** Shorter tokens are guessable; the setting refuses them. */
export const MIN_TOKEN_CHARS = 16;

const ENTRY_FORMS = "service:<token> or user:<user_id>:<token>";

/**
 * Parse the setting's value (comma-separated entries). Problems never quote
 * a token: they go to stderr and the service's log.
 */
export function parseAuthTokens(
  name: string,
  raw: string,
): { entries: AuthTokenEntry[]; problems: string[] } {
  const entries: AuthTokenEntry[] = [];
  const problems: string[] = [];
  const seen = new Set<string>();
  const parts = raw.split(",").map((s) => s.trim());
  parts.forEach((part, i) => {
    if (part === "") return;
    const where = `${name} entry ${i + 1}`;
    let entry: AuthTokenEntry | null = null;
    if (part.startsWith("service:")) {
      entry = { kind: "service", token: part.slice("service:".length) };
    } else if (part.startsWith("user:")) {
      const rest = part.slice("user:".length);
      const colon = rest.indexOf(":");
      const userId = colon < 0 ? "" : rest.slice(0, colon);
      if (colon < 0 || isPyBlank(userId)) {
        problems.push(`${where} has no user id: write it as user:<user_id>:<token>.`);
        return;
      }
      entry = { kind: "user", userId, token: rest.slice(colon + 1) };
    } else {
      problems.push(`${where} is neither ${ENTRY_FORMS}.`);
      return;
    }
    const who = entry.kind === "service" ? "(service)" : `(user ${JSON.stringify(entry.userId)})`;
    if (/\s/.test(entry.token)) {
      problems.push(`${where} ${who}: the token has whitespace; tokens are one word.`);
    } else if (!/^[\x21-\x7e]*$/.test(entry.token)) {
      // Clients send header bytes, not characters: beyond ASCII, what arrives depends on the
      // client's encoding (fetch refuses anything past Latin-1), so such a token may never match.
      problems.push(
        `${where} ${who}: the token has characters outside printable ASCII, which an HTTP header does not carry reliably; use letters, digits and punctuation (e.g. openssl rand -hex 32).`,
      );
    } else if (entry.token.length < MIN_TOKEN_CHARS) {
      problems.push(
        `${where} ${who}: the token has ${entry.token.length} characters; use at least ${MIN_TOKEN_CHARS} (e.g. openssl rand -hex 32).`,
      );
    } else if (seen.has(entry.token)) {
      problems.push(`${where} ${who}: the token is listed twice; give each entry its own.`);
    } else {
      seen.add(entry.token);
      entries.push(entry);
    }
  });
  return { entries, problems };
}

const digest = (token: string) => createHash("sha256").update(token, "utf8").digest("hex");

/**
 * The accepted tokens, held by their SHA-256: a lookup compares digests, so
 * how long it takes says nothing about how much of a token was right.
 */
export class AuthTokens {
  private readonly byDigest = new Map<string, Caller>();

  constructor(entries: readonly AuthTokenEntry[]) {
    for (const e of entries) {
      this.byDigest.set(
        digest(e.token),
        e.kind === "service" ? { kind: "service" } : { kind: "user", userId: e.userId },
      );
    }
  }

  /** The caller a presented token names; UNAUTHENTICATED when it is missing or unknown. */
  authenticate(presented: string | undefined): Caller {
    const token = presented?.trim() ?? "";
    // One message for a missing and a wrong token: which part failed is not the caller's to learn.
    const caller = token === "" ? undefined : this.byDigest.get(digest(token));
    if (caller === undefined) {
      throw new RunnerError(
        "UNAUTHENTICATED",
        "This runner requires a valid token: send Authorization: Bearer <token> with a token from FERMILINK_RUNNER_AUTH_TOKENS.",
      );
    }
    return caller;
  }
}

/**
 * The user a call acts for. Without auth (`caller` null) or with a service
 * token: the user id as given. With a user token: that token's user, when the
 * call names none or the same one (compared as admission keys are: stripped,
 * lowercase); naming another is PERMISSION_DENIED.
 */
export function callerUserId(caller: Caller | null, given: string | null): string | null {
  if (caller === null || caller.kind === "service") return given;
  if (given === null || isPyBlank(given)) return caller.userId;
  if (normalizeUser(given) !== normalizeUser(caller.userId)) {
    throw new RunnerError(
      "PERMISSION_DENIED",
      "This token acts for one user only: leave user_id empty or set it to the token's own user.",
    );
  }
  return given;
}
