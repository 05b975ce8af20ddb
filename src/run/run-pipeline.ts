import { randomUUID } from "node:crypto";
import { admissionKeyForRun } from "../admission/user-key.js";
import { RunnerError } from "../errors/runner-error.js";
import type { RunEvent } from "../events/run-event.js";
import { resolveRunPolicy } from "../providers/runtime-policy.js";
import { generateSessionId, resolveSessionDir } from "../workspace/session-path.js";
import { resolveActiveProvider } from "./active-provider.js";
import { runAborted } from "./run-abort.js";
import type { RunPipelineDeps } from "./run-deps.js";
import { executeRun } from "./run-execution.js";
import { type RunRequestInput, validateRunRequest } from "./run-request.js";
import { RunState } from "./run-state.js";

/** A run that has produced its first event; the transport streams `events`. */
export interface StartedRun {
  runId: string;
  sessionId: string;
  /** Journal entries in order, ending with the `exit` entry. Iterate exactly once; breaking out ends the run. */
  events: AsyncIterable<RunEvent>;
}

/**
 * The one place that knows the order of a run's stages. Both faces (Connect
 * and SSE) call `start`; it does every cheap check before a slot is taken and
 * resolves once the run produced its first event, so failures before that
 * carry a status code and failures after it are `exit` events.
 */
export class RunPipeline {
  private readonly runs = new Map<string, { state: RunState; done: Promise<void> }>();
  private closing = false;

  constructor(private readonly deps: RunPipelineDeps) {}

  /** Live and queued runs (for shutdown and tests). */
  get liveRuns(): number {
    return this.runs.size;
  }

  async start(input: RunRequestInput, opts: { callerSignal: AbortSignal }): Promise<StartedRun> {
    const { config } = this.deps;
    const startedAtMs = this.deps.now();
    this.refuseIfClosing();
    const req = validateRunRequest(input);
    const sessionId = req.sessionId ?? generateSessionId();
    resolveSessionDir(config.workspacesRoot, sessionId);
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
    if (opts.callerSignal.aborted) throw runAborted("client_gone", config.run);

    const state = new RunState(randomUUID(), sessionId, this.deps.now);
    const onCallerGone = () => state.abort(runAborted("client_gone", config.run));
    state.onSubscriberGone = onCallerGone;
    opts.callerSignal.addEventListener("abort", onCallerGone, { once: true });
    const done = executeRun(this.deps, state, {
      userKey: admissionKeyForRun(req.userId ?? undefined, sessionId),
      sessionId,
      prompt: req.prompt,
      packageId,
      policy,
      adapter,
      bin,
      startedAtMs,
    })
      .catch((err: unknown) =>
        this.deps.logger.error({ err, runId: state.runId }, "run producer crashed"),
      )
      .finally(() => {
        opts.callerSignal.removeEventListener("abort", onCallerGone);
        this.runs.delete(state.runId);
      });
    this.runs.set(state.runId, { state, done });
    await state.firstEvent;
    return { runId: state.runId, sessionId, events: state.channel };
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
   * Ordered shutdown (design §7): refuse new runs, end queued ones at once,
   * let live ones run for `graceMs`, then end them with reason `shutdown`,
   * and wait until every process group is gone.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.closing = true;
    const abortAll = (onlyWaiting: boolean) => {
      for (const { state } of this.runs.values()) {
        if (!onlyWaiting || state.phase === "admitting")
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
