import os from "node:os";
import { ListenError, startApp } from "../app.js";
import { ConfigError, loadConfig } from "../config/load-config.js";
import { RunnerError } from "../errors/runner-error.js";
import { createLogger } from "../log/logger.js";
import { LAUNCHER_PID_ENV } from "./launcher.js";
import { preloadFirstUse, pretouchYoungGeneration, tuneV8 } from "./v8-tuning.js";

/**
 * Start the server on the environment's configuration (what `npm start` and
 * `fermilink-runner serve` run) and drain on SIGTERM/SIGINT/SIGHUP. Exit codes: 0
 * clean stop, 1 bad config, missing provider, unusable run store or a port
 * that cannot be listened on (in use, privileged, no such address), 2 crash,
 * 143 / 130 / 129 a SIGTERM / SIGINT / SIGHUP before it listened (the start undone).
 */
export async function serve(): Promise<void> {
  const v8Flags = tuneV8();
  // Read and removed first: nothing the server starts inherits it.
  const launcherPid = Number(process.env[LAUNCHER_PID_ENV] ?? 0);
  delete process.env[LAUNCHER_PID_ENV];
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`fermilink-runner: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const youngGenerationMb = pretouchYoungGeneration();
  preloadFirstUse();
  // Made here, not in startApp: a start that fails still has the log to flush.
  const logger = createLogger(config.logLevel);
  // A stop signal before the server listens abandons the start: node's default would end the
  // process by the signal, leaving what start-up had started (the provider's `--version` child).
  const startAbort = new AbortController();
  const abortStart = (signal: NodeJS.Signals) => {
    if (startAbort.signal.aborted) return;
    logger.warn({ signal }, "stop signal during start-up; undoing it");
    startAbort.abort(signal);
  };
  for (const signal of STOP_SIGNALS) process.on(signal, abortStart);
  let app: Awaited<ReturnType<typeof startApp>>;
  try {
    app = await startApp(config, { logger, signal: startAbort.signal });
  } catch (err) {
    if (startAbort.signal.aborted) {
      const signal = startAbort.signal.reason as NodeJS.Signals;
      logger.info({ signal }, "start-up abandoned");
      await new Promise<void>((resolve) => logger.flush(() => resolve()));
      // As a process ended by the signal reports it to a shell: 128 + its number.
      process.exit(128 + (os.constants.signals[signal] ?? 0));
    }
    // A missing provider CLI, an unusable run store, a port taken: one line, no stack.
    const known = err instanceof RunnerError || err instanceof ListenError;
    if (known) process.stderr.write(`fermilink-runner: ${err.message}\n`);
    // The log says why it ends (a collector may be all an operator reads), and what start-up
    // logged before reaches its reader: process.exit drops what stdout still holds.
    if (known) logger.fatal(`start-up failed: ${err.message}`);
    else logger.fatal({ err }, "start-up failed");
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    if (known) process.exit(1);
    throw err;
  }
  app.logger.info({ v8Flags, youngGenerationMb }, "V8 tuned");
  let watch: NodeJS.Timeout | undefined;
  let stopping = false;
  const stop = (signal: NodeJS.Signals | "launcher gone") => {
    // A repeated signal (a second Ctrl-C, passed on by the launcher) must not fall through to
    // node's default and kill the server mid-drain: live callers would lose their exit event.
    if (stopping) {
      app.logger.info({ signal }, "already shutting down");
      return;
    }
    stopping = true;
    clearInterval(watch);
    app.logger.info({ signal }, "shutting down");
    // process.exit drops what stdout still holds for a reader that lags: the log goes first.
    const exit = (code: number) => app.logger.flush(() => process.exit(code));
    app.close().then(
      () => exit(0),
      (err: unknown) => {
        app.logger.error({ err }, "shutdown failed");
        exit(2);
      },
    );
  };
  // SIGHUP too: a closed terminal (or the launcher passing one on). Node's default would end the
  // process at once, and live runs with no exit event, their callers' streams cut.
  for (const signal of STOP_SIGNALS) {
    process.off(signal, abortStart);
    process.on(signal, stop);
  }
  if (launcherPid > 0) {
    // The bin's launcher passes every stop signal on; a launcher killed outright passes none.
    watch = setInterval(() => {
      if (process.ppid === launcherPid) return;
      stop("launcher gone");
    }, LAUNCHER_WATCH_MS);
    watch.unref();
  }
}

/** The signals that stop the server: a drain once it listens, an abandoned start before. */
const STOP_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const;

/** How often a server started by the bin's launcher checks that the launcher still runs. */
const LAUNCHER_WATCH_MS = 250;
