import type { RunnerErrorCode } from "./codes.js";

/** One entry of a FastAPI-style 422 `detail` list, kept for FermiLink's clients. */
export interface ValidationDetail {
  type: string;
  loc: (string | number)[];
  msg: string;
  /** Required: pydantic v2 always says what it refused (the value at `loc`, or its parent object). */
  input: unknown;
  ctx?: Record<string, unknown>;
}

/** Failures whose reason is the request or the load, never the runner's own code. */
const CALLER_CAUSED: ReadonlySet<RunnerErrorCode> = new Set<RunnerErrorCode>([
  "REQUEST_INVALID",
  "BODY_UNREADABLE",
  "BODY_TIMEOUT",
  "PROMPT_EMPTY",
  "PROMPT_TOO_LONG",
  "SESSION_ID_INVALID",
  "SANDBOX_INVALID",
  "PROVIDER_MISMATCH",
  "PROVIDER_UNSUPPORTED",
  "PACKAGE_NOT_FOUND",
  "PACKAGE_ID_INVALID",
  "QUEUE_FULL",
  "UNAUTHENTICATED",
  "PERMISSION_DENIED",
  "RUN_NOT_FOUND",
  "SHUTTING_DOWN",
]);

/**
 * A failure with a stable code and a message that tells the caller what to fix.
 * `cause` is logged but never sent to the caller.
 */
export class RunnerError extends Error {
  override readonly name = "RunnerError";
  readonly code: RunnerErrorCode;
  /** For REQUEST_INVALID-like errors on the SSE face: FastAPI's `detail` list. */
  readonly details: readonly ValidationDetail[] | undefined;

  constructor(
    code: RunnerErrorCode,
    message: string,
    options: { cause?: unknown; details?: readonly ValidationDetail[] } = {},
  ) {
    // A stack trace costs tens of µs to capture, and a refusal under overload is the hot path
    // of a flooded runner; where the caller's input or the load is the reason, it says nothing.
    const stackLimit = Error.stackTraceLimit;
    if (CALLER_CAUSED.has(code)) Error.stackTraceLimit = 0;
    super(message, { cause: options.cause });
    Error.stackTraceLimit = stackLimit;
    this.code = code;
    this.details = options.details;
  }
}

/** The most of a caller's value a message quotes (a refused session id shows as many). */
const QUOTED_MAX_CHARS = 140;

/**
 * A caller's value as an error message quotes it: its first QUOTED_MAX_CHARS
 * characters, then "…". A message that quoted a huge value whole went out as
 * a gRPC status header (`grpc-message`) that HTTP/2 clients refuse: the
 * caller got a broken stream (`internal`) instead of the error.
 */
export function quotedInput(value: string, maxChars = QUOTED_MAX_CHARS): string {
  if (value.length <= maxChars) return value;
  // Never half a surrogate pair: encodeURIComponent (grpc-message) throws on one.
  const last = value.charCodeAt(maxChars - 1);
  const end = last >= 0xd800 && last <= 0xdbff ? maxChars - 1 : maxChars;
  return `${value.slice(0, end)}…`;
}

/** Narrow an unknown thrown value, wrapping anything foreign as INTERNAL. */
export function toRunnerError(err: unknown): RunnerError {
  if (err instanceof RunnerError) return err;
  return new RunnerError("INTERNAL", "Internal runner error.", { cause: err });
}
