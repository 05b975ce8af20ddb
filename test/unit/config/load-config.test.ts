import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../../src/config/load-config.js";

describe("FERMILINK_RUNNER_AUTH_TOKENS", () => {
  const SVC = "svc-0123456789abcdef";
  const ALICE = "alice-0123456789abcdef";
  const problemsOf = (value: string): string[] => {
    try {
      loadConfig({ FERMILINK_HOME: "/srv/fl", FERMILINK_RUNNER_AUTH_TOKENS: value }, "/work");
    } catch (e) {
      return [...(e as ConfigError).problems];
    }
    return [];
  };

  it("is off when unset or blank", () => {
    expect(loadConfig({ FERMILINK_HOME: "/srv/fl" }, "/work").authTokens).toEqual([]);
    const blank = loadConfig(
      { FERMILINK_HOME: "/srv/fl", FERMILINK_RUNNER_AUTH_TOKENS: "  " },
      "/work",
    );
    expect(blank.authTokens).toEqual([]);
  });

  it("reads service and user entries; a user token is everything after the second colon", () => {
    const c = loadConfig(
      {
        FERMILINK_HOME: "/srv/fl",
        FERMILINK_RUNNER_AUTH_TOKENS: ` service:${SVC} , user:Alice:${ALICE}:x,`,
      },
      "/work",
    );
    expect(c.authTokens).toEqual([
      { kind: "service", token: SVC },
      { kind: "user", userId: "Alice", token: `${ALICE}:x` },
    ]);
  });

  it("refuses a token with characters beyond printable ASCII, which a header cannot carry reliably", () => {
    const problems = problemsOf(`service:${SVC}é,user:erin:${ALICE}\u2014,user:fay:${ALICE}\u0001`);
    expect(problems).toHaveLength(3);
    for (const [i, p] of problems.entries()) {
      expect(p).toMatch(new RegExp(`entry ${i + 1} .*outside printable ASCII`));
    }
  });

  it("reports every bad entry at once, never quoting a token", () => {
    const short = "short-token";
    const spaced = "has a space 0123456789";
    const problems = problemsOf(
      [
        `service:${short}`,
        `user::${ALICE}`,
        `user:bob`,
        `admin:${SVC}`,
        `user:carol:${spaced}`,
        `service:${SVC}`,
        `user:dave:${SVC}`,
      ].join(","),
    );
    expect(problems).toHaveLength(6);
    expect(problems[0]).toMatch(/entry 1 \(service\): .*11 characters; use at least 16/);
    expect(problems[1]).toMatch(/entry 2 has no user id/);
    expect(problems[2]).toMatch(/entry 3 has no user id/);
    expect(problems[3]).toMatch(/entry 4 is neither service:<token> or user:<user_id>:<token>/);
    expect(problems[4]).toMatch(/entry 5 \(user "carol"\): the token has whitespace/);
    expect(problems[5]).toMatch(/entry 7 \(user "dave"\): the token is listed twice/);
    const all = problems.join("\n");
    for (const secret of [short, ALICE, SVC, "has a space"]) expect(all).not.toContain(secret);
  });
});

