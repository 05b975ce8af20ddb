import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type App, startApp } from "../../src/app.js";
import { loadConfig } from "../../src/config/load-config.js";
import { createLogger, type Logger } from "../../src/log/logger.js";

/** The scripted fake provider (prints codex-style JSONL). */
export const FAKE_AGENT = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../fixtures/bin/fake-agent.mjs",
);

/** What `npm start` runs (after building it: test/helpers/build-dist.ts builds it for every test run). */
export const BUILT_MAIN = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../dist/src/main.js",
);

/** A runner started for a test on 127.0.0.1 with a random port and a throw-away FERMILINK_HOME. */
export interface TestServer {
  app: App;
  home: string;
  workspacesRoot: string;
  baseUrl: string;
  /** Stops the app and asserts nothing was left behind: no run, no slot, no connection. */
  stop(): Promise<void>;
}

/**
 * Boot the real app (composition root) with a test environment. `env`
 * overrides FERMILINK_* variables; the default provider binary is the fake agent.
 * `logger` replaces the silent one (a test of what the runner logs, or of a log that fails).
 */
export async function startTestServer(
  env: Record<string, string> = {},
  /** `bodyTimeoutMs`: how long a request's body may take to arrive (a stalled one is refused). */
  opts: { logger?: Logger; bodyTimeoutMs?: number } = {},
): Promise<TestServer> {
  const home = await mkdtemp(path.join(tmpdir(), "flr-test-"));
  const config = loadConfig({
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? home,
    FERMILINK_HOME: home,
    FERMILINK_SOFTWARE_ROOT: path.join(home, "no-software"),
    FERMILINK_RUNNER_PORT: "0",
    FERMILINK_RUNNER_METRICS_PORT: "0",
    FERMILINK_CODEX_BIN: FAKE_AGENT,
    FERMILINK_RUNNER_KILL_GRACE_SECONDS: "1",
    FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "0",
    FERMILINK_RUNNER_LOG_LEVEL: "silent",
    // Providers at the runner's priority: niced, they starve behind the other test worker's
    // processes on a 2-core box, and a quick one then hits a short idle limit before its first
    // line (a chaos run in CI). Niceness itself is tested in test/unit/process.
    FERMILINK_RUNNER_PROVIDER_NICE: "0",
    // A few, so new sessions take the spare path, without 200 being made for every test server.
    FERMILINK_RUNNER_SPARE_WORKSPACES: "2",
    // No start-up warm-up (≈ 0.8 s each): test/integration/warm-up.test.ts covers it.
    FERMILINK_RUNNER_WARMUP_REQUESTS: "0",
    ...env,
  });
  const app = await startApp(config, {
    logger: opts.logger ?? createLogger(config.logLevel),
    bodyTimeoutMs: opts.bodyTimeoutMs,
  });
  return {
    app,
    home,
    workspacesRoot: config.workspacesRoot,
    baseUrl: `http://127.0.0.1:${app.port}`,
    async stop() {
      await app.close();
      const leftovers = {
        liveRuns: app.pipeline.liveRuns,
        active: app.admission.activeTotal,
        pending: app.admission.pendingTotal,
        connections: app.connectionCount,
      };
      await rm(home, { recursive: true, force: true });
      const clean = { liveRuns: 0, active: 0, pending: 0, connections: 0 };
      if (JSON.stringify(leftovers) !== JSON.stringify(clean)) {
        throw new Error(`Test server left things behind: ${JSON.stringify(leftovers)}`);
      }
    },
  };
}

/** A test server whose fake agent waits at its gate steps until the test opens the gate. */
export interface GatedTestServer extends TestServer {
  /** Lets every `#scenario=gate` (and other `waitForEnvFile`) step go on. */
  openGate(): Promise<void>;
}

/** `startTestServer` with a gate for the fake agent; `stop` also removes the gate file. */
export async function startGatedTestServer(
  env: Record<string, string> = {},
): Promise<GatedTestServer> {
  const gate = path.join(tmpdir(), `flr-gate-${randomUUID()}`);
  const s = await startTestServer({
    FERMILINK_RUNNER_ENV_PASSTHROUGH: "FAKE_AGENT_GATE",
    FAKE_AGENT_GATE: gate,
    ...env,
  });
  return {
    ...s,
    openGate: () => writeFile(gate, "open"),
    async stop() {
      try {
        await s.stop();
      } finally {
        await rm(gate, { force: true });
      }
    },
  };
}
