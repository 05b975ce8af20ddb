import path from "node:path";
import { AdmissionController } from "./admission/admission-controller.js";
import { AuthTokens } from "./auth/auth-tokens.js";
import type { Config } from "./config/config.js";
import { recoverInterruptedRuns } from "./journal/recover-interrupted.js";
import { startRetention } from "./journal/retention.js";
import { SqliteRunStore } from "./journal/sqlite-run-store.js";
import { createLogger, type Logger } from "./log/logger.js";
import { RunnerMetrics } from "./metrics/metrics.js";
import { PackageCatalog } from "./packages/package-catalog.js";
import { spawnDirect } from "./process/launch.js";
import { OrphanSweeper } from "./process/orphan-sweeper.js";
import { RUN_ID_ENV, reapOrphans } from "./process/reap-orphans.js";
import { SpawnHelper } from "./process/spawner/spawner.js";
import { startSupervisedProcess } from "./process/supervised-process.js";
import { PROJECT_BIN_DIR, PROJECT_ROOT } from "./project-root.js";
import { PROVIDER_ALIASES } from "./providers/registry.js";
import { checkProviderVersion } from "./providers/version-check.js";
import { resolveActiveProvider } from "./run/active-provider.js";
import type { RunPipelineDeps } from "./run/run-deps.js";
import { RunPipeline } from "./run/run-pipeline.js";
import { createDualProtocolServer } from "./transport/http-server.js";
import { createMainHandler } from "./transport/main-handler.js";
import { type MetricsServer, startMetricsServer } from "./transport/metrics-server.js";
import { warmUp } from "./transport/warm-up.js";
import { workspaceFs } from "./workspace/fs-batch/fs-batch.js";
import { builtinSpareContent, prepareWorkspace } from "./workspace/prepare-workspace.js";
import { sweepTakeoverLeftovers } from "./workspace/session-hold.js";
import { SessionLock } from "./workspace/session-lock.js";
import { SpareWorkspaces } from "./workspace/spare-workspaces.js";
import { sweepStaging } from "./workspace/staging.js";

/** A running runner: its bound ports and an ordered shutdown. */
export interface App {
  readonly port: number;
  readonly metricsPort: number;
  readonly metrics: RunnerMetrics;
  readonly pipeline: RunPipeline;
  readonly admission: AdmissionController;
  readonly logger: Logger;
  /** New-session directories kept ready (workspace/spare-workspaces.ts). */
  readonly spares: SpareWorkspaces;
  /** Open TCP connections on the main port. */
  readonly connectionCount: number;
  /** Idempotent ordered shutdown (design §7). */
  close(): Promise<void>;
}

/**
 * A port or address the runner cannot listen on, said for the operator with
 * the variable to change (`serve` prints the message and exits 1, no stack).
 */
export class ListenError extends Error {
  override readonly name = "ListenError";
}

/**
 * Listen with `start`; a failure that is the environment's doing (the port
 * taken or privileged, the address not this machine's or a host name that
 * does not resolve) becomes a ListenError
 * naming the variable to change (`<envPrefix>_PORT` / `_HOST`).
 */
async function explainListen<T>(
  start: () => Promise<T>,
  at: { which: "main" | "metrics"; host: string; port: number },
  envPrefix: "FERMILINK_RUNNER" | "FERMILINK_RUNNER_METRICS",
): Promise<T> {
  try {
    return await start();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException | null)?.code;
    const what = `the ${at.which} port ${at.port} on ${at.host}`;
    const fix: Record<string, string> = {
      EADDRINUSE: `${what} is already in use. Stop the process that holds it, or set ${envPrefix}_PORT to a free port.`,
      EACCES: `${what} needs privileges this process lacks. Set ${envPrefix}_PORT to a port above 1023.`,
      EADDRNOTAVAIL: `${at.host} is not an address of this machine. Set ${envPrefix}_HOST to one of its addresses.`,
      // A host name the resolver does not know (or cannot reach): also the environment's doing.
      ENOTFOUND: `${at.host} does not resolve to an address. Set ${envPrefix}_HOST to one of this machine's addresses.`,
      EAI_AGAIN: `${at.host} could not be resolved (the name server did not answer). Set ${envPrefix}_HOST to one of this machine's addresses.`,
    };
    const message = code === undefined ? undefined : fix[code];
    throw message === undefined
      ? err
      : new ListenError(`cannot listen: ${message}`, { cause: err });
  }
}

/** How long start-up waits for the spare workspaces before it listens anyway. */
const SPARES_AT_START_MS = 5000;

/**
 * The composition root: the only module that knows every stage. It builds
 * them from the frozen config, checks the provider CLI, and starts listening.
 */
