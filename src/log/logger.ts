import { type Logger, pino } from "pino";

export type { Logger };

/**
 * The one root logger: JSON lines with per-run child bindings (runId,
 * sessionId, userId, provider, pid). Tokens and keys are redacted by path so a
 * careless `log.info({ env })` cannot leak them.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: "fermilink-runner" },
      redact: {
        paths: [
          "env.*_KEY",
          "env.*_TOKEN",
          "env.*_SECRET",
          "headers.authorization",
          'headers["x-runner-metrics-token"]',
          "metricsToken",
          "token",
        ],
        censor: "[redacted]",
      },
    },
    destination ?? process.stdout,
  );
}
