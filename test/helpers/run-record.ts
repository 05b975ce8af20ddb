import type { RunRecord } from "../../src/journal/run-store.js";

/** A queued codex run's record for store and journal tests; `over` sets any field. */
export function runRecord(runId: string, over: Partial<RunRecord> = {}): RunRecord {
  return {
    runId,
    userId: "u",
    sessionId: "s",
    provider: "codex",
    policy: {
      provider: "codex",
      sandboxPolicy: "enforce",
      sandboxMode: "workspace-write",
      model: null,
      reasoningEffort: null,
    },
    packageId: null,
    detached: false,
    promptPreview: "p",
    status: "queued",
    createdAtMs: 1000,
    startedAtMs: null,
    endedAtMs: null,
    exitReason: null,
    returnCode: null,
    exitMessage: "",
    succeeded: null,
    lastSeq: 0,
    eventBytes: 0,
    ...over,
  };
}
