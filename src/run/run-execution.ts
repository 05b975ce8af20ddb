import { constants as osConstants } from "node:os";
import path from "node:path";
import type { Lease } from "../admission/lease.js";
import { RunnerError, toRunnerError } from "../errors/runner-error.js";
import type { AgentPolicy, EarlierLines, ExitReason, RunEventBody } from "../events/run-event.js";
import type { Logger } from "../log/logger.js";
import { StartAbandoned } from "../process/launch.js";
import { RUN_ID_ENV } from "../process/reap-orphans.js";
import {
  callersArrivingSince,
  nextSpawnTurn,
  notePreparing,
  runsPreparingBefore,
} from "../process/spawn-turns.js";
import {
  launchError,
  type ProcessExit,
  type ProcessLine,
  type SupervisedProcess,
} from "../process/supervised-process.js";
import { agentLineBody, resultOf } from "../providers/agent-line.js";
import type { ProviderAdapter } from "../providers/provider-adapter.js";
import {
  bwrapForRun,
  bwrapStartError,
  maybeSandboxExecFailure,
  sandboxExecFailure,
} from "../providers/read-only-sandbox.js";
import {
  resolveSessionDir,
  SESSION_TMP_DIRNAME,
  sessionRepoDir,
} from "../workspace/session-path.js";
import { RunAborted, retriesExhausted, runAborted } from "./run-abort.js";
import type { RunPipelineDeps } from "./run-deps.js";
import type { RunState } from "./run-state.js";

/** Everything a run needs once the cheap checks passed. */
export interface RunPlan {
  userKey: string;
  sessionId: string;
  prompt: string;
  /** The requested package (normalised), or null. */
  packageId: string | null;
  policy: AgentPolicy;
  adapter: ProviderAdapter;
  bin: string;
  startedAtMs: number;
  /** The caller's number (`noteCallerArrival`): its spawn gives way to callers after it. */
  arrival: number;
}

function throwIfAborted(state: RunState): void {
  const reason = state.abortReason;
  if (reason) throw reason;
}

/**
 * What a caller whose run ended before its first event is told: a shutdown
 * is the runner's 503 / `unavailable`, as for a run refused while closing
 * (the other aborts cannot come before a first event, or nobody hears them).
 */
function beforeFirstEvent(err: unknown): unknown {
  if (err instanceof RunAborted && err.reason === "shutdown") {
    return new RunnerError(
      "SHUTTING_DOWN",
      "The runner shut down before the run started; retry on another instance.",
      { cause: err },
    );
  }
  return err;
}

/** FermiLink's return_code: the exit code, or minus the signal number (spec §2.2). */
function returnCodeOf(exit: ProcessExit): number | null {
  if (exit.code !== null) return exit.code;
  if (exit.signal) return -(osConstants.signals[exit.signal] ?? 0);
  return null;
}

/**
 * Waits for an admission slot, reporting `queued` events while it waits: the
 * first at once (it answers the caller), then each new position in the turn
 * it changed. The controller calls back from inside its own state change, once
 * per change: the report waits for the end of the turn (setImmediate), so the
 * moves of one turn (many callers leaving at once, a shutdown) are one event
 * per waiter, and none goes out for a waiter granted in the same turn.
 */
async function admit(deps: RunPipelineDeps, state: RunState, plan: RunPlan): Promise<Lease> {
  let latest: { position: number; size: number } | null = null;
  let reported: { position: number; size: number } | null = null;
  /** Set once the first position was reported: later ones wait for the end of their turn. */
  let watching = false;
  let scheduled: NodeJS.Immediate | undefined;
  const report = () => {
    scheduled = undefined;
    const current = latest;
    if (!current) return;
    if (reported && reported.position === current.position && reported.size === current.size)
      return;
    reported = current;
    state.emit({ type: "queued", position: current.position, queueSize: current.size });
  };
  const leasePromise = deps.admission.acquire(plan.userKey, {
    signal: state.signal,
    onQueueUpdate: (position, size) => {
      latest = { position, size };
      if (watching) scheduled ??= setImmediate(report);
    },
  });
  report();
  watching = true;
  try {
    return await leasePromise;
  } finally {
    // Granted or withdrawn: a report still due for this turn would come after it.
    watching = false;
    clearImmediate(scheduled);
  }
}

