import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ListenError, startApp } from "../../src/app.js";
import { loadConfig } from "../../src/config/load-config.js";
import { createLogger } from "../../src/log/logger.js";
import { FAKE_AGENT } from "../helpers/start-server.js";

let home: string | undefined;
afterEach(async () => {
  if (home) await rm(home, { recursive: true, force: true });
  home = undefined;
});

describe("a listen address the runner cannot use", () => {
  it.each([
    ["FERMILINK_RUNNER_HOST", { FERMILINK_RUNNER_HOST: "no-such-host.invalid" }],
    ["FERMILINK_RUNNER_METRICS_HOST", { FERMILINK_RUNNER_METRICS_HOST: "no-such-host.invalid" }],
  ])(
    "a host name that does not resolve is a ListenError naming %s (exit 1, not a crash)",
    async (variable, env) => {
      home = await mkdtemp(path.join(tmpdir(), "flr-listen-"));
      const config = loadConfig({
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: home,
        FERMILINK_HOME: home,
        FERMILINK_SOFTWARE_ROOT: path.join(home, "no-software"),
        FERMILINK_RUNNER_PORT: "0",
        FERMILINK_RUNNER_METRICS_PORT: "0",
        FERMILINK_CODEX_BIN: FAKE_AGENT,
        FERMILINK_RUNNER_LOG_LEVEL: "silent",
        FERMILINK_RUNNER_SPARE_WORKSPACES: "0",
        FERMILINK_RUNNER_WARMUP_REQUESTS: "0",
        ...env,
      });
      const err = await startApp(config, { logger: createLogger("silent") }).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ListenError);
      expect((err as Error).message).toMatch(/no-such-host\.invalid/);
      expect((err as Error).message).toContain(`Set ${variable} to`);
    },
  );
});
