/**
 * The closed set of failures the runner reports to callers. Each code maps to
 * exactly one Connect code and one HTTP status in `status-table.ts`; the README
 * documents every code (a test keeps the two in sync).
 */
export const RUNNER_ERROR_CODES = [
  /** The request body is not JSON, or a field has the wrong type (FastAPI's 422). */
  "REQUEST_INVALID",
  /**
   * The body's bytes cannot be decoded, or it nests deeper than Python
   * recurses: FastAPI fails to read it before validating (its 400).
   */
  "BODY_UNREADABLE",
  /**
   * The request's body had not ended 60 s after it arrived (a client that stalls mid-upload):
   * nothing was started. On a reflection stream: no request message for 60 s.
   */
  "BODY_TIMEOUT",
  /** `user_prompt` is empty. */
  "PROMPT_EMPTY",
  /** `user_prompt` has more than 10,000 Unicode code points (FermiLink's 413). */
  "PROMPT_TOO_LONG",
  /** `session_id` has characters outside the safe set, is too long, or escapes the root. */
  "SESSION_ID_INVALID",
  /** `sandbox` is not a known mode, or would widen the admin policy. */
  "SANDBOX_INVALID",
  /** `provider` names a known provider other than the one the admin configured. */
  "PROVIDER_MISMATCH",
  /** `provider` names a provider this runner does not implement (FermiLink's 501). */
  "PROVIDER_UNSUPPORTED",
  /** The provider CLI binary cannot be found or executed (ENOENT, EACCES, bad interpreter, ...). */
  "PROVIDER_BINARY_MISSING",
  /**
   * The runner could not start a process for a binary that is fine: its spawn
   * helper died or missed its deadline, or the system refused a fork (EAGAIN, ENOMEM).
   */
  "PROVIDER_START_FAILED",
  /** The requested scientific package is not registered in registry.json (FermiLink's 400). */
  "PACKAGE_NOT_FOUND",
  /** The requested package id normalises to nothing (FermiLink's 400, spec §5.2): the caller's input. */
  "PACKAGE_ID_INVALID",
  /** An installed package's metadata or install path is invalid: the server's registry is at fault. */
  "PACKAGE_INVALID",
  /** The session's package could not be overlaid into the repo (its metadata or tree is broken). */
  "PACKAGE_OVERLAY_FAILED",
  /** The admission queue (global or the caller's) is full (FermiLink's 429). */
  "QUEUE_FULL",
  /**
   * A guarded endpoint was called without its token; on the main port (auth on), also
   * with a bearer token the runner does not know.
   */
  "UNAUTHENTICATED",
  /**
   * A wrong metrics token; or a user token naming another user, or a run on a session
   * another user owns (auth on).
   */
  "PERMISSION_DENIED",
  /** The named run does not exist (or is not the caller's). */
  "RUN_NOT_FOUND",
  /** The server is shutting down and takes no new runs. */
  "SHUTTING_DOWN",
  /** The session workspace could not be prepared (git, disk, memory file). */
  "WORKSPACE_SETUP_FAILED",
  /** Anything else: a bug or an unexpected system failure. */
  "INTERNAL",
] as const;

/** A stable, documented failure code. */
export type RunnerErrorCode = (typeof RUNNER_ERROR_CODES)[number];
