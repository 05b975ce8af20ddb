import { Code, ConnectError } from "@connectrpc/connect";
import type { RunnerErrorCode } from "./codes.js";
import type { RunnerError } from "./runner-error.js";

interface Mapping {
  /** Connect / gRPC status. */
  connect: Code;
  /** HTTP status on FermiLink's routes (`POST /run`, `/ops/*`). */
  http: number;
}

/**
 * The single place where a failure becomes a wire status. HTTP statuses follow
 * FermiLink (spec §1.1): 413 prompt, 422 body validation, 400 package, 429
 * queue, 501 provider; the rest are the obvious HTTP equivalents.
 */
export const STATUS_TABLE: Readonly<Record<RunnerErrorCode, Mapping>> = {
  REQUEST_INVALID: { connect: Code.InvalidArgument, http: 422 },
  BODY_UNREADABLE: { connect: Code.InvalidArgument, http: 400 },
  // HTTP's own status for a request not sent in time (RFC 9110 §15.5.9), as node answers headers
  // that take too long.
  BODY_TIMEOUT: { connect: Code.DeadlineExceeded, http: 408 },
  PROMPT_EMPTY: { connect: Code.InvalidArgument, http: 422 },
  PROMPT_TOO_LONG: { connect: Code.InvalidArgument, http: 413 },
  SESSION_ID_INVALID: { connect: Code.InvalidArgument, http: 422 },
  SANDBOX_INVALID: { connect: Code.InvalidArgument, http: 422 },
  PROVIDER_MISMATCH: { connect: Code.InvalidArgument, http: 422 },
  PROVIDER_UNSUPPORTED: { connect: Code.Unimplemented, http: 501 },
  PROVIDER_BINARY_MISSING: { connect: Code.FailedPrecondition, http: 500 },
  // Transient and runner-side (retry): the spawn comes after the first event, so in practice
  // this code only names the `exit` of reason `error` (FermiLink answered any spawn failure 500).
  PROVIDER_START_FAILED: { connect: Code.Unavailable, http: 503 },
  PACKAGE_NOT_FOUND: { connect: Code.NotFound, http: 400 },
  // The caller's id (`invalid_argument`) vs the server's installed package (`failed_precondition`);
  // FermiLink answers both 400 (a PackageValidationError for a requested package).
  PACKAGE_ID_INVALID: { connect: Code.InvalidArgument, http: 400 },
  PACKAGE_INVALID: { connect: Code.FailedPrecondition, http: 400 },
  PACKAGE_OVERLAY_FAILED: { connect: Code.FailedPrecondition, http: 500 },
  QUEUE_FULL: { connect: Code.ResourceExhausted, http: 429 },
  UNAUTHENTICATED: { connect: Code.Unauthenticated, http: 401 },
  PERMISSION_DENIED: { connect: Code.PermissionDenied, http: 403 },
  RUN_NOT_FOUND: { connect: Code.NotFound, http: 404 },
  SHUTTING_DOWN: { connect: Code.Unavailable, http: 503 },
  WORKSPACE_SETUP_FAILED: { connect: Code.Internal, http: 500 },
  INTERNAL: { connect: Code.Internal, http: 500 },
};

/** The Connect error a handler throws for this failure. */
export function toConnectError(err: RunnerError): ConnectError {
  return new ConnectError(err.message, STATUS_TABLE[err.code].connect);
}

/** FermiLink's JSON error body and status for the SSE / ops routes. */
export function toHttpError(err: RunnerError): { status: number; body: unknown } {
  const status = STATUS_TABLE[err.code].http;
  const detail = err.details && err.details.length > 0 ? err.details : err.message;
  return { status, body: { detail, code: err.code } };
}
