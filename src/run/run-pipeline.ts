import { randomUUID } from "node:crypto";
import { admissionKeyForRun } from "../admission/user-key.js";
import { type Caller, callerUserId } from "../auth/auth-tokens.js";
import { isProviderId } from "../config/providers.js";
import { quotedInput, RunnerError } from "../errors/runner-error.js";
import type { RunEvent } from "../events/run-event.js";
import { followRunBatches, type RunEventSource } from "../fanout/follow-run.js";
import { type LineReader, readBack } from "../journal/rehydrate.js";
import { RunJournal } from "../journal/run-journal.js";
import { normalizeUser, type RunRecord } from "../journal/run-store.js";
import { noteCallerArrival } from "../process/spawn-turns.js";
import { readLine } from "../providers/agent-line.js";
import { getProviderAdapter } from "../providers/registry.js";
import { resolveRunPolicy } from "../providers/runtime-policy.js";
import { generateSessionId, resolveSessionDir } from "../workspace/session-path.js";
import { resolveActiveProvider } from "./active-provider.js";
import { runAborted, storeWriteFailed } from "./run-abort.js";
import type { RunPipelineDeps } from "./run-deps.js";
import { executeRun } from "./run-execution.js";
import { type RunRequestInput, validateRunRequest } from "./run-request.js";
import { RunState } from "./run-state.js";

/** A run that has produced its first event; the transport streams `events`. */
export interface StartedRun {
  runId: string;
  sessionId: string;
  /** The run's events from seq 1 in batches, ending with `exit`. Leaving early ends the run unless it was detached. */
  events: AsyncIterable<readonly RunEvent[]>;
}

/** Who is asking: runs with a user id are visible only to that user. */
export interface Viewer {
  userId: string | null;
}

/** Characters of the prompt kept with the run for listings. */
const PROMPT_PREVIEW_CHARS = 200;

/**
 * The one place that knows the order of a run's stages. Both faces (Connect
 * and SSE) call `start`; it does every cheap check before a slot is taken and
 * resolves once the run produced its first event, so failures before that
 * carry a status code and failures after it are `exit` events. It also finds
 * runs again (`attach`, `cancel`, `getRun`, `listRuns`), live or stored.
 */
export class RunPipeline {
  private readonly runs = new Map<string, { state: RunState; done: Promise<void> }>();
  /**
   * Runs that ended while the store refused their last writes: until it takes
   * them, only their journal has the run's end (the store's events stop short
   * of the exit and its row still says running), so viewers are served from it.
   */
  private readonly unwritten = new Map<string, RunState>();
  private closing = false;

  constructor(private readonly deps: RunPipelineDeps) {}

  /** Live and queued runs (for shutdown and tests). */
  get liveRuns(): number {
    return this.runs.size;
  }

  /**
   * Sessions of the runs held in memory: live and queued ones (from their
   * session's claim on, before the store has their row) and ended ones whose
   * writes are pending. Retention keeps their owner records.
   */
  sessionsInMemory(): Set<string> {
    const sessions = new Set<string>();
    for (const { state } of this.runs.values()) sessions.add(state.sessionId);
    for (const state of this.unwritten.values()) sessions.add(state.sessionId);
    return sessions;
  }

  /** Viewers of a live run waiting for its next event (0 when it is not live); for tests and ops. */
  viewersWaiting(runId: string): number {
    return this.runs.get(runId)?.state.journal.waitingViewers ?? 0;
  }

