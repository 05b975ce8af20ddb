import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../src/log/logger.js";

/** One line the runner's logger wrote, parsed (pino's JSON: `level`, `msg` and the fields). */
export type LogRecord = Record<string, unknown> & { level: number; msg?: string };

/** A real logger at `level` whose lines a test reads back, parsed, in the order written. */
export function capturedLog(level: string): { logger: Logger; lines: LogRecord[] } {
  const lines: LogRecord[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of String(chunk).split("\n"))
        if (line !== "") lines.push(JSON.parse(line) as LogRecord);
      done();
    },
  });
  return { logger: createLogger(level, sink), lines };
}
