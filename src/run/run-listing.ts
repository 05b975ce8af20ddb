import { createHash, createHmac } from "node:crypto";
import { RunnerError } from "../errors/runner-error.js";
import { normalizeUser, type RunRecord } from "../journal/run-store.js";
import type { RunPipeline, Viewer } from "./run-pipeline.js";

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;

/** A ListRuns request as both faces receive it. */
export interface ListRunsInput {
  userId: string | null;
  sessionId: string | null;
  pageSize: number;
  pageToken: string;
}

function invalid(message: string): RunnerError {
  return new RunnerError("REQUEST_INVALID", message);
}

/** 132 bits; a legacy token's listing had 16 characters, so the two never meet. */
const LISTING_CHARS = 22;

/**
 * The listing a page token belongs to (user and session filter): a position in
 * another user's or session's listing would page this one silently wrong, skipping
 * runs. Keyed by the store's secret: a plain digest let whoever saw a token
 * test guesses of the user id against it.
 */
function listingOf(key: Uint8Array, userId: string | null, sessionId: string | null): string {
  return createHmac("sha256", key)
    .update(JSON.stringify([normalizeUser(userId), sessionId]))
    .digest("base64url")
    .slice(0, LISTING_CHARS);
}

/**
 * The listing as tokens issued before it was keyed named it (an unkeyed
 * SHA-256): a client paging across the upgrade goes on. It reveals nothing
 * those tokens did not already show.
 */
function legacyListingOf(userId: string | null, sessionId: string | null): string {
  return createHash("sha256")
    .update(JSON.stringify([normalizeUser(userId), sessionId]))
    .digest("base64url")
    .slice(0, 16);
}

/** Page tokens are opaque to callers: the position after the last run of the previous page. */
function decodeToken(
  token: string,
  key: Uint8Array,
  input: ListRunsInput,
): { createdAtMs: number; runId: string } | null {
  if (token === "") return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    // Reported below.
  }
  if (
    Array.isArray(parsed) &&
    parsed.length === 3 &&
    Number.isSafeInteger(parsed[0]) &&
    typeof parsed[1] === "string" &&
    typeof parsed[2] === "string"
  ) {
    const listing =
      parsed[2].length === LISTING_CHARS
        ? listingOf(key, input.userId, input.sessionId)
        : legacyListingOf(input.userId, input.sessionId);
    if (parsed[2] !== listing) {
      throw invalid(
        "page_token belongs to another listing (a different user_id or session_id); pass the same ones as for the first page, or omit it.",
      );
    }
    return { createdAtMs: parsed[0] as number, runId: parsed[1] as string };
  }
  throw invalid("page_token is not a token this runner issued; omit it to get the first page.");
}

function encodeToken(r: RunRecord, listing: string): string {
  return Buffer.from(JSON.stringify([r.createdAtMs, r.runId, listing])).toString("base64url");
}

/** One page of the caller's runs, newest first, and the token of the next page ("" at the end). */
export function listRunsPage(
  pipeline: RunPipeline,
  input: ListRunsInput,
): { runs: RunRecord[]; nextPageToken: string } {
  const size = input.pageSize === 0 ? DEFAULT_PAGE_SIZE : input.pageSize;
  if (!Number.isInteger(size) || size < 1 || size > MAX_PAGE_SIZE) {
    throw invalid(
      `page_size must be between 1 and ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE}).`,
    );
  }
  const viewer: Viewer = { userId: input.userId };
  const key = pipeline.pageTokenKey;
  const rows = pipeline.listRuns({
    viewer,
    sessionId: input.sessionId,
    limit: size + 1,
    after: decodeToken(input.pageToken, key, input),
  });
  const runs = rows.slice(0, size);
  const last = runs.at(-1);
  if (rows.length <= size || !last) return { runs, nextPageToken: "" };
  return { runs, nextPageToken: encodeToken(last, listingOf(key, input.userId, input.sessionId)) };
}