  /**
   * `opts.typedItems` false: the caller sends raw lines only (the SSE face),
   * so events read back from the store need not have their items re-derived.
   */
  async start(
    input: RunRequestInput,
    /** `caller`: who the token names when auth is on; null or absent = auth off. */
    opts: { callerSignal: AbortSignal; typedItems?: boolean; caller?: Caller | null },
  ): Promise<StartedRun> {
    const { config } = this.deps;
    const startedAtMs = this.deps.now();
    // Every caller counts, refused ones too: provider starts give way to a flood still arriving.
    const arrival = noteCallerArrival();
    this.refuseIfClosing();
    const req = validateRunRequest(input);
    const caller = opts.caller ?? null;
    const userId = callerUserId(caller, req.userId);
    const sessionId = req.sessionId ?? generateSessionId();
    resolveSessionDir(config.workspacesRoot, sessionId);
    const userKey = admissionKeyForRun(userId ?? undefined, sessionId);
    // A full queue answers 429 before any lookup (FermiLink's order: admission, then setup).
    const refused = this.deps.admission.refusal(userKey);
    if (refused) throw refused;
    // An unknown or broken requested package is refused before a slot or a workspace is taken.
    const packageId =
      req.packageId === null ? null : (await this.deps.packages.checkRequested(req.packageId)).id;
    const { runtime, adapter, bin } = await resolveActiveProvider(
      config,
      this.deps.projectBinDir,
      this.deps.logger,
    );
    const policy = resolveRunPolicy(runtime, req.sandbox ?? undefined, req.provider ?? undefined);
    this.refuseIfClosing();
    if (opts.callerSignal.aborted && !req.detach) throw runAborted("client_gone", config.run);
    // Last of the checks, so a refused run claims nothing; still before a slot or the workspace.
    if (caller !== null) this.claimSession(sessionId, userId);

    const record: RunRecord = {
      runId: randomUUID(),
      userId,
      sessionId,
      provider: policy.provider,
      policy,
      packageId,
      detached: req.detach,
      promptPreview: [...req.prompt].slice(0, PROMPT_PREVIEW_CHARS).join(""),
      status: "queued",
      createdAtMs: startedAtMs,
      startedAtMs: null,
      endedAtMs: null,
      exitReason: null,
      returnCode: null,
      exitMessage: "",
      succeeded: null,
      lastSeq: 0,
      eventBytes: 0,
    };
    const journal = new RunJournal(record, this.deps.store, this.deps.now, {
      readLine: (raw, earlier) => readLine(adapter, raw, earlier),
      onReadBack: (events) => this.deps.observer.readBack(events),
      // The journal keeps every event and retries; the run ends as any failure after streaming began.
      onWriteError: (err) => {
        this.deps.logger.error(
          { err, runId: state.runId },
          "run store write failed; ending the run",
        );
        state.abort(storeWriteFailed(err));
      },
    });
    const state = new RunState(journal, sessionId, userId);
    const onCallerGone = () => state.abort(runAborted("client_gone", config.run));
    if (!req.detach) opts.callerSignal.addEventListener("abort", onCallerGone, { once: true });
    const done = executeRun(this.deps, state, {
      userKey,
      sessionId,
      prompt: req.prompt,
      packageId,
      policy,
      adapter,
      bin,
      startedAtMs,
      arrival,
    })
      .catch((err: unknown) =>
        this.deps.logger.error({ err, runId: state.runId }, "run producer crashed"),
      )
      .finally(() => {
        opts.callerSignal.removeEventListener("abort", onCallerGone);
        this.runs.delete(state.runId);
        const { journal } = state;
        if (journal.isEnded && !journal.isWritten) {
          this.unwritten.set(state.runId, state);
          void journal.whenWritten().then(() => this.unwritten.delete(state.runId));
        }
      });
    this.runs.set(state.runId, { state, done });
    await state.firstEvent;
    return {
      runId: state.runId,
      sessionId,
      events: this.callerStream(
        state,
        req.detach ? null : onCallerGone,
        opts.typedItems ?? true,
        opts.callerSignal,
      ),
    };
  }

  /** The caller's own view: leaving before the exit event ends a run that was not detached. */
  private async *callerStream(
    state: RunState,
    onLeave: (() => void) | null,
    typedItems: boolean,
    callerSignal: AbortSignal,
  ): AsyncGenerator<readonly RunEvent[]> {
    let sawExit = false;
    try {
      for await (const batch of followRunBatches(state.journal, 0, typedItems, callerSignal)) {
        if (batch[batch.length - 1]?.body.type === "exit") sawExit = true;
        yield batch;
      }
    } finally {
      if (!sawExit) onLeave?.();
    }
  }