/**
 * The producer of one run, in the order the design states (design §6):
 * admission -> session lock -> workspace -> spawn -> meta -> lines -> exit.
 * It owns cleanup: whatever happens, the process group is gone, the session
 * lock and the admission slot are released exactly once, and the journal ends.
 * A failure before the first event rejects `state.firstEvent`; after it, the
 * failure becomes an `exit` event of reason `error`.
 */
export async function executeRun(
  deps: RunPipelineDeps,
  state: RunState,
  plan: RunPlan,
): Promise<void> {
  const { config } = deps;
  // Made on first use: a run refused at admission logs nothing, and a child logger is not free.
  let runLogger: Logger | undefined;
  const log = () =>
    (runLogger ??= deps.logger.child({
      runId: state.runId,
      sessionId: plan.sessionId,
      provider: plan.policy.provider,
    }));
  /** An observer call (metrics) that throws is logged: it must not change how the run goes. */
  const observe = (when: string, call: () => void): void => {
    try {
      call();
    } catch (err) {
      log().error({ err }, `run observer failed at ${when}`);
    }
  };
  let lease: Lease | undefined;
  let unlock: (() => void) | undefined;
  let proc: SupervisedProcess | undefined;
  const timers: NodeJS.Timeout[] = [];
  /** Set while the run prepares (session held, workspace being written): spawns give way to it. */
  let donePreparing: (() => void) | undefined;
  /** The provider's last final-result reading: null until it reports one. */
  let lastResult: boolean | null = null;
  // Slot, lock and process group are released before the final exit event is
  // written: a caller that stops reading must not hold a slot (or the session).
  const releaseAll = async () => {
    for (const t of timers) clearTimeout(t);
    if (proc) await proc.terminate();
    unlock?.();
    lease?.release();
  };
  /** Counts the run's end in runs_ended; `exited` makes it once. */
  const countEnded = (reason: ExitReason, durationMs: number): void =>
    observe("the run's end", () =>
      deps.observer.runEnded(plan.policy.provider, reason, durationMs),
    );
  /** Set once the run's exit event was produced: a run ends (and is counted) once. */
  let exited = false;
  const emitExit = (
    body: Omit<
      Extract<RunEventBody, { type: "exit" }>,
      "type" | "durationMs" | "killedByRunner" | "succeeded"
    > &
      Partial<Pick<Extract<RunEventBody, { type: "exit" }>, "killedByRunner" | "succeeded">>,
  ): void => {
    // A failure after the exit (its log line, when the log's reader is gone) reaches the catch
    // below: a second exit would tell the journal, the run's row and runs_ended another outcome.
    if (exited) return;
    exited = true;
    const durationMs = deps.now() - plan.startedAtMs;
    // The exit first: `exited` now stops any later one, so an observer that throws must not
    // come between (the run would end with no exit in its journal, its row left running).
    state.emit({ type: "exit", durationMs, killedByRunner: false, succeeded: false, ...body });
    countEnded(body.reason, durationMs);
  };
  /** Set once runs_started counted the run: once, and only when its provider really started. */
  let startCounted = false;
  const countStarted = (): void => {
    if (startCounted) return;
    startCounted = true;
    observe("the provider's start", () => deps.observer.runStarted(plan.policy.provider));
  };
  try {
    lease = await admit(deps, state, plan);
    throwIfAborted(state);
    state.phase = "preparing";
    // Waiting for an earlier run on the session (it may take minutes) is reported like waiting
    // for a slot: the caller gets its answer at once, and the stream keeps its keepalives.
    unlock = await deps.sessionLocks.acquire(plan.sessionId, state.signal, (position, waiting) =>
      state.emit({ type: "queued", position, queueSize: waiting }),
    );
    // Counted from here: a run waiting for its session (behind a run that may last minutes)
    // prepares nothing, and must not hold other runs' provider starts back.
    donePreparing = notePreparing();
    // The command first (it only needs the paths): its home and settings files are then written
    // with the workspace, for a new session in the same file-system batch.
    const sessionDir = resolveSessionDir(config.workspacesRoot, plan.sessionId);
    const bwrap = await bwrapForRun(plan.adapter, plan.policy, config.hostEnv.PATH ?? "", log());
    const spec = plan.adapter.buildCommand({
      bin: plan.bin,
      repoDir: sessionRepoDir(sessionDir),
      prompt: plan.prompt,
      policy: plan.policy,
      hostEnv: config.hostEnv,
      endpoint: config.providerEndpoints[plan.adapter.id],
      envPassthrough: config.envPassthrough,
      runDir: sessionDir,
      bwrap,
    });
    // bwrap is exec'd, and it execs the CLI: failures of either are told apart below.
    const sandboxed = bwrap !== null && spec.bin === bwrap;
    // Each run's temp files stay in its session (CLIs leave error reports and caches there),
    // and codex refuses helper binaries when its home is under the temp dir (real-clis.md §7).
    const dirs = [...(spec.dirs ?? [])];
    if (spec.env.TMPDIR === undefined) {
      const tmp = path.join(sessionDir, SESSION_TMP_DIRNAME);
      spec.env.TMPDIR = tmp;
      dirs.push(tmp);
    }
    const ws = await deps.prepareWorkspace({
      workspacesRoot: config.workspacesRoot,
      sessionId: plan.sessionId,
      softwareRoot: config.softwareRoot,
      providerAlias: plan.adapter.workspaceAlias,
      prompt: plan.prompt,
      packageId: plan.packageId,
      providerFiles: { dirs, files: spec.files ?? [] },
    });
    throwIfAborted(state);
    // meta goes out before the spawn: it depends on nothing the spawn decides, and a caller in a
    // burst of new runs then gets its first byte without waiting for process creation.
    state.emit({
      type: "meta",
      sessionId: plan.sessionId,
      agent: plan.policy,
      workspacePath: ws.repoDir,
      package: ws.package,
    });
    // Spawns give way to runs still preparing and to callers still arriving (spawn-turns.ts): a
    // starting CLI takes CPU from them (in the runner when it forks, in its start-up either way).
    donePreparing();
    donePreparing = undefined;
    const preparingBefore = runsPreparingBefore();
    await nextSpawnTurn(
      () => preparingBefore() || callersArrivingSince(plan.arrival),
      undefined,
      state.signal,
    );
    throwIfAborted(state);
    proc = await deps
      .startProcess({
        bin: spec.bin,
        args: spec.args,
        env: { ...spec.env, [RUN_ID_ENV]: state.runId },
        cwd: ws.repoDir,
        maxLineBytes: config.run.maxLineBytes,
        killGraceMs: config.run.killGraceMs,
        niceness: config.run.providerNice,
        // A start the spawn helper has not answered yet ends with the run's abort, not after it.
        signal: state.signal,
      })
      .catch((err: unknown) => {
        throw sandboxed ? bwrapStartError(spec.bin, err) : err;
      });
    const running = proc;
    state.phase = "running";
    log().info({ pid: running.pid }, "provider started");
    // A sandboxed start is bwrap's: the CLI it execs is counted once its lines or exit show it ran.
    if (!sandboxed) countStarted();
    const onAbort = () => void running.terminate();
    state.signal.addEventListener("abort", onAbort, { once: true });
    if (state.signal.aborted) onAbort();
    // The outcome is the provider's once its leader has exited: a cancel, timeout or departed
    // caller while its group is still being cleaned up (an orphan holding the pipes) changes
    // nothing (RunState.abort), and the limits stop counting.
    void running.leaderExited.then(() => {
      state.processExited = true;
      for (const t of timers) clearTimeout(t);
    });
    // FermiLink counts the limit from the stream start (§10 item 11); we count from spawn.
    timers.push(
      setTimeout(() => state.abort(runAborted("timeout", config.run)), config.run.maxRuntimeMs),
    );
    // One idle timer, pushed back (refresh) on every read from the pipes, not per line: a `\r`
    // progress bar, or the rest of a line cut at maxLineBytes, completes none for as long as it runs.
    const idle =
      config.run.idleTimeoutMs > 0
        ? setTimeout(() => state.abort(runAborted("idle", config.run)), config.run.idleTimeoutMs)
        : undefined;
    if (idle) timers.push(idle);
    const guard = plan.adapter.retryGuard;
    let failedCalls = 0;
    /** The run's first line and how many it printed: a sandboxed CLI that never ran prints one. */
    let firstLine: ProcessLine | undefined;
    let lineCount = 0;
    const onlyLine = () =>
      lineCount === 1 && firstLine?.stream === "stderr" ? firstLine.text : null;
    // The run's lines before the one being read now (the journal's next event).
    const { journal } = state;
    const earlierLines: EarlierLines = (needle, pick) =>
      journal.history(journal.lastSeq + 1, needle, pick);
    // Lines keep flowing after an abort: what the provider printed before it died is never dropped.
    for await (const batch of running.lineBatches(idle ? () => idle.refresh() : undefined)) {
      firstLine ??= batch[0];
      lineCount += batch.length;
      if (sandboxed && !maybeSandboxExecFailure(plan.bin, onlyLine())) countStarted();
      for (const line of batch) {
        if (line.stream === "stdout") {
          const body = agentLineBody(plan.adapter, line.text, line.truncated, earlierLines);
          lastResult = resultOf(body) ?? lastResult;
          state.emit(body);
        } else {
          state.emit({ type: "log", text: line.text, truncated: line.truncated });
          const failure = guard?.failedCall(line.text) ?? null;
          if (failure !== null && guard && ++failedCalls > guard.maxRetries) {
            state.abort(retriesExhausted(failedCalls, failure));
          }
        }
      }
    }
    const exit = await running.exited;
    state.signal.removeEventListener("abort", onAbort);
    const aborted = state.abortReason;
    if (sandboxed) {
      const failure = sandboxExecFailure(plan.bin, exit.code, onlyLine());
      if (failure === null) countStarted();
      // Ends the run as a direct start of a missing CLI does, not as the CLI's exit code 1.
      else if (!aborted) throw launchError(plan.bin, ws.repoDir, failure);
    }
    await releaseAll();
    const returnCode = returnCodeOf(exit);
    // A CLI can exit 0 without finishing its work (gemini does on SIGTERM): success also needs
    // the provider's own successful final result (real-clis.md §5).
    const noResult = !aborted && returnCode === 0 && lastResult === null;
    // An exit the runner lost (its spawn helper died, or a leader it gave up on) is its own
    // failure, not the provider's outcome: an error saying so, unless the run was already ending.
    const lost = exit.lost ?? null;
    const reason = aborted ? aborted.reason : lost !== null ? "error" : "completed";
    const noResultMessage = noResult
      ? "The provider exited without a final result event; the run is reported as failed."
      : null;
    emitExit({
      reason,
      returnCode,
      signal: exit.signal,
      message: [aborted?.message, lost, noResultMessage].filter((m) => m).join(" "),
      killedByRunner: exit.killedByRunner || aborted !== null || lost !== null,
      succeeded: !aborted && returnCode === 0 && lastResult === true,
    });
    log().info({ returnCode, reason }, "run ended");
  } catch (caught) {
    // A start the abort ended midway says how far it got; what ended the run is the abort.
    const startOutcome = caught instanceof StartAbandoned ? caught.outcome : null;
    const err = caught instanceof StartAbandoned ? caught.reason : caught;
    if (!state.emittedAny) {
      // An admitted run that ends before its first event (its workspace failed, its caller left
      // while it prepared) has no exit event and no row, but it ended: runs_ended counts it as
      // it counts a queued run that fails the same way after its `queued` event. One refused
      // by admission never ran, and is a rejection instead.
      if (lease !== undefined && !exited) {
        exited = true;
        countEnded(err instanceof RunAborted ? err.reason : "error", deps.now() - plan.startedAtMs);
      }
      state.failBeforeFirstEvent(beforeFirstEvent(err));
      return;
    }
    await releaseAll();
    if (err instanceof RunAborted) {
      const killed = proc !== undefined || startOutcome === "killed";
      emitExit({
        reason: err.reason,
        returnCode: null,
        signal: null,
        message: killed
          ? err.message
          : startOutcome === "unknown"
            ? err.messageWhileStarting
            : err.messageBeforeStart,
        killedByRunner: killed,
      });
    } else {
      const re = toRunnerError(err);
      log().error(
        { err, code: re.code },
        exited ? "run failed after its exit event" : "run failed after streaming began",
      );
      emitExit({ reason: "error", returnCode: null, signal: null, message: re.message });
    }
  } finally {
    donePreparing?.();
    await releaseAll();
    state.phase = "finished";
    state.journal.end();
  }
}
