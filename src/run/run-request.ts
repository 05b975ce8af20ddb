import { isPyBlank } from "../admission/py-strip.js";
import { RunnerError, type ValidationDetail } from "../errors/runner-error.js";

/** FermiLink's hard prompt limit (spec §7.4), counted in Unicode code points. */
export const MAX_PROMPT_CODE_POINTS = 10_000;

/** A run request as both faces receive it (FermiLink's field names, spec §1.1). */
export interface RunRequestInput {
  session_id?: string | null;
  user_id?: string | null;
  user_prompt: string;
  package_id?: string | null;
  sandbox?: string | null;
  provider?: string | null;
  /** Keep the run going when the caller leaves (watch it again with Attach or GET /runs/{id}/events). */
  detach?: boolean | null;
}

/** The request after the cheap checks that need no I/O. */
export interface ValidRunRequest {
  /** Null when the caller gave none (the pipeline generates one). */
  sessionId: string | null;
  userId: string | null;
  prompt: string;
  packageId: string | null;
  sandbox: string | null;
  provider: string | null;
  detach: boolean;
}

function blankToNull(v: string | null | undefined): string | null {
  if (v === null || v === undefined) return null;
  return isPyBlank(v) ? null : v;
}

/** Counts code points, not UTF-16 units: an emoji is one character, as in Python's len(). */
export function countCodePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** pydantic's entry for an empty `user_prompt` (its `min_length=1`), for both 422 paths. */
export function emptyPromptDetail(): ValidationDetail {
  return {
    type: "string_too_short",
    loc: ["body", "user_prompt"],
    msg: "String should have at least 1 character",
    input: "",
    ctx: { min_length: 1 },
  };
}

/**
 * Prompt checks in FermiLink's order (spec §1.1: 413 before anything else),
 * then blank-to-null for the optional fields. Session id, sandbox and
 * provider rules need the workspace root and the policy, so the pipeline
 * checks them next, still before a slot is taken.
 */
export function validateRunRequest(input: RunRequestInput): ValidRunRequest {
  const prompt = input.user_prompt;
  if (countCodePoints(prompt) > MAX_PROMPT_CODE_POINTS) {
    throw new RunnerError("PROMPT_TOO_LONG", "Prompt too long.");
  }
  if (prompt.length === 0) {
    throw new RunnerError(
      "PROMPT_EMPTY",
      "user_prompt must have at least 1 character (and at most 10,000).",
      {
        details: [emptyPromptDetail()],
      },
    );
  }
  return {
    // Only a missing or empty one gets a new session, as in FermiLink; a blank one is refused
    // (resolveSessionDir) rather than silently made a new session on every run.
    sessionId: input.session_id === "" ? null : (input.session_id ?? null),
    userId: blankToNull(input.user_id),
    prompt,
    packageId: blankToNull(input.package_id),
    sandbox: blankToNull(input.sandbox),
    provider: blankToNull(input.provider),
    detach: input.detach === true,
  };
}