  /**
   * Watch a run from after `afterSeq`: replay, then follow live events until
   * the exit event. Works for live and finished runs; a viewer leaving never
   * ends the run (`viewerGone` ends its follow at once). `typedItems` as in `start`.
   */
  attach(
    runId: string,
    /** A bigint as Connect's uint64 carries it: one past 2^53 is quoted exactly when refused. */
    afterSeq: number | bigint,
    viewer: Viewer,
    typedItems = true,
    viewerGone?: AbortSignal,
    /** How the caller named its cursor, for the error of one past the run's end. */
    cursorName = "after_seq",
  ): AsyncIterable<readonly RunEvent[]> {
    requireRunId(runId);
    const inMemory = this.runs.get(runId)?.state ?? this.unwritten.get(runId);
    if (inMemory) {
      this.checkVisible(inMemory.userId, runId, viewer);
      checkCursor(runId, afterSeq, inMemory.journal.lastSeq, cursorName);
      return followRunBatches(inMemory.journal, Number(afterSeq), typedItems, viewerGone);
    }
    const record = this.findStored(runId, viewer);
    checkCursor(runId, afterSeq, record.lastSeq, cursorName);
    const { store } = this.deps;
    const adapter = isProviderId(record.provider) ? getProviderAdapter(record.provider) : null;
    const read: LineReader = (raw, earlier) => (adapter ? readLine(adapter, raw, earlier) : []);
    const stored: RunEventSource = {
      read: (after, max, typed) => readBack(store, record.runId, after, max, typed ? read : null),
      waitForMore: () => Promise.resolve(),
      isEnded: true,
    };
    return followRunBatches(stored, Number(afterSeq), typedItems);
  }

  /** True while the run is queued or running in this process. */
  isLive(runId: string): boolean {
    return this.runs.has(runId);
  }

  /** A run's record, as stored (live runs are written through as they go). */
  getRun(runId: string, viewer: Viewer): RunRecord {
    requireRunId(runId);
    return this.findStored(runId, viewer);
  }

  /** The key page tokens are signed with (the store's: `RunStore.pageTokenKey`). */
  get pageTokenKey(): Uint8Array {
    return this.deps.store.pageTokenKey;
  }

  /** The caller's runs, newest first, optionally for one session. */
  listRuns(opts: {
    viewer: Viewer;
    sessionId: string | null;
    limit: number;
    after: { createdAtMs: number; runId: string } | null;
  }): RunRecord[] {
    const userNorm = normalizeUser(opts.viewer.userId);
    const rows = this.deps.store.listRuns({
      userNorm,
      sessionId: opts.sessionId,
      limit: opts.limit,
      after: opts.after,
    });
    const rowless = this.rowlessRuns(userNorm, opts.sessionId, opts.after);
    if (this.unwritten.size === 0 && rowless.length === 0) return rows;
    const page = rows.map((r) => this.unwritten.get(r.runId)?.journal.recordWithPending(r) ?? r);
    if (rowless.length === 0) return page;
    return [...page, ...rowless].sort(newestFirst).slice(0, opts.limit);
  }

  /**
   * Runs with events but no row in the store (it refused their first write),
   * served from memory as GetRun serves them: the listing's filter and cursor
   * applied. Only while the store refuses writes is there any.
   */
  private rowlessRuns(
    userNorm: string,
    sessionId: string | null,
    after: { createdAtMs: number; runId: string } | null,
  ): RunRecord[] {
    const out: RunRecord[] = [];
    for (const state of [
      ...[...this.runs.values()].map((r) => r.state),
      ...this.unwritten.values(),
    ]) {
      const { journal } = state;
      if (journal.hasRow || journal.lastSeq === 0) continue;
      const r = journal.recordWithPending(null);
      if (normalizeUser(r.userId) !== userNorm) continue;
      if (sessionId !== null && r.sessionId !== sessionId) continue;
      if (after && newestFirst(r, after) <= 0) continue;
      out.push(r);
    }
    return out;
  }

  /**
   * End a live or queued run with reason `cancelled` (process group killed,
   * slot released) and return its final record. Cancelling a finished run
   * changes nothing and returns it as it is.
   */
  async cancel(runId: string, viewer: Viewer): Promise<RunRecord> {
    requireRunId(runId);
    const live = this.runs.get(runId);
    if (live) {
      this.checkVisible(live.state.userId, runId, viewer);
      live.state.abort(runAborted("cancelled", this.deps.config.run));
      await live.done;
    }
    return this.findStored(runId, viewer);
  }