export async function startApp(
  config: Config,
  opts: {
    logger?: Logger;
    /**
     * Abandons the start (a stop signal before it listens): rejects with the signal's reason
     * once what was started is undone, without waiting for a slow step to finish first.
     */
    signal?: AbortSignal;
    /** How long a request's body may take to arrive; 60 s unless a test shortens it. */
    bodyTimeoutMs?: number;
  } = {},
): Promise<App> {
  const logger = opts.logger ?? createLogger(config.logLevel);
  const signal = opts.signal ?? new AbortController().signal;
  // Nothing may outlive a start that failed (an unusable store, a port taken): the `--version`
  // child, the store's lock, listeners, timers. Each step that starts something registers here.
  const undo: (() => unknown)[] = [];
  try {
    return await assemble(config, logger, undo, signal, opts.bodyTimeoutMs);
  } catch (err) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch (cleanupErr) {
        // The start's own error is the one to report; this one only goes to the log.
        logger.warn({ err: cleanupErr }, "cleanup after a failed start-up failed");
      }
    }
    throw err;
  }
}

/** `step`, or the abort's reason as soon as `signal` aborts (the step itself goes on unawaited). */
function unlessAborted<T>(step: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([step, aborted]).finally(() => signal.removeEventListener("abort", onAbort));
}

