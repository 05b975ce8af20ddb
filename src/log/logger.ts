import type { Writable } from "node:stream";
import { type DestinationStream, type Logger, pino } from "pino";

export type { Logger };

const SERVICE = "fermilink-runner";

/**
 * The most stdout may hold (in characters) while its reader lags. On Linux a
 * pipe or socket there is written asynchronously: without a bound, a stuck
 * log collector would let the queue grow until the process runs out of memory.
 */
export const MAX_PENDING_LOG_CHARS = 8 * 1024 * 1024;

/** How long `logger.flush` waits for stdout's reader: a reader that never reads must not hold the exit. */
const LOG_FLUSH_TIMEOUT_MS = 5000;

/**
 * pino's destination over stdout: lines beyond {@link MAX_PENDING_LOG_CHARS}
 * are dropped and counted, and the count is logged once the reader catches up
 * (or at flush). `flush` (pino's `logger.flush(cb)`) calls back once what is
 * pending reached the reader: `process.exit` drops whatever is still queued.
 */
class BoundedStdout implements DestinationStream {
  private dropped = 0;
  /** Set once stdout failed (EPIPE: its reader is gone): the log has nowhere to go. */
  private broken = false;

  constructor(private readonly out: Writable) {
    // Without another line to log, the count would otherwise wait for the next flush.
    out.on("drain", () => this.writeDropped());
    // Unhandled, a write error on stdout (a log collector that died) would crash the runner and
    // every run in it; the runs matter more than their log lines.
    out.on("error", () => {
      this.broken = true;
    });
  }

  write(line: string): void {
    if (this.broken) return;
    if (this.out.writableLength >= MAX_PENDING_LOG_CHARS) {
      this.dropped++;
      return;
    }
    this.writeDropped();
    this.out.write(line);
  }

  flush(cb: (err?: Error) => void): void {
    if (!this.broken) this.writeDropped();
    if (this.broken || this.out.writableLength === 0) {
      cb();
      return;
    }
    let called = false;
    const done = () => {
      if (called) return;
      called = true;
      clearTimeout(timer);
      cb();
    };
    const timer = setTimeout(done, LOG_FLUSH_TIMEOUT_MS);
    // Called back in order: once the lines before it are written.
    this.out.write("", done);
  }

  private writeDropped(): void {
    if (this.dropped === 0) return;
    const dropped = this.dropped;
    this.dropped = 0;
    // Written by hand in pino's shape (level 40 = warn): logging it would come back here.
    const line = {
      level: 40,
      time: Date.now(),
      service: SERVICE,
      dropped,
      msg: `${dropped} log lines dropped: stdout's reader did not keep up`,
    };
    this.out.write(`${JSON.stringify(line)}\n`);
  }
}

/** Shared by every logger on stdout: the bound is stdout's. */
let sharedStdout: BoundedStdout | undefined;

function stdoutSink(): BoundedStdout {
  sharedStdout ??= new BoundedStdout(process.stdout);
  return sharedStdout;
}

const REDACTED = "[redacted]";

/** Environment variables whose values are secrets: API keys, tokens (the metrics token and FERMILINK_RUNNER_AUTH_TOKENS too). */
const SECRET_ENV_NAME = /_(?:KEY|TOKEN|SECRET)S?$/i;

/**
 * An `env` object as logged, secret values censored. A serializer because
 * pino's redact paths take `*` only as a whole key (`env.*_KEY` names a key
 * spelled `*_KEY`), and `env.*` would hide PATH and the rest too.
 */
function redactEnv(env: unknown): unknown {
  if (typeof env !== "object" || env === null) return env;
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(env)) {
    out[name] = SECRET_ENV_NAME.test(name) ? REDACTED : value;
  }
  return out;
}

/**
 * The one root logger: JSON lines with per-run child bindings (runId,
 * sessionId, userId, provider, pid). Tokens and keys are redacted so a
 * careless `log.info({ env })` cannot leak them. Without `destination`: stdout,
 * bounded; an orderly exit calls `logger.flush(cb)` first.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: SERVICE },
      serializers: { env: redactEnv },
      redact: {
        paths: [
          "headers.authorization",
          'headers["x-runner-metrics-token"]',
          "metricsToken",
          "authTokens",
          "token",
        ],
        censor: REDACTED,
      },
    },
    destination ?? stdoutSink(),
  );
}