  private findStored(runId: string, viewer: Viewer): RunRecord {
    const unwritten = this.unwritten.get(runId);
    if (unwritten) {
      this.checkVisible(unwritten.userId, runId, viewer);
      return unwritten.journal.recordWithPending(this.deps.store.getRun(runId));
    }
    const record = this.deps.store.getRun(runId);
    if (!record) throw notFound(runId);
    this.checkVisible(record.userId, runId, viewer);
    return record;
  }

  /**
   * With auth on, a session belongs to the user of its first run (no user is
   * an owner too): a run by anyone else is refused, whatever token it has.
   */
  private claimSession(sessionId: string, userId: string | null): void {
    const mine = normalizeUser(userId);
    const owner = this.deps.store.claimSession(sessionId, mine, this.deps.now());
    if (owner !== mine) {
      throw new RunnerError(
        "PERMISSION_DENIED",
        `Session ${sessionId} belongs to another user: continue one of your own sessions, or omit session_id to start a new one.`,
      );
    }
  }

  /** Runs with a user id are visible only to that user; to anyone else they do not exist. */
  private checkVisible(owner: string | null, runId: string, viewer: Viewer): void {
    if (owner !== null && normalizeUser(owner) !== normalizeUser(viewer.userId)) {
      throw notFound(runId);
    }
  }

  private refuseIfClosing(): void {
    if (this.closing) {
      throw new RunnerError(
        "SHUTTING_DOWN",
        "The runner is shutting down and takes no new runs; retry on another instance.",
      );
    }
  }

  /**
   * Ordered shutdown (design §7): refuse new runs, end at once every run
   * whose provider has not started (waiting for a slot or its session, or
   * preparing: no new CLI starts once shutdown began), let live ones run for
   * `graceMs`, then end them with reason `shutdown`, and wait until every
   * process group is gone.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.closing = true;
    this.deps.admission.markDraining();
    const abortAll = (onlyNotStarted: boolean) => {
      for (const { state } of this.runs.values()) {
        if (!onlyNotStarted || state.phase !== "running")
          state.abort(runAborted("shutdown", this.deps.config.run));
      }
    };
    abortAll(true);
    const allDone = () => Promise.all([...this.runs.values()].map((r) => r.done));
    let graceTimer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      graceTimer = setTimeout(resolve, graceMs);
    });
    await Promise.race([allDone(), grace]);
    clearTimeout(graceTimer);
    abortAll(false);
    await allDone();
  }
}

/** A call that names no run is a request to fix, not a run that does not exist. */
function requireRunId(runId: string): void {
  if (runId.trim() === "") {
    throw new RunnerError(
      "REQUEST_INVALID",
      "run_id is required: pass the run_id of the run's events (RunEvent.run_id) or from ListRuns.",
    );
  }
}

function notFound(runId: string): RunnerError {
  return new RunnerError(
    "RUN_NOT_FOUND",
    `No run ${quotedInput(runId)} is visible to this caller (check the run id and user_id).`,
  );
}

/**
 * A resume point past the run's last event names nothing it sent, live or not: a client bug (a
 * cursor of another run, or made up). Refused rather than followed: a live run would hold the
 * stream silent, then skip the events up to the cursor, which the viewer never had. (A run closed
 * after a crash numbers its exit past anything a viewer was shown: recover-interrupted.ts.)
 */
/** The store's listing order: newest first, then by run id, descending. */
function newestFirst(
  a: Pick<RunRecord, "createdAtMs" | "runId">,
  b: Pick<RunRecord, "createdAtMs" | "runId">,
): number {
  if (a.createdAtMs !== b.createdAtMs) return b.createdAtMs - a.createdAtMs;
  return a.runId < b.runId ? 1 : a.runId > b.runId ? -1 : 0;
}

/** Past this check `afterSeq` is at most a seq, so a safe integer. */
function checkCursor(
  runId: string,
  afterSeq: number | bigint,
  lastSeq: number,
  cursorName: string,
): void {
  if (afterSeq <= lastSeq) return;
  throw new RunnerError(
    "REQUEST_INVALID",
    `${cursorName} ${afterSeq} is past the last event of run ${runId} (seq ${lastSeq}): ` +
      "resume after the seq of an event this run sent, or 0 for all of them.",
  );
}
