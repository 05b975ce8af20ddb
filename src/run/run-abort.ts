import type { ExitReason } from "../events/run-event.js";

/** Reasons the runner itself ends a live run (`error`: the run store refused a write). */
export type AbortReason = Exclude<ExitReason, "completed" | "interrupted">;

/**
 * The abort reason carried by a run's AbortSignal. Timeout, idle timeout,
 * cancel, client disconnect and shutdown all abort one controller; the first
 * reason wins and becomes the exit reason and message (style §8).
 */
export class RunAborted extends Error {
  override readonly name = "RunAborted";
  constructor(
    readonly reason: AbortReason,
    message: string,
  ) {
    super(message);
  }
}

const KILLED = "the runner ended the provider's process group";

/** Build the abort for a reason, with a message that says what happened and which knob applies. */
export function runAborted(
  reason: Exclude<AbortReason, "error"> | "idle",
  limits: { maxRuntimeMs: number; idleTimeoutMs: number },
): RunAborted {
  switch (reason) {
    case "timeout":
      return new RunAborted(
        "timeout",
        `The run exceeded FERMILINK_RUNNER_MAX_RUNTIME_SECONDS=${limits.maxRuntimeMs / 1000}; ${KILLED}.`,
      );
    case "idle":
      return new RunAborted(
        "timeout",
        `The provider printed nothing for FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS=${limits.idleTimeoutMs / 1000}; ${KILLED}.`,
      );
    case "cancelled":
      return new RunAborted("cancelled", `The run was cancelled; ${KILLED}.`);
    case "client_gone":
      return new RunAborted("client_gone", `The caller went away; ${KILLED}.`);
    case "shutdown":
      return new RunAborted("shutdown", `The runner is shutting down; ${KILLED}.`);
    case "retries_exhausted":
      return new RunAborted(
        "retries_exhausted",
        `The provider's model calls kept failing; ${KILLED}.`,
      );
  }
}

/**
 * The provider reported one failed model call more than its retry budget
 * allows (a CLI that would otherwise retry for minutes on a dead endpoint).
 */
export function retriesExhausted(failures: number, lastError: string): RunAborted {
  return new RunAborted(
    "retries_exhausted",
    `The provider's model call failed ${failures} times (last error: ${lastError}); ${KILLED} instead of letting it retry on its own. Check the model endpoint and key.`,
  );
}

/**
 * The run store refused a write (disk full, I/O error): the run ends as any
 * failure after streaming began, with reason `error`. The journal keeps its
 * events and retries (journal/run-journal.ts).
 */
export function storeWriteFailed(err: unknown): RunAborted {
  const why = err instanceof Error ? err.message : String(err);
  return new RunAborted(
    "error",
    `The run store could not be written (${why}); the runner ended the run. Its events are kept in memory and written when the store accepts them again, but a restart of the runner before then loses them.`,
  );
}
