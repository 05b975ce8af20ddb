import { RunnerError } from "../errors/runner-error.js";
import type { RunRecord } from "../journal/run-store.js";
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

/** Page tokens are opaque to callers: the position after the last run of the previous page. */
function decodeToken(token: string): { createdAtMs: number; runId: string } | null {
  if (token === "") return null;
  try {
    const parsed: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (
      Array.isArray(parsed) &&
      parsed.length === 2 &&
      Number.isSafeInteger(parsed[0]) &&
      typeof parsed[1] === "string"
    ) {
      return { createdAtMs: parsed[0] as number, runId: parsed[1] as string };
    }
  } catch {
    // Reported below.
  }
  throw invalid("page_token is not a token this runner issued; omit it to get the first page.");
}

function encodeToken(r: RunRecord): string {
  return Buffer.from(JSON.stringify([r.createdAtMs, r.runId])).toString("base64url");
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
  const rows = pipeline.listRuns({
    viewer,
    sessionId: input.sessionId,
    limit: size + 1,
    after: decodeToken(input.pageToken),
  });
  const runs = rows.slice(0, size);
  const last = runs.at(-1);
  return { runs, nextPageToken: rows.length > size && last ? encodeToken(last) : "" };
}
