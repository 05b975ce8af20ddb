/** The root logger on stdout: bounded while its reader lags, and flushed by an orderly exit. */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger, MAX_PENDING_LOG_CHARS } from "../../../src/log/logger.js";

const FIXTURES = path.join(import.meta.dirname, "../../fixtures");
const FLOOD = path.join(FIXTURES, "log-flood.ts");
const SLOW_READER = path.join(FIXTURES, "slow-reader.mjs");

const tempDirs: string[] = [];
afterEach(async () => {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

interface Flood {
  lines: Record<string, unknown>[];
  longestGapMs: number;
  maxPendingChars: number;
}

/**
 * `lines` log lines of `bytes` each through the root logger of a child whose
 * stdout is a pipe to a reader process that reads nothing for `waitMs`, then
 * 64 KB every 2 ms. The child exits as the server does: `logger.flush`, then
 * process.exit.
 */
async function flood(lines: number, bytes: number, waitMs: number): Promise<Flood> {
  const dir = await mkdtemp(path.join(tmpdir(), "flr-log-"));
  tempDirs.push(dir);
  const got = path.join(dir, "stdout");
  const child = spawn(
    "sh",
    [
      "-c",
      '"$1" --import tsx "$2" "$3" "$4" | "$1" "$5" "$6" 65536 2 "$7"',
      "sh",
      process.execPath,
      FLOOD,
      String(lines),
      String(bytes),
      SLOW_READER,
      String(waitMs),
      got,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let err = "";
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
  });
  await new Promise((resolve) => child.once("close", resolve));
  const report = err.split("\n").find((l) => l.startsWith("{"));
  if (report === undefined) throw new Error(`no report from the flood:\n${err}`);
  const out = (await readFile(got, "utf8")).trimEnd();
  return {
    ...(JSON.parse(report) as { longestGapMs: number; maxPendingChars: number }),
    // A line cut short at the exit is kept as such, for the assertions to name.
    lines: out.split("\n").map((l): Record<string, unknown> => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return { unparsed: l.slice(0, 80) };
      }
    }),
  };
}

describe("the root logger on stdout", () => {
  it("delivers every line to a reader that lags, what waits flushed before process.exit", async () => {
    // ≈ 4 MB with nobody reading for 1 s (a pipe holds 64 KB): the exit comes long before.
    const r = await flood(10_000, 300, 1000);
    expect(r.lines).toHaveLength(10_001);
    expect(r.lines.slice(0, -1).map((l) => l.i)).toEqual([...Array(10_000).keys()]);
    expect(r.lines.at(-1)).toMatchObject({ msg: "last line", lines: 10_000 });
    // The writes never waited for the reader.
    expect(r.longestGapMs).toBeLessThan(1000);
  });

  it("holds a bounded amount for a reader that lags, and counts the lines it dropped", async () => {
    // ≈ 15 MB of lines, unread while they are logged.
    const r = await flood(40_000, 300, 1000);
    const line = r.lines[0] ? JSON.stringify(r.lines[0]).length + 1 : 0;
    // Under the bound, a line is written whole, after the notice of the lines dropped before it.
    const notice = 200;
    expect(r.maxPendingChars).toBeLessThanOrEqual(MAX_PENDING_LOG_CHARS + line + notice);
    // Dropped: the newest lines while the pipe is full (one notice each time the reader caught
    // up, and at the exit); what was kept arrives whole and in order.
    const notices = r.lines.filter((l) => l.dropped !== undefined);
    const kept = r.lines.filter((l) => l.dropped === undefined);
    expect(notices.length).toBeGreaterThan(0);
    for (const n of notices) {
      expect(n).toMatchObject({ level: 40, service: "fermilink-runner" });
      expect(n.msg).toBe(`${n.dropped} log lines dropped: stdout's reader did not keep up`);
    }
    // The last line is the last notice, or the last line itself when the reader caught up in time.
    const last = r.lines.at(-1);
    if (last?.dropped === undefined) expect(last).toMatchObject({ msg: "last line" });
    const dropped = notices.reduce((sum, n) => sum + (n.dropped as number), 0);
    expect(kept.length + dropped).toBe(40_001);
    const order = kept.map((l) => l.i as number);
    expect(order).toEqual([...order].sort((a, b) => a - b));
    expect(new Set(order).size).toBe(order.length);
    expect(kept.length).toBeGreaterThan(15_000);
  });
});

describe("secrets in log lines", () => {
  it("censors the secret variables of a logged env, keeps the rest, and the token fields", () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const logger = createLogger("info", sink);
    logger.info(
      {
        env: {
          PATH: "/usr/bin",
          OPENAI_API_KEY: "sk-leak-1",
          FERMILINK_RUNNER_METRICS_TOKEN: "leak-2",
          AWS_SECRET: "leak-3",
        },
        headers: { authorization: "Bearer leak-4", "x-runner-metrics-token": "leak-5" },
        metricsToken: "leak-6",
      },
      "careless",
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toMatch(/leak/);
    expect(JSON.parse(lines[0] as string)).toMatchObject({
      env: {
        PATH: "/usr/bin",
        OPENAI_API_KEY: "[redacted]",
        FERMILINK_RUNNER_METRICS_TOKEN: "[redacted]",
        AWS_SECRET: "[redacted]",
      },
      headers: { authorization: "[redacted]", "x-runner-metrics-token": "[redacted]" },
      metricsToken: "[redacted]",
      msg: "careless",
    });
  });
});

describe("the logger's redaction", () => {
  it("never writes the auth tokens: the config's list, the variable, or an Authorization header", async () => {
    const { PassThrough } = await import("node:stream");
    const { createLogger } = await import("../../../src/log/logger.js");
    const out = new PassThrough();
    const chunks: string[] = [];
    out.on("data", (c: Buffer) => chunks.push(c.toString()));
    const log = createLogger("info", out);
    const secret = "svc-token-0123456789abcdef";
    log.info({ authTokens: [{ kind: "service", token: secret }] }, "config");
    log.info({ env: { FERMILINK_RUNNER_AUTH_TOKENS: `service:${secret}` } }, "env");
    log.info({ headers: { authorization: `Bearer ${secret}` } }, "request");
    await new Promise((r) => setImmediate(r));
    const text = chunks.join("");
    expect(text.split("\n").filter(Boolean)).toHaveLength(3);
    expect(text).not.toContain(secret);
  });
});
