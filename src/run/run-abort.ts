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
    /** The message for a run aborted while queued or preparing: nothing was killed. */
    readonly messageBeforeStart: string = message,
    /**
     * The message for a run aborted while the spawn helper was starting its
     * provider and did not answer in time: it may start it yet (it is killed then).
     */
    readonly messageWhileStarting: string = messageBeforeStart,
  ) {
    super(message);
  }
}

const KILLED = "the runner ended the provider's process group";

/** An abort that ends the provider's process group, or says none had been started (yet). */
function ending(reason: AbortReason, why: string): RunAborted {
  return new RunAborted(
    reason,
    `${why}; ${KILLED}.`,
    `${why}, before its provider was started.`,
    `${why}, while its provider was being started; the runner kills whatever the spawn helper starts for it.`,
  );
}

/** Build the abort for a reason, with a message that says what happened and which knob applies. */
export function runAborted(
  reason: Exclude<AbortReason, "error"> | "idle",
  limits: { maxRuntimeMs: number; idleTimeoutMs: number },
): RunAborted {
  switch (reason) {
    case "timeout":
      return ending(
        "timeout",
        `The run exceeded FERMILINK_RUNNER_MAX_RUNTIME_SECONDS=${limits.maxRuntimeMs / 1000}`,
      );
    case "idle":
      return ending(
        "timeout",
        `The provider printed nothing for FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS=${limits.idleTimeoutMs / 1000}`,
      );
    case "cancelled":
      return ending("cancelled", "The run was cancelled");
    case "client_gone":
      return ending("client_gone", "The caller went away");
    case "shutdown":
      return ending("shutdown", "The runner is shutting down");
    case "retries_exhausted":
      return ending("retries_exhausted", "The provider's model calls kept failing");
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
