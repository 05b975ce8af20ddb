/**
 * The table of every `FERMILINK_*` variable the runner reads: name, default
 * and a one-line description. `load-config.ts` parses them; the README's
 * configuration table is written from this one (a test keeps them in sync).
 */
export interface EnvVarSpec {
  name: string;
  /** Default as the user would write it; null = unset. */
  default: string | null;
  description: string;
}

/** Every variable, in README order. */
export const ENV_SPECS: readonly EnvVarSpec[] = [
  {
    name: "FERMILINK_HOME",
    default: "~/.fermilink",
    description: "Base directory for the default roots and agent_runtime.json.",
  },
  {
    name: "FERMILINK_WORKSPACES_ROOT",
    default: "$FERMILINK_HOME/workspaces",
    description: "Session workspaces (one directory per session id).",
  },
  {
    name: "FERMILINK_RUNNER_SPARE_WORKSPACES",
    default: "$FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS",
    description:
      "New-session directories kept ready under the workspaces root (in .runner-spares/, made before the server listens, then while the file-system worker is idle): a new session on the built-in template renames one into place instead of creating its files while its caller waits (0-10000; 0 = off).",
  },
  {
    name: "FERMILINK_RUNNER_WARMUP_REQUESTS",
    default: "1000",
    description:
      "Requests the runner sends itself on a private loopback port before it listens (a health check and run requests refused by their contents: nothing is admitted, stored or counted), so that V8 has compiled its request path when the first callers come; about 0.8 s of start-up on 2 cores (0-100000; 0 = off).",
  },
  {
    name: "FERMILINK_SCIPKG_ROOT",
    default: "$FERMILINK_HOME/scientific_packages",
    description:
      "Scientific package registry root (FERMILINK_SCIENTIFIC_PACKAGES_ROOT is the fallback name).",
  },
  {
    name: "FERMILINK_SCIPKG_ACTIVE",
    default: null,
    description: "Overrides the registry's active package.",
  },
  {
    name: "FERMILINK_RUNNER_PROVIDER_NICE",
    default: "10",
    description:
      "Nice value of provider processes and their scheduler autogroups (0-19; 0 = the runner's priority), from the third live provider on (one or two run at full priority; the spawn helper then renices them): the runner stays responsive while many CLIs run.",
  },
  {
    name: "FERMILINK_RUNNER_SPAWN_HELPER",
    default: "1",
    description:
      "1: providers are forked by a small helper process, so the runner's event loop never blocks on a fork; 0: the runner forks them itself.",
  },
  {
    name: "FERMILINK_RUNNER_CORS_ORIGINS",
    default: null,
    description:
      "Comma-separated browser origins allowed to call the main port (Connect-Web, EventSource), or `*`; unset = CORS off.",
  },
  {
    name: "FERMILINK_RUNNER_STORE_PATH",
    default: "$FERMILINK_HOME/runner/runs.sqlite3",
    description:
      "SQLite file of the run store (runs and every event, for Attach, resume and ListRuns).",
  },
  {
    name: "FERMILINK_RUNNER_RUN_RETENTION_HOURS",
    default: "168",
    description:
      "Finished runs older than this are deleted from the run store (> 0; decimals allowed).",
  },
  {
    name: "FERMILINK_RUNNER_STORE_MAX_MB",
    default: "1024",
    description:
      "When stored events exceed this many MiB, the oldest finished runs are deleted first.",
  },
  {
    name: "FERMILINK_MAXWELLLINK_ROOT",
    default: "<project root>/maxwelllink",
    description:
      "Legacy MaxwellLink checkout; when it is a directory it is registered as a package (registry.json is written only when that changes something).",
  },
  {
    name: "FERMILINK_LEGACY_MAXWELLLINK_PACKAGE_ID",
    default: "maxwelllink-local",
    description: "Package id the legacy MaxwellLink checkout is registered under.",
  },
  {
    name: "FERMILINK_SOFTWARE_ROOT",
    default: "/opt/software",
    description:
      "Template tree copied into a new session repo; the built-in template is used when it does not exist.",
  },
  {
    name: "FERMILINK_RUNNER_HOST",
    default: "127.0.0.1",
    description: "Address of the main listener (Connect, gRPC, gRPC-Web, SSE, ops).",
  },
  {
    name: "FERMILINK_RUNNER_PORT",
    default: "8000",
    description: "Port of the main listener (0 = any free port).",
  },
  {
    name: "FERMILINK_RUNNER_METRICS_HOST",
    default: "127.0.0.1",
    description: "Address of the Prometheus metrics listener.",
  },
  {
    name: "FERMILINK_RUNNER_METRICS_PORT",
    default: "9464",
    description: "Port of the metrics listener (0 = any free port).",
  },
  {
    name: "FERMILINK_RUNNER_MAX_RUNTIME_SECONDS",
    default: "600",
    description: "Hard limit per run, counted from the provider's spawn (> 0).",
  },
  {
    name: "FERMILINK_RUNNER_IDLE_TIMEOUT_SECONDS",
    default: "0",
    description: "End a run whose provider prints nothing for this long (0 = off).",
  },
  {
    name: "FERMILINK_RUNNER_KILL_GRACE_SECONDS",
    default: "5",
    description: "Grace between SIGTERM and SIGKILL to the provider's process group.",
  },
  {
    name: "FERMILINK_RUNNER_ORPHAN_SWEEP_SECONDS",
    default: "10",
    description:
      "After a run ends, its run id is looked for in /proc this long later and once more after as long again; processes that left the provider's group and still carry it are killed (> 0).",
  },
  {
    name: "FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS",
    default: "10",
    description:
      "On SIGTERM/SIGINT, how long live runs may continue before they end with reason shutdown.",
  },
  {
    name: "FERMILINK_RUNNER_SSE_HEARTBEAT_SECONDS",
    default: "15",
    description:
      "SSE comment line written on a stream idle this long, so proxies keep it open (0 = off).",
  },
  {
    name: "FERMILINK_RUNNER_MAX_LINE_BYTES",
    default: "8388608",
    description:
      "Longest provider output line kept (65536-268435456); longer lines are cut and flagged truncated (a JSON line stays JSON: its long strings are shortened and marked).",
  },
  {
    name: "FERMILINK_RUNNER_SUBPROCESS_STREAM_LIMIT",
    default: "1048576",
    description:
      "Accepted for FermiLink compatibility (>= 65536); no effect, lines have no small limit here.",
  },
  {
    name: "FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS",
    default: "200",
    description: "Active runs at once (1-4294967295).",
  },
  {
    name: "FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS",
    default: "10",
    description: "Active runs per user key (1-4294967295).",
  },
  {
    name: "FERMILINK_RUNNER_MAX_QUEUE_SIZE",
    default: "2000",
    description: "Waiting runs in all (0-4294967295; 0 = unbounded).",
  },
  {
    name: "FERMILINK_RUNNER_MAX_PENDING_PER_USER",
    default: "10",
    description: "Waiting runs per user key (0-4294967295; 0 = unbounded).",
  },
  {
    name: "FERMILINK_RUNNER_METRICS_TOKEN",
    default: null,
    description:
      "When set, /ops/* and OpsService require header X-Runner-Metrics-Token, and /metrics that header or Authorization: Bearer.",
  },
  {
    name: "FERMILINK_RUNNER_AUTH_TOKENS",
    default: null,
    description:
      "Comma-separated service:<token> (may name any user) and user:<user_id>:<token> (that user only) entries, tokens of 16+ characters; when set, the main port's runs, /runs, /packages, RunService and PackageService require Authorization: Bearer <token>. Unset = no auth.",
  },
  {
    name: "FERMILINK_RUNNER_ENV_PASSTHROUGH",
    default: null,
    description:
      "Comma-separated extra variable names passed to the provider (never FERMILINK_RUNNER_*).",
  },
  {
    name: "FERMILINK_RUNNER_LOG_LEVEL",
    default: "info",
    description: "trace, debug, info, warn, error, fatal or silent.",
  },
  {
    name: "FERMILINK_AGENT_PROVIDER",
    default: "codex",
    description: "Provider: codex, claude, gemini or opencode (beats agent_runtime.json).",
  },
  { name: "FERMILINK_AGENT_SANDBOX_POLICY", default: "enforce", description: "enforce or bypass." },
  {
    name: "FERMILINK_AGENT_SANDBOX_MODE",
    default: "workspace-write",
    description: "Sandbox mode under enforce (read-only, workspace-write, ...).",
  },
  { name: "FERMILINK_AGENT_MODEL", default: null, description: "Model passed to the provider." },
  {
    name: "FERMILINK_AGENT_REASONING_EFFORT",
    default: null,
    description: "low, medium, high or xhigh.",
  },
  {
    name: "FERMILINK_CODEX_BASE_URL",
    default: null,
    description:
      "Codex's model endpoint: OpenAI Responses API base, e.g. http://host/v1 (a custom codex model provider). No user:password@ and no ?query: codex gets it on its command line.",
  },
  {
    name: "FERMILINK_CODEX_API_KEY",
    default: null,
    description: "Codex's API key for that endpoint (never logged; reaches only that provider).",
  },
  {
    name: "FERMILINK_OPENAI_API_KEY",
    default: null,
    description:
      "Promoted to codex's OPENAI_API_KEY when that is unset (FermiLink's rules: not in a stored-login mode, placeholders dropped).",
  },
  {
    name: "FERMILINK_CODEX_AUTH_MODE",
    default: null,
    description:
      "CODEX_AUTH_MODE for codex; login, oauth, keychain or stored removes every API key so codex uses its stored login.",
  },
  {
    name: "FERMILINK_CODEX_HOME",
    default: null,
    description:
      "Codex's CODEX_HOME when that is unset (made absolute); unset: a per-session home.",
  },
  {
    name: "FERMILINK_CLAUDE_BASE_URL",
    default: null,
    description:
      "Claude Code's model endpoint: Anthropic API base without /v1 (ANTHROPIC_BASE_URL).",
  },
  {
    name: "FERMILINK_CLAUDE_API_KEY",
    default: null,
    description:
      "Claude Code's API key for that endpoint (never logged; reaches only that provider).",
  },
  {
    name: "FERMILINK_GEMINI_BASE_URL",
    default: null,
    description:
      "Gemini CLI's model endpoint: Gemini API base without /v1beta (GOOGLE_GEMINI_BASE_URL).",
  },
  {
    name: "FERMILINK_GEMINI_API_KEY",
    default: null,
    description:
      "Gemini CLI's API key for that endpoint (never logged; reaches only that provider).",
  },
  {
    name: "FERMILINK_OPENCODE_BASE_URL",
    default: null,
    description:
      "opencode's model endpoint: OpenAI-compatible Chat Completions base, e.g. http://host/v1.",
  },
  {
    name: "FERMILINK_OPENCODE_API_KEY",
    default: null,
    description: "opencode's API key for that endpoint (never logged; reaches only that provider).",
  },
  {
    name: "FERMILINK_CODEX_BIN",
    default: "codex",
    description: "Codex binary (path or name); unset: the project's node_modules/.bin, then PATH.",
  },
  {
    name: "FERMILINK_CLAUDE_BIN",
    default: "claude",
    description: "Claude Code binary; unset: node_modules/.bin, then PATH.",
  },
  {
    name: "FERMILINK_GEMINI_BIN",
    default: "gemini",
    description: "Gemini CLI binary; unset: node_modules/.bin, then PATH.",
  },
  {
    name: "FERMILINK_OPENCODE_BIN",
    default: "opencode",
    description:
      "opencode binary; unset: node_modules/.bin, then the binary of the opencode-linux-x64 (or -arm64) package there, then PATH.",
  },
];
