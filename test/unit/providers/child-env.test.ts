/**
 * The child env is an allowlist (fix for spec §10 item 4) plus codex's §7.1
 * key rules (fix for §10 item 5).
 */
import { describe, expect, it } from "vitest";
import type { ProviderId } from "../../../src/config/providers.js";
import type { AgentPolicy } from "../../../src/events/run-event.js";
import { isRunnerSecretName, pickChildEnv } from "../../../src/providers/child-env.js";
import { CLAUDE_ENV_DEFAULTS } from "../../../src/providers/claude/command.js";
import { applyCodexEnvRules, isPlaceholderKey } from "../../../src/providers/codex/env.js";
import { OPENCODE_ENV_DEFAULTS } from "../../../src/providers/opencode/command.js";
import { getProviderAdapter } from "../../../src/providers/registry.js";

const HOST: Record<string, string> = {
  PATH: "/usr/local/bin:/usr/bin",
  HOME: "/home/runner",
  USER: "runner",
  LANG: "C.UTF-8",
  LC_ALL: "C.UTF-8",
  TZ: "UTC",
  TMPDIR: "/var/tmp/runner",
  TERM: "dumb",
  https_proxy: "http://proxy:3128",
  NO_PROXY: "localhost",
  SSL_CERT_FILE: "/etc/ssl/certs/ca.pem",
  NODE_EXTRA_CA_CERTS: "/etc/ssl/extra.pem",
  // Runner secrets and unrelated credentials: must never reach any provider.
  FERMILINK_RUNNER_METRICS_TOKEN: "metrics-secret",
  FERMILINK_RUNNER_AUTH_TOKENS: "tok1,tok2",
  RUNNER_METRICS_TOKEN: "old-metrics-secret",
  AWS_SECRET_ACCESS_KEY: "aws-secret",
  AWS_ACCESS_KEY_ID: "AKIA000",
  GITHUB_TOKEN: "ghp_x",
  DATABASE_URL: "postgres://u:p@db/x",
  FERMILINK_HOME: "/var/lib/fermilink",
  FERMILINK_CODEX_BIN: "/opt/codex",
  GOOGLE_OTHER_SECRET: "g-other",
  // Each vendor's own variables.
  OPENAI_API_KEY: "sk-openai",
  CODEX_HOME: "/var/lib/codex",
  ANTHROPIC_API_KEY: "sk-ant",
  CLAUDE_CONFIG_DIR: "/var/lib/claude",
  CLAUDE_CODE_MAX_RETRIES: "1",
  GEMINI_API_KEY: "g-key",
  GOOGLE_API_KEY: "g-key2",
  GOOGLE_CLOUD_PROJECT: "proj",
  OPENCODE_CONFIG: "/etc/opencode.json",
};

const BASE = {
  HOME: "/home/runner",
  LANG: "C.UTF-8",
  LC_ALL: "C.UTF-8",
  NODE_EXTRA_CA_CERTS: "/etc/ssl/extra.pem",
  NO_PROXY: "localhost",
  PATH: "/usr/local/bin:/usr/bin",
  SSL_CERT_FILE: "/etc/ssl/certs/ca.pem",
  TERM: "dumb",
  TMPDIR: "/var/tmp/runner",
  TZ: "UTC",
  USER: "runner",
  https_proxy: "http://proxy:3128",
};

const POLICY: AgentPolicy = {
  provider: "x",
  sandboxPolicy: "enforce",
  sandboxMode: "workspace-write",
  model: null,
  reasoningEffort: null,
};

function envFor(id: ProviderId, hostEnv: Record<string, string>, passthrough: string[] = []) {
  return getProviderAdapter(id).buildCommand({
    bin: "/b",
    repoDir: "/srv/ws/s/repo",
    prompt: "p",
    policy: POLICY,
    hostEnv,
    envPassthrough: passthrough,
  });
}

