import type { RunnerErrorCode } from "./codes.js";

/** One entry of a FastAPI-style 422 `detail` list, kept for FermiLink's clients. */
export interface ValidationDetail {
  type: string;
  loc: (string | number)[];
  msg: string;
}

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
    super(message, { cause: options.cause });
    this.code = code;
    this.details = options.details;
  }
}

/** Narrow an unknown thrown value, wrapping anything foreign as INTERNAL. */
export function toRunnerError(err: unknown): RunnerError {
  if (err instanceof RunnerError) return err;
  return new RunnerError("INTERNAL", "Internal runner error.", { cause: err });
}