async function assemble(
  config: Config,
  logger: Logger,
  undo: (() => unknown)[],
  signal: AbortSignal,
  bodyTimeoutMs: number | undefined,
): Promise<App> {
  // Start-up check (spec §1.0): the policy's provider CLI must exist, with FermiLink's message.
  const { adapter, bin } = await unlessAborted(
    resolveActiveProvider(config, PROJECT_BIN_DIR, logger),
    signal,
  );
  logger.info({ provider: adapter.id, bin }, "provider CLI found");
  // In the background: a slow `--version` (gemini takes seconds) must not delay start-up.
  const versionCheck = new AbortController();
  undo.push(() => versionCheck.abort());
  void checkProviderVersion(
    adapter.id,
    bin,
    { PATH: config.hostEnv.PATH ?? "" },
    versionCheck.signal,
  ).then((r) => {
    if (versionCheck.signal.aborted) return;
    if (r.ok) logger.info({ provider: r.provider, version: r.version }, "provider CLI version");
    else logger.warn({ provider: r.provider, version: r.version, tested: r.tested }, r.message);
  });

  const metrics = new RunnerMetrics(() => ({
    activeTotal: admission.activeTotal,
    pendingTotal: admission.pendingTotal,
    globalLimit: config.admission.globalLimit,
    perUserLimit: config.admission.perUserLimit,
    maxQueueSize: config.admission.maxQueueSize,
  }));
  const admission = new AdmissionController({
    ...config.admission,
    observer: {
      onAdmitted: (waitedMs) => metrics.queueWait.observe(waitedMs / 1000),
      onRejected: (scope) => metrics.admissionRejections.inc({ scope }),
      onReleased: () => {},
    },
  });
  // The run store first: runs the previous process left live are closed and their processes reaped.
  const store = new SqliteRunStore(config.store.path, {
    onProblem: (message) => logger.error(message),
  });
  undo.push(() => store.close());
  // Reaped before their exits are written: an exit says the runner killed a provider only when
  // one was found (a crash between a run's stored meta and its spawn left none).
  const killed = await unlessAborted(
    reapOrphans(new Set(store.liveRuns().map((r) => r.runId))),
    signal,
  );
  const interrupted = recoverInterruptedRuns(
    store,
    Date.now(),
    new Set(killed.map((p) => p.runId)),
  );
  if (interrupted.size > 0) {
    logger.warn(
      { runs: [...interrupted], killedPids: killed.map((p) => p.pid) },
      "closed runs left live by a previous runner process",
    );
  }
  const packages = new PackageCatalog({
    scipkgRoot: config.scipkgRoot,
    envActive: config.scipkgActive,
    legacy: config.legacyMaxwellLink,
    logger,
  });
  // Only new sessions on the built-in template are made from spares (a custom template is read per run).
  const spares = new SpareWorkspaces({
    workspacesRoot: config.workspacesRoot,
    target: config.softwareRoot === null ? config.spareWorkspaces : 0,
    content: () => builtinSpareContent(config.workspacesRoot),
    fs: workspaceFs,
    logger,
  });
  undo.push(() => spares.stop());
  // Providers are forked by a small helper process, not by the runner (spawner/spawner.ts).
  const spawnHelper = config.run.spawnHelper ? new SpawnHelper() : null;
  undo.push(() => spawnHelper?.close());
  const launch = spawnHelper ? spawnHelper.launch : spawnDirect;
  const sweeper = new OrphanSweeper({
    intervalMs: config.run.orphanSweepMs,
    sweeps: 2,
    graceMs: config.run.killGraceMs,
    logger,
  });
  const startProcess: RunPipelineDeps["startProcess"] = async (opts) => {
    const runId = opts.env[RUN_ID_ENV];
    try {
      const proc = await startSupervisedProcess({ ...opts, logger }, launch);
      if (runId !== undefined) void proc.exited.then(() => sweeper.runEnded(runId));
      return proc;
    } catch (err) {
      // A start that failed after the helper forked (the helper died) may have left a CLI running.
      if (runId !== undefined) sweeper.runEnded(runId, true);
      throw err;
    }
  };
  const pipeline = new RunPipeline({
    config,
    logger,
    admission,
    sessionLocks: new SessionLock({ root: config.workspacesRoot }),
    store,
    packages,
    prepareWorkspace: (input) =>
      prepareWorkspace({ ...input, knownAliases: PROVIDER_ALIASES, packages, spares }),
    startProcess,
    projectBinDir: PROJECT_BIN_DIR,
    now: Date.now,
    observer: metrics,
  });
  // After the pipeline: retention keeps the owners of sessions it holds runs of.
  const retention = startRetention(store, config.store, logger, Date.now, {
    workspacesRoot: config.workspacesRoot,
    sessionsInMemory: () => pipeline.sessionsInMemory(),
  });
  undo.push(() => retention.stop());
  const handler = createMainHandler({
    pipeline,
    logger,
    ops: { admission, metricsToken: config.metricsToken, now: Date.now },
    observer: metrics,
    sseHeartbeatMs: config.run.sseHeartbeatMs,
    packages,
    corsOrigins: config.server.corsOrigins,
    auth: config.authTokens.length > 0 ? new AuthTokens(config.authTokens) : null,
    webDir: path.join(PROJECT_ROOT, "web"),
    bodyTimeoutMs,
  });
  const server = createDualProtocolServer(handler);
  undo.push(() => server.close(0));
  // Beside the spares (the file-system worker's work); before listening, so the first callers
  // meet compiled code.
  const warming =
    config.warmUpRequests > 0
      ? warmUp(handler, {
          requests: config.warmUpRequests,
          token: (config.authTokens.find((t) => t.kind === "service") ?? config.authTokens[0])
            ?.token,
          signal,
        }).catch((err: unknown) => {
          // Only a lost optimisation: the runner serves as well, its first callers a little slower.
          logger.warn({ err }, "warm-up failed; listening without it");
          return null;
        })
      : null;
  // An abandoned start waits for it: no private listener outlives the undo.
  undo.push(() => warming);
  // Before listening: the first run's memory and latency are then those of any later run.
  await unlessAborted(workspaceFs.warm(), signal);
  // The spares too (0.1-1 s for 200 on this machine; reused after a restart): a burst right after
  // start-up finds them, and making them is no part of a run's memory or latency. A slow disk
  // does not hold the start-up past the bound: the rest are made in the background.
  await unlessAborted(spares.start(), signal);
  await unlessAborted(spares.whenFilled(SPARES_AT_START_MS), signal);
  // In the background: a template copy a killed runner left can be large, and nothing waits for it
  // (nor for the lock files its session takeovers left moved aside).
  void Promise.all([
    sweepStaging(config.workspacesRoot),
    sweepTakeoverLeftovers(config.workspacesRoot),
  ]).then(
    ([staged, locks]) => {
      const removed = [...staged, ...locks];
      if (removed.length > 0) logger.info({ removed }, "removed what stopped runners left behind");
    },
    (err: unknown) => logger.warn({ err }, "could not remove what stopped runners left behind"),
  );
  const w = await unlessAborted(warming ?? Promise.resolve(null), signal);
  if (w !== null) {
    if (w.failed > 0) logger.warn(w, "warm-up: some requests were not answered as expected");
    else logger.info(w, "warmed up");
  }
  const port = await explainListen(
    () => server.listen(config.server.host, config.server.port),
    { which: "main", host: config.server.host, port: config.server.port },
    "FERMILINK_RUNNER",
  );
  const metricsServer: MetricsServer = await explainListen(
    () =>
      startMetricsServer(metrics.registry, {
        host: config.server.metricsHost,
        port: config.server.metricsPort,
        token: config.metricsToken,
      }),
    { which: "metrics", host: config.server.metricsHost, port: config.server.metricsPort },
    "FERMILINK_RUNNER_METRICS",
  );
  undo.push(() => metricsServer.close());
  // Listening is quick and not abandoned midway (a listener bound after its undo would stay).
  signal.throwIfAborted();
  logger.info(
    { host: config.server.host, port, metricsPort: metricsServer.port },
    "runner listening",
  );

  let closing: Promise<void> | undefined;
  return {
    port,
    metricsPort: metricsServer.port,
    metrics,
    pipeline,
    admission,
    logger,
    spares,
    get connectionCount() {
      return server.connectionCount;
    },
    close() {
      closing ??= (async () => {
        // 1. Refuse new runs and end live ones (after the grace) so every process group is reaped
        //    before any connection is cut: the exit events still reach their callers.
        versionCheck.abort();
        // gRPC clients learn of the drain now, not when its grace ends: their next calls go to
        // a new connection (another runner behind a balancer) while the live ones run out here.
        server.goAway();
        await spares.stop();
        await pipeline.shutdown(config.run.shutdownGraceMs);
        await sweeper.stop();
        // 2. Then stop listening and drop the now-idle connections.
        await server.close(1000);
        await metricsServer.close();
        retention.stop();
        await store.close();
        await spawnHelper?.close();
        logger.info("runner stopped");
      })();
      return closing;
    },
  };
}
