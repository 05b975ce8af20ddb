import type { RunEvent } from "../events/run-event.js";
import { MAX_UNSTORED_SHOWN } from "./run-journal.js";
import type { RunRecord, RunStore } from "./run-store.js";

/** Why the run's provider is known or not known to have run, as the exit message says it. */
const MESSAGES = {
  killed:
    "The runner stopped (crash or kill) while this run was live; its provider's processes were still running and were killed when the runner started again.",
  ended:
    "The runner stopped (crash or kill) while this run's provider was running; the provider had ended when the runner started again (the runner's spawn helper kills its providers when the runner dies), and its exit status was lost.",
  unknown:
    "The runner stopped (crash or kill) after this run's start was recorded; no provider process of it was found when the runner started again: the runner stopped before starting the provider, or the provider ended with it before printing anything.",
  notStarted:
    "The runner stopped (crash or kill) before the store recorded this run's start (it was waiting, or the store refused the record); no provider process was started.",
} as const;

/**
 * The final exit of a run the previous process left live, and the row that
 * goes with it. `reaped`: the restart found (and killed) processes of the run.
 */
function interruptedExit(
  run: RunRecord,
  lastStored: RunEvent | null,
  reaped: boolean,
  nowMs: number,
): RunEvent {
  // A running row's meta is stored before its provider is spawned (run-execution.ts), so it
  // proves no process: only one found now, or a line the provider printed, does. A queued row
  // says the store never took the meta: the run was still waiting, or that write was refused,
  // which ends the run before its spawn (run-execution.ts aborts on it).
  const printed = lastStored?.body.type === "agent" || lastStored?.body.type === "log";
  const said = reaped
    ? "killed"
    : run.status !== "running"
      ? "notStarted"
      : printed
        ? "ended"
        : "unknown";
  return {
    runId: run.runId,
    // Past anything a viewer can have been shown from the dead process's memory (the journal's
    // MAX_UNSTORED_SHOWN invariant): a viewer resuming from any seq it saw still gets this exit,
    // and no seq names two different events. The price is a gap in seq before this event.
    seq: run.lastSeq + MAX_UNSTORED_SHOWN + 1,
    timeMs: nowMs,
    body: {
      type: "exit",
      reason: "interrupted",
      returnCode: null,
      signal: null,
      durationMs: Math.max(0, nowMs - run.createdAtMs),
      message: MESSAGES[said],
      // A provider that printed and is gone was SIGKILLed by the spawn helper when the runner
      // died (or, run without the helper, ended by itself: its exit was lost with the runner).
      killedByRunner: said === "killed" || said === "ended",
      succeeded: false,
    },
  };
}

/**
 * At start-up, close the runs the previous runner process left live (it
 * crashed or was killed): each gets a final `exit` event of reason
 * `interrupted` after the events it already had, so viewers and Attach see a
 * complete journal. Each run is closed in one transaction (event and status
 * together), and a run whose last stored event is already an exit only gets
 * its status set from it, so no run ever ends twice. `reaped` names the runs
 * whose processes the restart found and killed (reap first, see app.ts): only
 * they are said to have had a provider running then. Returns the runs' ids.
 */
export function recoverInterruptedRuns(
  store: RunStore,
  nowMs: number,
  reaped: ReadonlySet<string>,
): Set<string> {
  const ids = new Set<string>();
  for (const run of store.liveRuns()) {
    // Not a viewer's read: it must not keep the run from retention's start-up pass.
    const lastStored =
      run.lastSeq > 0 ? store.readEvents(run.runId, run.lastSeq - 1, 1, false)[0] : null;
    const stored = lastStored?.body.type === "exit" ? lastStored : null;
    const exit = stored ?? interruptedExit(run, lastStored ?? null, reaped.has(run.runId), nowMs);
    const body = exit.body;
    if (body.type !== "exit") continue; // never: both are exits (narrows the type)
    store.atomically(() => {
      if (!stored) store.appendEvents(run.runId, [exit]);
      store.updateRun(run.runId, {
        status: "finished",
        endedAtMs: exit.timeMs,
        exitReason: body.reason,
        returnCode: body.returnCode,
        exitMessage: body.message,
        succeeded: body.succeeded,
      });
    });
    ids.add(run.runId);
  }
  return ids;
}
