import type { RunStore } from "./run-store.js";

/**
 * At start-up, close the runs the previous runner process left live (it
 * crashed or was killed): each gets a final `exit` event of reason
 * `interrupted` after the events it already had, so viewers and Attach see a
 * complete journal. Returns their ids, so their processes can be reaped.
 */
export function recoverInterruptedRuns(store: RunStore, nowMs: number): Set<string> {
  const ids = new Set<string>();
  for (const run of store.liveRuns()) {
    const message =
      "The runner stopped (crash or kill) while this run was live; its provider processes were killed when the runner started again.";
    store.appendEvents(run.runId, [
      {
        runId: run.runId,
        seq: run.lastSeq + 1,
        timeMs: nowMs,
        body: {
          type: "exit",
          reason: "interrupted",
          returnCode: null,
          signal: null,
          durationMs: Math.max(0, nowMs - run.createdAtMs),
          message,
          killedByRunner: true,
          succeeded: false,
        },
      },
    ]);
    store.updateRun(run.runId, {
      status: "finished",
      endedAtMs: nowMs,
      exitReason: "interrupted",
      exitMessage: message,
      succeeded: false,
    });
    ids.add(run.runId);
  }
  return ids;
}