describe("allowlisted child env", () => {
  it("codex gets the base set plus CODEX_* and OPENAI_* only", () => {
    expect(envFor("codex", HOST).env).toEqual({
      ...BASE,
      CODEX_HOME: "/var/lib/codex",
      OPENAI_API_KEY: "sk-openai",
    });
  });

  it("claude gets ANTHROPIC_* and CLAUDE_* (incl. CLAUDE_CODE_*) only", () => {
    expect(envFor("claude", HOST).env).toEqual({
      ...BASE,
      ANTHROPIC_API_KEY: "sk-ant",
      ...CLAUDE_ENV_DEFAULTS,
      CLAUDE_CODE_MAX_RETRIES: "1",
      CLAUDE_CONFIG_DIR: "/var/lib/claude",
    });
  });

  it("gemini gets GEMINI_* and its named GOOGLE_* variables, not all of GOOGLE_*", () => {
    expect(envFor("gemini", HOST).env).toEqual({
      ...BASE,
      GEMINI_API_KEY: "g-key",
      GEMINI_CLI_NO_RELAUNCH: "true",
      GOOGLE_API_KEY: "g-key2",
      GOOGLE_CLOUD_PROJECT: "proj",
    });
  });

  it("opencode gets OPENCODE_* only", () => {
    expect(envFor("opencode", HOST).env).toEqual({
      ...BASE,
      OPENCODE_CONFIG: "/etc/opencode.json",
      ...OPENCODE_ENV_DEFAULTS,
    });
  });

  it("admin pass-through adds names, but never runner secrets", () => {
    const env = envFor("claude", HOST, [
      "DATABASE_URL",
      "FERMILINK_RUNNER_METRICS_TOKEN",
      "RUNNER_METRICS_TOKEN",
      "NOT_SET_ANYWHERE",
    ]).env;
    expect(env.DATABASE_URL).toBe("postgres://u:p@db/x");
    expect(Object.keys(env)).not.toContain("FERMILINK_RUNNER_METRICS_TOKEN");
    expect(Object.keys(env)).not.toContain("RUNNER_METRICS_TOKEN");
    expect(Object.keys(env)).not.toContain("NOT_SET_ANYWHERE");
  });

  it("no provider ever sees the secrets listed in the host env", () => {
    for (const id of ["codex", "claude", "gemini", "opencode"] as const) {
      const keys = Object.keys(envFor(id, HOST).env);
      for (const secret of [
        "FERMILINK_RUNNER_METRICS_TOKEN",
        "FERMILINK_RUNNER_AUTH_TOKENS",
        "RUNNER_METRICS_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_TOKEN",
        "FERMILINK_HOME",
      ]) {
        expect(keys).not.toContain(secret);
      }
      const otherVendors = {
        codex: "ANTHROPIC_API_KEY",
        claude: "OPENAI_API_KEY",
        gemini: "ANTHROPIC_API_KEY",
        opencode: "OPENAI_API_KEY",
      };
      expect(keys).not.toContain(otherVendors[id]);
    }
  });

  it("is sorted and independent of host key order and pass-through order", () => {
    const reversed = Object.fromEntries(Object.entries(HOST).reverse());
    const a = pickChildEnv(HOST, { prefixes: ["CLAUDE_"], names: [] }, [
      "DATABASE_URL",
      "GITHUB_TOKEN",
    ]);
    const b = pickChildEnv(reversed, { prefixes: ["CLAUDE_"], names: [] }, [
      "GITHUB_TOKEN",
      "DATABASE_URL",
    ]);
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    expect(Object.keys(a)).toEqual([...Object.keys(a)].sort());
  });

  it("names runner secrets", () => {
    expect(isRunnerSecretName("FERMILINK_RUNNER_METRICS_TOKEN")).toBe(true);
    expect(isRunnerSecretName("RUNNER_METRICS_TOKEN")).toBe(true);
    expect(isRunnerSecretName("FERMILINK_CODEX_API_KEY")).toBe(false);
  });
});

