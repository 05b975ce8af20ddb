import { existsSync, statSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import type { AuthTokenEntry } from "../auth/auth-tokens.js";
import { parseAuthTokens } from "../auth/auth-tokens.js";
import { tryNormalizePackageId } from "../packages/package-id.js";
import { PROJECT_ROOT } from "../project-root.js";
import type { AgentEnvPolicy, Config, ProviderEndpoint } from "./config.js";
import { isProviderId, PROVIDER_IDS, type ProviderId, REASONING_EFFORTS } from "./providers.js";

/** Thrown when the environment is invalid; the message lists every problem at once. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.problems = problems;
  }
}

type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

/**
 * The largest admission limit or queue size: OpsService reports them as
 * uint32, and a larger value fails every GetConcurrency/GetAdmission call.
 */
const UINT32_MAX = 4_294_967_295;

/** The longest a node timer can wait (2^31-1 ms), in whole seconds: about 24.8 days. */
const TIMER_MAX_SECONDS = 2_147_483;

/** Spellings of a switch: FermiLink's (Python) boolean settings take these, in any case. */
const FLAG_TRUE = new Set(["1", "true", "yes", "on"]);
const FLAG_FALSE = new Set(["0", "false", "no", "off"]);

/**
 * Providers whose CLI gets its base URL in argv (codex: `--config
 * model_providers…base_url=…`, src/providers/codex/command.ts). The others
 * get it only in their environment (ANTHROPIC_BASE_URL, GOOGLE_GEMINI_BASE_URL,
 * opencode's OPENCODE_CONFIG_CONTENT), which only the runner's own user can read.
 */
const BASE_URL_IN_ARGV: ReadonlySet<ProviderId> = new Set(["codex"]);

/** Addresses that listen on every interface: a port there is taken on all of them. */
const WILDCARD_HOSTS = new Set(["0.0.0.0", "::"]);

/** Reads variables, collecting every problem instead of stopping at the first. */
class EnvReader {
  readonly problems: string[] = [];
  constructor(private readonly env: Env) {}

  /**
   * An http(s) URL (a model endpoint), without a trailing slash; null when
   * unset. `argvOf`: the CLI that gets this URL in its argv, which any user of
   * the host can read (`ps`), so a password or token in it is refused.
   */
  httpUrl(name: string, opts: { argvOf?: string } = {}): string | null {
    const raw = this.str(name);
    if (raw === null) return null;
    // Credentials and query values (?api-key=...) masked in any problem: the message goes to
    // stderr and the service's log.
    const shown = raw
      .replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#\\]*@/i, "$1***@")
      .replace(/([?&])([^=&#]*=)?[^&#]*/g, "$1$2***");
    const keyVar = name.replace(/_BASE_URL$/, "_API_KEY");
    try {
      const u = new URL(raw);
      if (opts.argvOf !== undefined && (u.username !== "" || u.password !== "")) {
        this.problems.push(
          `${name}=${JSON.stringify(shown)} has credentials (user:password@): ${opts.argvOf} gets this URL on its command line, which any user of the host can read (ps). Give the key in ${keyVar} instead.`,
        );
        return null;
      }
      // Any query, not only one that looks like a key: codex appends its path to the URL as a
      // string (it requests /v1?k=v/responses), so no query works there anyway.
      if (opts.argvOf !== undefined && u.href.split("#", 1)[0]?.includes("?")) {
        this.problems.push(
          `${name}=${JSON.stringify(shown)} has a query string (?...): ${opts.argvOf} gets this URL on its command line, which any user of the host can read (ps), and appends its own path after the query, so no request would reach the endpoint. Give the key in ${keyVar} instead, and the URL without a query.`,
        );
        return null;
      }
      if (u.protocol === "http:" || u.protocol === "https:") return raw.replace(/\/+$/, "");
    } catch {
      // reported below
    }
    this.problems.push(`${name}=${JSON.stringify(shown)} is not an http(s) URL.`);
    return null;
  }

  /** Comma-separated browser origins (`scheme://host[:port]`) or `*`; unset = none. */
  origins(name: string): string[] {
    const raw = this.str(name);
    if (raw === null) return [];
    const out: string[] = [];
    for (const part of raw
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean)) {
      if (part === "*") {
        out.push(part);
        continue;
      }
      let origin: string | null = null;
      try {
        const u = new URL(part);
        if ((u.protocol === "http:" || u.protocol === "https:") && u.origin === part) origin = part;
      } catch {
        origin = null;
      }
      if (origin === null) {
        this.problems.push(
          `${name} has ${JSON.stringify(part)}, which is not an origin like https://app.example.com or http://localhost:5173 (no path, no trailing slash).`,
        );
      } else out.push(origin);
    }
    return out;
  }

  /** A package id, normalised as FermiLink does; one that normalises to nothing is a problem. */
  packageId(name: string, fallback: string): string {
    const raw = this.str(name);
    if (raw === null) return fallback;
    const id = tryNormalizePackageId(raw);
    if (id === null) {
      this.problems.push(`${name}=${JSON.stringify(raw)} is not a usable package id.`);
      return fallback;
    }
    return id;
  }

  /** True when `name`'s value was refused (the default stands in for it). */
  refused(name: string): boolean {
    return this.problems.some((p) => p.startsWith(`${name}=`));
  }

  /** Trimmed value, or null when unset or blank (FermiLink treats blank as unset). */
  str(name: string): string | null {
    const raw = this.env[name];
    if (raw === undefined) return null;
    const trimmed = raw.trim();
    return trimmed === "" ? null : trimmed;
  }

  int(name: string, def: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
    const raw = this.str(name);
    if (raw === null) return def;
    if (!/^[+-]?\d+$/.test(raw)) {
      this.problems.push(`${name}=${JSON.stringify(raw)} is not an integer.`);
      return def;
    }
    const value = Number(raw);
    // `-0` is 0 to Number: FERMILINK_RUNNER_PORT=-0 was taken as "any free port".
    const signed = min >= 0 && raw.startsWith("-");
    if (signed || value < min || value > max) {
      // No made-up upper bound in the message when there is none to speak of.
      const range =
        max === Number.MAX_SAFE_INTEGER && value <= min
          ? `at least ${min}`
          : `between ${min} and ${max}`;
      const how = signed && value >= min ? ", without a minus sign" : "";
      this.problems.push(`${name}=${raw} must be ${range}${how}.`);
      return def;
    }
    return value;
  }

  /** A switch (`FLAG_TRUE` / `FLAG_FALSE`); `def` when unset. */
  flag(name: string, def: boolean): boolean {
    const raw = this.str(name);
    if (raw === null) return def;
    const v = raw.toLowerCase();
    if (FLAG_TRUE.has(v)) return true;
    if (FLAG_FALSE.has(v)) return false;
    this.problems.push(
      `${name}=${JSON.stringify(raw)} must be 1 or 0 (also true/false, yes/no, on/off).`,
    );
    return def;
  }

  /**
   * A decimal number of seconds (or hours), in milliseconds (tests use
   * fractions). A value that rounds to 0 ms counts as 0; `max` (in the same
   * unit) bounds a timer (node's timers hold at most 2^31-1 ms and fire at
   * once beyond it).
   */
  secondsMs(
    name: string,
    def: number,
    opts: { allowZero: boolean; unit?: "seconds" | "hours"; max?: number },
  ): number {
    const unit = opts.unit ?? "seconds";
    // Rounded in milliseconds, not in the unit: 0.0004 hours is 1.44 s, not 0.
    const unitMs = unit === "hours" ? 3_600_000 : 1000;
    const raw = this.str(name);
    if (raw === null) return def * unitMs;
    const value = /^\+?\d+(\.\d+)?$/.test(raw) ? Number(raw) : Number.NaN;
    const ms = Math.round(value * unitMs);
    if (
      Number.isNaN(ms) ||
      (!opts.allowZero && ms === 0) ||
      (opts.max !== undefined && value > opts.max)
    ) {
      const rule = `a decimal number of ${unit} ${opts.allowZero ? ">= 0" : "> 0"}`;
      const bound = opts.max === undefined ? "" : `, at most ${opts.max}`;
      this.problems.push(`${name}=${JSON.stringify(raw)} must be ${rule}${bound}.`);
      return def * unitMs;
    }
    return ms;
  }

  /** `secondsMs` for a value that becomes a node timer: at most TIMER_MAX_SECONDS. */
  timerMs(name: string, defSeconds: number, opts: { allowZero: boolean }): number {
    return this.secondsMs(name, defSeconds, { ...opts, max: TIMER_MAX_SECONDS });
  }

  oneOf<T extends string>(name: string, allowed: readonly T[]): T | null {
    const raw = this.str(name)?.toLowerCase() ?? null;
    if (raw === null) return null;
    if ((allowed as readonly string[]).includes(raw)) return raw as T;
    this.problems.push(`${name}=${JSON.stringify(raw)} must be one of: ${allowed.join(", ")}.`);
    return null;
  }

  host(name: string, def: string): string {
    const raw = this.str(name) ?? def;
    if (!/^[A-Za-z0-9.:_-]+$/.test(raw))
      this.problems.push(`${name}=${JSON.stringify(raw)} is not a host name or address.`);
    return raw;
  }
}

function expandHome(p: string): string {
  return p === "~" || p.startsWith("~/") ? path.join(homedir(), p.slice(1)) : p;
}

function readAgentEnv(r: EnvReader): AgentEnvPolicy {
  const providerRaw = r.str("FERMILINK_AGENT_PROVIDER")?.toLowerCase() ?? null;
  let provider: ProviderId | null = null;
  if (providerRaw !== null) {
    if (isProviderId(providerRaw)) provider = providerRaw;
    else
      r.problems.push(
        `FERMILINK_AGENT_PROVIDER=${JSON.stringify(providerRaw)} must be one of: ${PROVIDER_IDS.join(", ")}.`,
      );
  }
  return {
    provider,
    sandboxPolicy: r.oneOf("FERMILINK_AGENT_SANDBOX_POLICY", ["enforce", "bypass"] as const),
    sandboxMode: r.str("FERMILINK_AGENT_SANDBOX_MODE")?.toLowerCase() ?? null,
    model: r.str("FERMILINK_AGENT_MODEL"),
    reasoningEffort: r.oneOf("FERMILINK_AGENT_REASONING_EFFORT", REASONING_EFFORTS),
  };
}

function readAuthTokens(r: EnvReader): AuthTokenEntry[] {
  const name = "FERMILINK_RUNNER_AUTH_TOKENS";
  const raw = r.str(name);
  if (raw === null) return [];
  const { entries, problems } = parseAuthTokens(name, raw);
  r.problems.push(...problems);
  return entries;
}

function readPassthrough(r: EnvReader): string[] {
  const raw = r.str("FERMILINK_RUNNER_ENV_PASSTHROUGH");
  if (raw === null) return [];
  const names = raw
    .split(",")
    .map((n) => n.trim())
    .filter((n) => n !== "");
  for (const n of names) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(n))
      r.problems.push(
        `FERMILINK_RUNNER_ENV_PASSTHROUGH: ${JSON.stringify(n)} is not a variable name.`,
      );
    else if (n.startsWith("FERMILINK_RUNNER_"))
      r.problems.push(
        `FERMILINK_RUNNER_ENV_PASSTHROUGH: ${n} is a runner secret and is never passed to the provider.`,
      );
  }
  return names;
}

/** True when `p` is an existing directory (false when it cannot be looked at). */
function isDirectory(p: string): boolean {
  try {
    return statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
  } catch {
    return false;
  }
}

/**
 * A directory the runner creates and writes under (`dir`, set by `name` or
 * derived from FERMILINK_HOME): a problem when it, or the nearest part of it
 * that exists, is not a directory. The server would start, and every run fail.
 */
function checkDirectory(r: EnvReader, name: string, dir: string): void {
  const setBy = r.str(name) === null ? `${name} (unset: under FERMILINK_HOME)` : name;
  for (let p = dir; ; p = path.dirname(p)) {
    let info: ReturnType<typeof statSync>;
    try {
      info = statSync(p, { throwIfNoEntry: false });
    } catch (err) {
      // ENOTDIR: a part above is a file, found further up. Anything else is not ours to judge.
      if ((err as NodeJS.ErrnoException).code === "ENOTDIR") continue;
      return;
    }
    if (info !== undefined) {
      if (!info.isDirectory()) {
        const what =
          p === dir
            ? `${dir} is not a directory`
            : `${dir} cannot be made: ${p} is not a directory`;
        r.problems.push(`${setBy}: ${what}.`);
      }
      return;
    }
    if (path.dirname(p) === p) return;
  }
}

/**
 * The main and metrics listeners on one port: the second would find it taken
 * and start-up would blame "the process that holds it", which is this one.
 */
function checkPortsApart(r: EnvReader, s: Config["server"]): void {
  if (s.port === 0 || s.port !== s.metricsPort) return;
  // A refused value is reported already; its default clashing would only confuse.
  if (r.refused("FERMILINK_RUNNER_PORT") || r.refused("FERMILINK_RUNNER_METRICS_PORT")) return;
  const overlap =
    s.host === s.metricsHost || WILDCARD_HOSTS.has(s.host) || WILDCARD_HOSTS.has(s.metricsHost);
  if (!overlap) return;
  r.problems.push(
    `FERMILINK_RUNNER_PORT and FERMILINK_RUNNER_METRICS_PORT are both ${s.port} (FERMILINK_RUNNER_HOST=${s.host}, FERMILINK_RUNNER_METRICS_HOST=${s.metricsHost}): the main and metrics listeners each need a port of their own, or addresses apart.`,
  );
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Parse and validate the whole environment once. Throws `ConfigError` listing
 * every invalid variable; on success returns a deep-frozen `Config`.
 */
export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): Config {
  const r = new EnvReader(env);
  const abs = (p: string) => path.resolve(cwd, expandHome(p));
  const home = abs(r.str("FERMILINK_HOME") ?? "~/.fermilink");
  const softwareRootRaw = abs(r.str("FERMILINK_SOFTWARE_ROOT") ?? "/opt/software");
  const softwareRoot =
    existsSync(softwareRootRaw) && statSync(softwareRootRaw).isDirectory() ? softwareRootRaw : null;
  const providerBins = Object.fromEntries(
    PROVIDER_IDS.map((id) => [id, r.str(`FERMILINK_${id.toUpperCase()}_BIN`)]),
  ) as Record<ProviderId, string | null>;
  r.int("FERMILINK_RUNNER_SUBPROCESS_STREAM_LIMIT", 1_048_576, 65_536);

  const hostEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) hostEnv[k] = v;

  const globalLimit = r.int("FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS", 200, 1, UINT32_MAX);
  const config: Config = {
    home,
    workspacesRoot: abs(r.str("FERMILINK_WORKSPACES_ROOT") ?? path.join(home, "workspaces")),
    // As many as can start at once: a burst of new sessions up to the run limit finds one each.
    spareWorkspaces: r.int(
      "FERMILINK_RUNNER_SPARE_WORKSPACES",
      Math.min(globalLimit, 10_000),
      0,
      10_000,
    ),
    warmUpRequests: r.int("FERMILINK_RUNNER_WARMUP_REQUESTS", 1000, 0, 100_000),
    scipkgRoot: abs(
      r.str("FERMILINK_SCIPKG_ROOT") ??
        r.str("FERMILINK_SCIENTIFIC_PACKAGES_ROOT") ??
        path.join(home, "scientific_packages"),
    ),
    scipkgActive: r.str("FERMILINK_SCIPKG_ACTIVE"),
    store: {
      path: abs(r.str("FERMILINK_RUNNER_STORE_PATH") ?? path.join(home, "runner", "runs.sqlite3")),
      retentionMs: r.secondsMs("FERMILINK_RUNNER_RUN_RETENTION_HOURS", 168, {
        allowZero: false,
        unit: "hours",
      }),
      maxBytes: r.int("FERMILINK_RUNNER_STORE_MAX_MB", 1024, 1) * 1024 * 1024,
    },
    legacyMaxwellLink: {
      // FermiLink resolves its legacy MaxwellLink default against its own checkout.
      root: abs(r.str("FERMILINK_MAXWELLLINK_ROOT") ?? path.join(PROJECT_ROOT, "maxwelllink")),
      packageId: r.packageId("FERMILINK_LEGACY_MAXWELLLINK_PACKAGE_ID", "maxwelllink-local"),
    },
    softwareRoot,
    agentRuntimeFile: path.join(home, "agent_runtime.json"),
    server: {
      host: r.host("FERMILINK_RUNNER_HOST", "127.0.0.1"),
      port: r.int("FERMILINK_RUNNER_PORT", 8000, 0, 65535),
      metricsHost: r.host("FERMILINK_RUNNER_METRICS_HOST", "127.0.0.1"),
      metricsPort: r.int("FERMILINK_RUNNER_METRICS_PORT", 9464, 0, 65535),
      corsOrigins: r.origins("FERMILINK_RUNNER_CORS_ORIGINS"),
    },
    run: {
      maxRuntimeMs: r.timerMs("FERMILINK_RUNNER_MAX_RUNTIME_SECONDS", 600, { allowZero: false }),
      idleTimeoutMs: r.timerMs("FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS", 0, { allowZero: true }),
      killGraceMs: r.timerMs("FERMILINK_RUNNER_KILL_GRACE_SECONDS", 5, { allowZero: true }),
      orphanSweepMs: r.timerMs("FERMILINK_RUNNER_ORPHAN_SWEEP_SECONDS", 10, { allowZero: false }),
      maxLineBytes: r.int(
        "FERMILINK_RUNNER_MAX_LINE_BYTES",
        8 * 1024 * 1024,
        65_536,
        256 * 1024 * 1024,
      ),
      providerNice: r.int("FERMILINK_RUNNER_PROVIDER_NICE", 10, 0, 19),
      spawnHelper: r.flag("FERMILINK_RUNNER_SPAWN_HELPER", true),
      sseHeartbeatMs: r.timerMs("FERMILINK_RUNNER_SSE_HEARTBEAT_SECONDS", 15, { allowZero: true }),
      shutdownGraceMs: r.timerMs("FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS", 10, {
        allowZero: true,
      }),
    },
    admission: {
      globalLimit,
      perUserLimit: r.int("FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS", 10, 1, UINT32_MAX),
      maxQueueSize: r.int("FERMILINK_RUNNER_MAX_QUEUE_SIZE", 2000, 0, UINT32_MAX),
      maxPendingPerUser: r.int("FERMILINK_RUNNER_MAX_PENDING_PER_USER", 10, 0, UINT32_MAX),
    },
    // Its old name too (spec §7.3), as FermiLink reads it: a deployment that still sets only
    // that must not find its /ops endpoints public after the switch.
    metricsToken: r.str("FERMILINK_RUNNER_METRICS_TOKEN") ?? r.str("RUNNER_METRICS_TOKEN"),
    authTokens: readAuthTokens(r),
    agentEnv: readAgentEnv(r),
    providerBins,
    providerEndpoints: Object.fromEntries(
      PROVIDER_IDS.map((id) => [
        id,
        {
          baseUrl: r.httpUrl(`FERMILINK_${id.toUpperCase()}_BASE_URL`, {
            argvOf: BASE_URL_IN_ARGV.has(id) ? id : undefined,
          }),
          apiKey: r.str(`FERMILINK_${id.toUpperCase()}_API_KEY`),
        },
      ]),
    ) as Record<ProviderId, ProviderEndpoint>,
    envPassthrough: readPassthrough(r),
    hostEnv,
    logLevel: r.oneOf("FERMILINK_RUNNER_LOG_LEVEL", LOG_LEVELS) ?? "info",
  };
  checkDirectory(r, "FERMILINK_WORKSPACES_ROOT", config.workspacesRoot);
  // The legacy MaxwellLink registration writes registry.json there; a file there would leave
  // every run without packages, with nothing but a warning in the log.
  checkDirectory(
    r,
    r.str("FERMILINK_SCIPKG_ROOT") === null && r.str("FERMILINK_SCIENTIFIC_PACKAGES_ROOT") !== null
      ? "FERMILINK_SCIENTIFIC_PACKAGES_ROOT"
      : "FERMILINK_SCIPKG_ROOT",
    config.scipkgRoot,
  );
  checkPortsApart(r, config.server);
  if (isDirectory(config.store.path)) {
    r.problems.push(
      `FERMILINK_RUNNER_STORE_PATH: ${config.store.path} is a directory; it names the run store's SQLite file.`,
    );
  } else {
    checkDirectory(r, "FERMILINK_RUNNER_STORE_PATH", path.dirname(config.store.path));
  }
  if (r.problems.length > 0) throw new ConfigError(r.problems);
  return deepFreeze(config);
}