describe("loadConfig", () => {
  it("gives FermiLink's defaults under FERMILINK_HOME and freezes the result", () => {
    const c = loadConfig({ FERMILINK_HOME: "/srv/fl" }, "/work");
    expect(c.workspacesRoot).toBe("/srv/fl/workspaces");
    expect(c.scipkgRoot).toBe("/srv/fl/scientific_packages");
    expect(c.agentRuntimeFile).toBe("/srv/fl/agent_runtime.json");
    expect(c.server).toEqual({
      host: "127.0.0.1",
      port: 8000,
      metricsHost: "127.0.0.1",
      metricsPort: 9464,
      corsOrigins: [],
    });
    expect(c.store).toEqual({
      path: "/srv/fl/runner/runs.sqlite3",
      retentionMs: 168 * 3600 * 1000,
      maxBytes: 1024 * 1024 * 1024,
    });
    expect(c.run.maxRuntimeMs).toBe(600_000);
    expect(c.admission).toEqual({
      globalLimit: 200,
      perUserLimit: 10,
      maxQueueSize: 2000,
      maxPendingPerUser: 10,
    });
    expect(c.metricsToken).toBeNull();
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.run)).toBe(true);
  });

  it("resolves relative roots against the working directory", () => {
    const c = loadConfig({ FERMILINK_HOME: "./.fermilink" }, "/work/x");
    expect(c.home).toBe(path.resolve("/work/x/.fermilink"));
  });

  it("reports every invalid variable at once, naming each", () => {
    let err: unknown;
    try {
      loadConfig({
        FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "ten",
        FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "0",
        FERMILINK_RUNNER_PORT: "70000",
        FERMILINK_AGENT_PROVIDER: "cursor",
        FERMILINK_AGENT_REASONING_EFFORT: "extreme",
        FERMILINK_RUNNER_ENV_PASSTHROUGH: "OK_NAME,FERMILINK_RUNNER_METRICS_TOKEN,bad-name",
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems.join("\n");
    for (const name of [
      "FERMILINK_RUNNER_MAX_RUNTIME_SECONDS",
      "FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS",
      "FERMILINK_RUNNER_PORT",
      "FERMILINK_AGENT_PROVIDER",
      "FERMILINK_AGENT_REASONING_EFFORT",
      "FERMILINK_RUNNER_METRICS_TOKEN",
      "bad-name",
    ]) {
      expect(problems).toContain(name);
    }
    expect((err as ConfigError).problems).toHaveLength(7);
  });

  it("refuses a zero or negative runtime limit (FermiLink accepted them, §10 item 11)", () => {
    expect(() => loadConfig({ FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "0" })).toThrow(ConfigError);
    expect(() => loadConfig({ FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "-5" })).toThrow(ConfigError);
    expect(loadConfig({ FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "1.5" }).run.maxRuntimeMs).toBe(1500);
  });

  it("refuses a timer node cannot hold (it would fire at once), hex, and a value that rounds to 0 ms", () => {
    const refused = (env: Record<string, string>) =>
      expect(() => loadConfig(env)).toThrow(ConfigError);
    refused({ FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "3000000" });
    refused({ FERMILINK_RUNNER_KILL_GRACE_SECONDS: "2147484" });
    refused({ FERMILINK_RUNNER_SSE_HEARTBEAT_SECONDS: "1e9" });
    refused({ FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS: "0x10" });
    refused({ FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "0.0001" });
    refused({ FERMILINK_RUNNER_RUN_RETENTION_HOURS: "0.0000001" });
    const c = loadConfig({
      FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "2147483",
      FERMILINK_RUNNER_RUN_RETENTION_HOURS: "100000",
    });
    expect(c.run.maxRuntimeMs).toBe(2_147_483_000);
    expect(c.store.retentionMs).toBe(100_000 * 3600 * 1000);
  });

  it("refuses admission limits OpsService cannot report (uint32: its calls would all fail)", () => {
    for (const name of [
      "FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS",
      "FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS",
      "FERMILINK_RUNNER_MAX_QUEUE_SIZE",
      "FERMILINK_RUNNER_MAX_PENDING_PER_USER",
    ]) {
      expect(() => loadConfig({ [name]: "4294967296" })).toThrow(
        `${name}=4294967296 must be between`,
      );
      expect(() => loadConfig({ [name]: "4294967295" })).not.toThrow();
    }
  });

  it("states a lower bound alone when there is no upper bound to speak of", () => {
    expect(() => loadConfig({ FERMILINK_RUNNER_STORE_MAX_MB: "0" })).toThrow(
      "FERMILINK_RUNNER_STORE_MAX_MB=0 must be at least 1.",
    );
    expect(() => loadConfig({ FERMILINK_RUNNER_SUBPROCESS_STREAM_LIMIT: "4096" })).toThrow(
      "FERMILINK_RUNNER_SUBPROCESS_STREAM_LIMIT=4096 must be at least 65536.",
    );
  });

  it("refuses a minus sign on every unsigned setting, -0 too (it was taken as 0: any free port)", () => {
    expect(() => loadConfig({ FERMILINK_RUNNER_PORT: "-0" })).toThrow(
      "FERMILINK_RUNNER_PORT=-0 must be between 0 and 65535, without a minus sign.",
    );
    expect(() => loadConfig({ FERMILINK_RUNNER_STORE_MAX_MB: "-00" })).toThrow(
      "FERMILINK_RUNNER_STORE_MAX_MB=-00 must be at least 1.",
    );
    for (const name of [
      "FERMILINK_RUNNER_PORT",
      "FERMILINK_RUNNER_METRICS_PORT",
      "FERMILINK_RUNNER_PROVIDER_NICE",
      "FERMILINK_RUNNER_MAX_QUEUE_SIZE",
      "FERMILINK_RUNNER_MAX_PENDING_PER_USER",
      "FERMILINK_RUNNER_SPARE_WORKSPACES",
    ]) {
      expect(() => loadConfig({ [name]: "-0" })).toThrow(`${name}=-0 must be`);
      expect(() => loadConfig({ [name]: "0" })).not.toThrow();
    }
    expect(loadConfig({ FERMILINK_RUNNER_PORT: "+0" }).server.port).toBe(0);
  });

  it("keeps as many spare workspaces as runs can start at once, unless told otherwise", () => {
    expect(loadConfig({}).spareWorkspaces).toBe(200);
    expect(loadConfig({ FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "7" }).spareWorkspaces).toBe(7);
    expect(loadConfig({ FERMILINK_RUNNER_SPARE_WORKSPACES: "0" }).spareWorkspaces).toBe(0);
    for (const bad of ["-1", "lots", "10001"]) {
      expect(() => loadConfig({ FERMILINK_RUNNER_SPARE_WORKSPACES: bad })).toThrow(
        /FERMILINK_RUNNER_SPARE_WORKSPACES/,
      );
    }
  });

  it("treats blank values as unset, as FermiLink does", () => {
    const c = loadConfig({ FERMILINK_AGENT_MODEL: "  ", FERMILINK_RUNNER_METRICS_TOKEN: " " });
    expect(c.agentEnv.model).toBeNull();
    expect(c.metricsToken).toBeNull();
  });

  it("reads the metrics token's old name RUNNER_METRICS_TOKEN when the new one is unset, as FermiLink does", () => {
    expect(loadConfig({ RUNNER_METRICS_TOKEN: "old" }).metricsToken).toBe("old");
    expect(
      loadConfig({ RUNNER_METRICS_TOKEN: "old", FERMILINK_RUNNER_METRICS_TOKEN: "new" })
        .metricsToken,
    ).toBe("new");
    expect(
      loadConfig({ RUNNER_METRICS_TOKEN: " old ", FERMILINK_RUNNER_METRICS_TOKEN: " " })
        .metricsToken,
    ).toBe("old");
  });

  it("reads provider binaries and the package-root fallback name", () => {
    const c = loadConfig({
      FERMILINK_CLAUDE_BIN: "/opt/claude",
      FERMILINK_SCIENTIFIC_PACKAGES_ROOT: "/pk",
    });
    expect(c.providerBins.claude).toBe("/opt/claude");
    expect(c.providerBins.codex).toBeNull();
    expect(c.scipkgRoot).toBe("/pk");
  });

  it("refuses credentials in codex's base URL (its argv, readable by any user), never echoing them", () => {
    for (const url of ["https://user:s3cret@llm.example/v1", "http://s3cret@llm.example:8080/v1"]) {
      let err: unknown;
      try {
        loadConfig({ FERMILINK_CODEX_BASE_URL: url });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      const { problems, message } = err as ConfigError;
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(
        /^FERMILINK_CODEX_BASE_URL="https?:\/\/\*\*\*@llm\.example(:8080)?\/v1" has credentials .*command line.*FERMILINK_CODEX_API_KEY/,
      );
      expect(message).not.toContain("s3cret");
    }
    // The others get their URL only in their environment (readable by the runner's user alone).
    const c = loadConfig({
      FERMILINK_CLAUDE_BASE_URL: "https://u:p@claude.example",
      FERMILINK_GEMINI_BASE_URL: "https://u:p@gemini.example",
      FERMILINK_OPENCODE_BASE_URL: "https://u:p@opencode.example/v1",
      FERMILINK_CODEX_BASE_URL: "https://llm.example/v1/",
    });
    expect(c.providerEndpoints.claude.baseUrl).toBe("https://u:p@claude.example");
    expect(c.providerEndpoints.opencode.baseUrl).toBe("https://u:p@opencode.example/v1");
    expect(c.providerEndpoints.codex.baseUrl).toBe("https://llm.example/v1");
  });

  it("refuses a query string in codex's base URL (its argv; codex appends its path after it), never echoing it", () => {
    for (const [url, shown] of [
      ["https://llm.example/v1?api-key=s3cret", "https://llm.example/v1?api-key=***"],
      [
        "https://llm.example/v1/?key=s3cret&api-version=1",
        "https://llm.example/v1/?key=***&api-version=***",
      ],
      ["http://llm.example:8080/v1?s3cret", "http://llm.example:8080/v1?***"],
      ["https://llm.example/v1?", "https://llm.example/v1?***"],
    ] as const) {
      let err: unknown;
      try {
        loadConfig({ FERMILINK_CODEX_BASE_URL: url });
      } catch (e) {
        err = e;
      }
      expect(err, url).toBeInstanceOf(ConfigError);
      const { problems, message } = err as ConfigError;
      expect(problems).toEqual([
        `FERMILINK_CODEX_BASE_URL=${JSON.stringify(shown)} has a query string (?...): codex gets this URL on its command line, which any user of the host can read (ps), and appends its own path after the query, so no request would reach the endpoint. Give the key in FERMILINK_CODEX_API_KEY instead, and the URL without a query.`,
      ]);
      expect(message).not.toContain("s3cret");
    }
    // A fragment is no query; the others get their URL only in their environment.
    const c = loadConfig({
      FERMILINK_CODEX_BASE_URL: "https://llm.example/v1#a?b",
      FERMILINK_CLAUDE_BASE_URL: "https://claude.example?key=k",
    });
    expect(c.providerEndpoints.codex.baseUrl).toBe("https://llm.example/v1#a?b");
    expect(c.providerEndpoints.claude.baseUrl).toBe("https://claude.example?key=k");
  });

  it("never echoes credentials in a base URL that is not http(s)", () => {
    let err: unknown;
    try {
      loadConfig({ FERMILINK_CLAUDE_BASE_URL: "ftp://user:s3cret@claude.example/" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const { problems, message } = err as ConfigError;
    expect(problems).toEqual([
      'FERMILINK_CLAUDE_BASE_URL="ftp://***@claude.example/" is not an http(s) URL.',
    ]);
    expect(message).not.toContain("s3cret");
  });
});

describe("paths the runner writes under", () => {
  it("stop start-up when they cannot be directories (every run would fail)", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "flr-config-"));
    try {
      const file = path.join(dir, "a-file");
      writeFileSync(file, "");
      const problems = (env: Record<string, string>) => {
        try {
          loadConfig({ FERMILINK_HOME: dir, ...env }, dir);
          return [];
        } catch (err) {
          return (err as ConfigError).problems;
        }
      };
      expect(problems({})).toEqual([]);
      expect(problems({ FERMILINK_WORKSPACES_ROOT: path.join(file, "ws") })).toEqual([
        `FERMILINK_WORKSPACES_ROOT: ${path.join(file, "ws")} cannot be made: ${file} is not a directory.`,
      ]);
      expect(problems({ FERMILINK_WORKSPACES_ROOT: file })).toEqual([
        `FERMILINK_WORKSPACES_ROOT: ${file} is not a directory.`,
      ]);
      expect(problems({ FERMILINK_RUNNER_STORE_PATH: dir })).toEqual([
        `FERMILINK_RUNNER_STORE_PATH: ${dir} is a directory; it names the run store's SQLite file.`,
      ]);
      expect(problems({ FERMILINK_RUNNER_STORE_PATH: path.join(file, "runs.sqlite3") })).toEqual([
        `FERMILINK_RUNNER_STORE_PATH: ${file} is not a directory.`,
      ]);
      // Derived from FERMILINK_HOME: the message says so.
      expect(problems({ FERMILINK_HOME: file })[0]).toBe(
        `FERMILINK_WORKSPACES_ROOT (unset: under FERMILINK_HOME): ${path.join(file, "workspaces")} cannot be made: ${file} is not a directory.`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("configuration documentation", () => {
  it("lists every variable of the env table in the README", async () => {
    const { readFile } = await import("node:fs/promises");
    const { ENV_SPECS } = await import("../../../src/config/env-spec.js");
    const readme = await readFile(new URL("../../../README.md", import.meta.url), "utf8");
    for (const spec of ENV_SPECS) expect(readme).toMatch(new RegExp(`\\| \`${spec.name}\` +\\|`));
  });
});
