import type { AuthTokenEntry } from "../auth/auth-tokens.js";
import type { ProviderId } from "./providers.js";

/** A provider's model endpoint; null fields leave the CLI's own defaults. */
export interface ProviderEndpoint {
  baseUrl: string | null;
  apiKey: string | null;
}

/** Agent policy settings from `FERMILINK_AGENT_*` (null = not set in the env). */
export interface AgentEnvPolicy {
  provider: ProviderId | null;
  sandboxPolicy: "enforce" | "bypass" | null;
  sandboxMode: string | null;
  model: string | null;
  reasoningEffort: "low" | "medium" | "high" | "xhigh" | null;
}

/**
 * Every setting of the runner, parsed and validated once at start-up from the
 * `FERMILINK_*` environment (see `env-spec.ts` for names and defaults), then
 * deep-frozen. No module reads `process.env` after start-up.
 */
export interface Config {
  /** FERMILINK_HOME, absolute. */
  home: string;
  /** FERMILINK_WORKSPACES_ROOT, absolute. */
  workspacesRoot: string;
  /** FERMILINK_RUNNER_SPARE_WORKSPACES: new-session directories kept ready (0 = none). */
  spareWorkspaces: number;
  /** FERMILINK_RUNNER_WARMUP_REQUESTS: requests sent through the handler before listening (0 = none). */
  warmUpRequests: number;
  /** FERMILINK_SCIPKG_ROOT (or FERMILINK_SCIENTIFIC_PACKAGES_ROOT), absolute. */
  scipkgRoot: string;
  /** FERMILINK_SCIPKG_ACTIVE. */
  scipkgActive: string | null;
  /** The run store (FERMILINK_RUNNER_STORE_PATH, retention by age and by size). */
  store: { path: string; retentionMs: number; maxBytes: number };
  /** FERMILINK_MAXWELLLINK_ROOT (absolute) and FERMILINK_LEGACY_MAXWELLLINK_PACKAGE_ID (normalised). */
  legacyMaxwellLink: { root: string; packageId: string };
  /** FERMILINK_SOFTWARE_ROOT, absolute, or null when it does not exist (built-in template used). */
  softwareRoot: string | null;
  /** `$FERMILINK_HOME/agent_runtime.json`. */
  agentRuntimeFile: string;
  server: {
    host: string;
    port: number;
    metricsHost: string;
    metricsPort: number;
    /** FERMILINK_RUNNER_CORS_ORIGINS: browser origins allowed to call (`*` = any); empty = CORS off. */
    corsOrigins: readonly string[];
  };
  run: {
    /** Hard limit per run, counted from spawn. */
    maxRuntimeMs: number;
    /** Kill the run when the provider prints nothing for this long; 0 = off. */
    idleTimeoutMs: number;
    /** SIGTERM -> SIGKILL grace for the provider's process group. */
    killGraceMs: number;
    /** How long after a run's end, and between sweeps, its id is looked for in /proc (orphan-sweeper.ts). */
    orphanSweepMs: number;
    /** Longest output line kept; a longer one is cut (a JSON one stays JSON), flagged `truncated`. */
    maxLineBytes: number;
    /** On SIGTERM/SIGINT, how long live runs may go on before they are ended. */
    shutdownGraceMs: number;
    /** Nice value of provider processes (0 = same priority as the runner). */
    providerNice: number;
    /** Fork providers from a small helper process instead of the runner (spawner/spawner.ts). */
    spawnHelper: boolean;
    /** SSE comment written on a stream idle this long, so proxies keep it open; 0 = off. */
    sseHeartbeatMs: number;
  };
  admission: {
    globalLimit: number;
    perUserLimit: number;
    /** 0 = unbounded. */
    maxQueueSize: number;
    /** 0 = unbounded. */
    maxPendingPerUser: number;
  };
  /** FERMILINK_RUNNER_METRICS_TOKEN; null = ops endpoints are public. */
  metricsToken: string | null;
  /** FERMILINK_RUNNER_AUTH_TOKENS; empty = no auth on the main port (FermiLink's contract). */
  authTokens: readonly AuthTokenEntry[];
  agentEnv: AgentEnvPolicy;
  /** FERMILINK_<PROVIDER>_BIN, null when unset. */
  providerBins: Readonly<Record<ProviderId, string | null>>;
  /** FERMILINK_<PROVIDER>_BASE_URL / _API_KEY: the model endpoint each CLI is pointed at. */
  providerEndpoints: Readonly<Record<ProviderId, ProviderEndpoint>>;
  /** Extra variable names passed to the provider (FERMILINK_RUNNER_ENV_PASSTHROUGH). */
  envPassthrough: readonly string[];
  /** The process environment at start-up; providers pick an allowlist from it. */
  hostEnv: Readonly<Record<string, string>>;
  /** FERMILINK_RUNNER_LOG_LEVEL. */
  logLevel: "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";
}