describe("codex key rules (spec §7.1)", () => {
  const base = { PATH: "/usr/bin", HOME: "/home/runner" };
  const rules = (host: Record<string, string>) => {
    const picked = pickChildEnv(host, { prefixes: ["CODEX_", "OPENAI_"], names: [] }, []);
    return applyCodexEnvRules(picked, host, "/work/cwd");
  };

  it("copies prefixed values to unset native names, and leaves the prefixed names out", () => {
    const { env, codexHome } = rules({
      ...base,
      FERMILINK_CODEX_AUTH_MODE: "apikey",
      FERMILINK_CODEX_API_KEY: "sk-codex",
      FERMILINK_OPENAI_API_KEY: "sk-openai",
      FERMILINK_CODEX_HOME: "/var/lib/codex-home",
    });
    expect(env).toEqual({
      ...base,
      CODEX_API_KEY: "sk-codex",
      CODEX_AUTH_MODE: "apikey",
      CODEX_HOME: "/var/lib/codex-home",
      OPENAI_API_KEY: "sk-openai",
    });
    expect(codexHome).toBe("/var/lib/codex-home");
  });

  it("keeps a native value that is already set (CODEX_HOME included)", () => {
    const { env } = rules({
      ...base,
      OPENAI_API_KEY: "sk-native",
      FERMILINK_OPENAI_API_KEY: "sk-prefixed",
      CODEX_HOME: "/native/home",
      FERMILINK_CODEX_HOME: "/prefixed/home",
    });
    expect(env.OPENAI_API_KEY).toBe("sk-native");
    expect(env.CODEX_HOME).toBe("/native/home");
  });

  for (const mode of ["login", "OAuth", " keychain ", "stored"]) {
    it(`auth mode '${mode}' removes every key`, () => {
      const { env } = rules({
        ...base,
        FERMILINK_CODEX_AUTH_MODE: mode,
        FERMILINK_CODEX_API_KEY: "sk-a",
        FERMILINK_OPENAI_API_KEY: "sk-b",
        CODEX_API_KEY: "sk-c",
        OPENAI_API_KEY: "sk-d",
      });
      expect(env).toEqual({ ...base, CODEX_AUTH_MODE: mode });
    });
  }

  it("checks every key for a placeholder, not only the first one found", () => {
    // FermiLink looked at FERMILINK_CODEX_API_KEY only and kept the placeholder OPENAI_API_KEY.
    expect(
      rules({ ...base, FERMILINK_CODEX_API_KEY: "sk-real", OPENAI_API_KEY: "CHANGEME" }).env,
    ).toEqual({
      ...base,
      CODEX_API_KEY: "sk-real",
    });
    // FermiLink saw the placeholder first and dropped the real native key too.
    expect(
      rules({ ...base, FERMILINK_OPENAI_API_KEY: "YOUR_KEY_HERE", OPENAI_API_KEY: "sk-real" }).env,
    ).toEqual({
      ...base,
      OPENAI_API_KEY: "sk-real",
    });
  });

  it("replaces a placeholder native key with a real prefixed one", () => {
    const host = {
      ...base,
      OPENAI_API_KEY: " YOUR_REAL_OPENAI_API_KEY ",
      FERMILINK_OPENAI_API_KEY: "sk-real",
    };
    expect(rules(host).env.OPENAI_API_KEY).toBe("sk-real");
  });

  it("drops a placeholder even when the admin passes the prefixed name through", () => {
    const host = { ...base, FERMILINK_OPENAI_API_KEY: "YOUR_KEY*HERE" };
    const picked = pickChildEnv(host, { prefixes: ["OPENAI_"], names: [] }, [
      "FERMILINK_OPENAI_API_KEY",
    ]);
    expect(applyCodexEnvRules(picked, host).env).toEqual(base);
  });

  it("recognises the placeholders", () => {
    for (const v of [
      "YOUR_KEY_HERE",
      "YOUR_REAL_OPENAI_API_KEY",
      "YOUR_KEY*HERE",
      "YOUR_KEY_GOES_HERE",
      " CHANGEME ",
    ]) {
      expect(isPlaceholderKey(v)).toBe(true);
    }
    expect(isPlaceholderKey("sk-proj-abc")).toBe(false);
    expect(isPlaceholderKey("changeme")).toBe(false);
  });

  it("makes CODEX_HOME absolute (~ against HOME, relative against the CWD) and asks for it to exist", () => {
    expect(rules({ ...base, FERMILINK_CODEX_HOME: "state/codex" }).codexHome).toBe(
      "/work/cwd/state/codex",
    );
    expect(rules({ ...base, CODEX_HOME: "~/.codex" }).env.CODEX_HOME).toBe("/home/runner/.codex");
    const spec = envFor("codex", { ...base, FERMILINK_CODEX_HOME: "/var/lib/c" });
    expect(spec.dirs).toEqual(["/var/lib/c"]);
    expect(envFor("codex", base).dirs).toBeUndefined();
  });

  it("keeps the rules when the runner passes FERMILINK_CODEX_API_KEY as the endpoint key", () => {
    // As the runner builds it (load-config): apiKey is FERMILINK_CODEX_API_KEY, base URL or not.
    const withEndpoint = (host: Record<string, string>, baseUrl: string | null = null) =>
      getProviderAdapter("codex").buildCommand({
        bin: "/b",
        repoDir: "/srv/ws/s/repo",
        prompt: "p",
        policy: POLICY,
        hostEnv: host,
        envPassthrough: [],
        endpoint: { baseUrl, apiKey: host.FERMILINK_CODEX_API_KEY ?? null },
      }).env;
    const login = { ...base, FERMILINK_CODEX_AUTH_MODE: "login", FERMILINK_CODEX_API_KEY: "sk-a" };
    expect(withEndpoint(login).CODEX_API_KEY).toBeUndefined();
    expect(
      withEndpoint({ ...base, FERMILINK_CODEX_API_KEY: "YOUR_KEY_HERE" }).CODEX_API_KEY,
    ).toBeUndefined();
    const native = { ...base, CODEX_API_KEY: "sk-native", FERMILINK_CODEX_API_KEY: "sk-prefixed" };
    expect(withEndpoint(native).CODEX_API_KEY).toBe("sk-native");
    // With its own endpoint the runner's key is that provider's key (its env_key).
    expect(withEndpoint(native, "http://127.0.0.1:9/v1").CODEX_API_KEY).toBe("sk-prefixed");
    expect(withEndpoint(login, "http://127.0.0.1:9/v1").CODEX_API_KEY).toBe("sk-a");
  });

  it("applies to codex only: other providers never get OpenAI keys from FermiLink's names", () => {
    const host = { ...base, FERMILINK_OPENAI_API_KEY: "sk-x", FERMILINK_CODEX_HOME: "/c" };
    expect(envFor("claude", host).env).toEqual({ ...base, ...CLAUDE_ENV_DEFAULTS });
    expect(envFor("claude", host).dirs).toBeUndefined();
  });
});
