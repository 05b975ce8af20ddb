import { pyStrip } from "../admission/py-strip.js";
import type { AgentPolicy, ExitReason, RunEvent } from "../events/run-event.js";

/** Where a run is in its life, as the store records it. */
export type RunStatus = "queued" | "running" | "finished";

/** One run as the store keeps it (proto `RunInfo`). */
export interface RunRecord {
  runId: string;
  /** The request's user id as given, or null. */
  userId: string | null;
  sessionId: string;
  provider: string;
  policy: AgentPolicy;
  packageId: string | null;
  detached: boolean;
  /** The prompt's first characters, so a list of runs is readable. */
  promptPreview: string;
  status: RunStatus;
  createdAtMs: number;
  startedAtMs: number | null;
  endedAtMs: number | null;
  exitReason: ExitReason | null;
  returnCode: number | null;
  exitMessage: string;
  /** The exit event's verdict (`succeeded`); null while the run is live. */
  succeeded: boolean | null;
  /** Seq of the last event stored. */
  lastSeq: number;
  /** Bytes of stored event payloads, UTF-8 as stored (for retention by size). */
  eventBytes: number;
}

/** Fields that change over a run's life. */
export type RunUpdate = Partial<
  Pick<
    RunRecord,
    | "status"
    | "packageId"
    | "startedAtMs"
    | "endedAtMs"
    | "exitReason"
    | "returnCode"
    | "exitMessage"
    | "succeeded"
  >
>;

/** A page of `listRuns`, newest first. */
export interface RunQuery {
  /** Normalised user key: runs whose user id normalises to it ("" = runs without a user). */
  userNorm: string;
  sessionId: string | null;
  limit: number;
  /** Continue after this run (exclusive), from a previous page. */
  after: { createdAtMs: number; runId: string } | null;
}

/**
 * The durable run journal: runs and their events, in order, by `seq`. One
 * interface so the embedded SQLite store can be replaced by another backend.
 * Calls are synchronous: the embedded store is in-process, and the journal
 * batches writes so a call is one short transaction.
 */
export interface RunStore {
  /**
   * The session's recorded owner (a normalised user id, "" = no user). A
   * session without one is recorded as the user of its earliest stored run
   * that names a user (runs made while auth was off), else as `ownerNorm`.
   */
  claimSession(sessionId: string, ownerNorm: string, nowMs: number): string;
  /**
   * Delete the owner records of sessions with no stored run, except those
   * `keep` names; one transaction. `page`: only the first `limit` records (in
   * session id order) after `after`; `next` is where the next page starts,
   * null after the last. Without it, every record.
   */
  pruneSessions(
    keep: (sessionId: string) => boolean,
    page?: { after: string; limit: number },
  ): { deleted: number; next: string | null };
  createRun(record: RunRecord): void;
  updateRun(runId: string, update: RunUpdate): void;
  /** Append events (ascending seq, continuing the run's journal) in one transaction. */
  appendEvents(runId: string, events: readonly RunEvent[]): void;
  /**
   * Make the store calls `fn` makes one transaction: one commit, and each page
   * they touch written to the log once, where separate calls commit each.
   * All or nothing: when `fn` throws, none of its calls took effect.
   */
  atomically(fn: () => void): void;
  /**
   * Events with seq > afterSeq, ascending, at most `limit`. Notes the run as
   * being read (see `prune`'s `readSinceMs`) unless `viewer` is false: a read
   * of the runner's own (crash recovery) must not hold the run from retention.
   */
  readEvents(runId: string, afterSeq: number, limit: number, viewer?: boolean): RunEvent[];
  /**
   * A viewer is reading the run from memory (a live run's tail), which `readEvents`
   * does not see: `prune` leaves it to a later pass as it does a run read back.
   */
  noteRead(runId: string): void;
  getRun(runId: string): RunRecord | null;
  listRuns(query: RunQuery): RunRecord[];
  /** Runs recorded as queued or running (live when the previous process stopped). */
  liveRuns(): RunRecord[];
  /**
   * Delete finished runs ended before `endedBeforeMs`, then oldest finished
   * ones until the total is under `maxBytes` (bytes of stored event text,
   * UTF-8). Runs whose events were read at or after `readSinceMs` (a viewer is
   * reading them back) are left for a later call. Returns how many were deleted.
   */
  prune(opts: { endedBeforeMs: number; maxBytes: number; readSinceMs?: number }): number;
  /**
   * The key ListRuns' page tokens are signed with: random, made with the store
   * and kept in it, so a token outlives a restart and works on any runner that
   * opens the store, and reveals nothing a caller could check a guess against.
   */
  readonly pageTokenKey: Uint8Array;
  close(): void;
  /** After `close()`: every call fails, and a journal stops retrying its writes. */
  readonly isClosed: boolean;
}

/** How user ids compare (FermiLink's admission key rule: trimmed, lowercase). */
export function normalizeUser(userId: string | null | undefined): string {
  return pyStrip(userId ?? "").toLowerCase();
}
