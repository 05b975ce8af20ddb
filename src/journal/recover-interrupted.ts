import type { RunEvent } from "../events/run-event.js";
import { MAX_UNSTORED_SHOWN } from "./run-journal.js";
import type { RunRecord, RunStore } from "./run-store.js";

/** The final exit of a run the previous process left live, and the row that goes with it. */
function interruptedExit(run: RunRecord, nowMs: number): RunEvent {
  // A queued row says only that the store never took the run's `meta`: the run was still waiting,
  // or that write was refused, which ends the run before its spawn (run-execution.ts aborts on
  // it). Either way no provider was started, but "waiting" alone would be untrue of the second.
  const couldHaveRun = run.status === "running";
  const message = couldHaveRun
    ? "The runner stopped (crash or kill) while this run was live; any provider process it had left was killed when the runner started again."
    : "The runner stopped (crash or kill) before the store recorded this run's start (it was waiting, or the store refused the record); no provider process was started.";
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
      message,
      killedByRunner: couldHaveRun,
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
 * its status set from it, so no run ever ends twice. Returns their ids, so
 * their processes can be reaped.
 */
export function recoverInterruptedRuns(store: RunStore, nowMs: number): Set<string> {
  const ids = new Set<string>();
  for (const run of store.liveRuns()) {
    // Not a viewer's read: it must not keep the run from retention's start-up pass.
    const lastStored =
      run.lastSeq > 0 ? store.readEvents(run.runId, run.lastSeq - 1, 1, false)[0] : null;
    const stored = lastStored?.body.type === "exit" ? lastStored : null;
    const exit = stored ?? interruptedExit(run, nowMs);
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
