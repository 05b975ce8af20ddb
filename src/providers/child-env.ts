/**
 * The provider child's environment is built from an allowlist, never copied
 * whole (spec §10 item 4: FermiLink hands the agent the full runner env, so
 * the metrics token, cloud credentials and other vendors' keys leak to it).
 *
 * The mechanism here is provider-independent; each adapter supplies only data
 * (`ProviderEnvVars`) and, for codex, a rewrite step (`codex/env.ts`).
 *
 * Result contract (stable and ordering-independent): a variable is kept iff
 * its name is in the base allowlist, matches the active provider's names or
 * prefixes, or is listed in the pass-through, and it is not a runner secret.
 * Its value is the host value unchanged. The keys of the returned object are
 * sorted (UTF-16 code-unit order), so neither the host's key order nor the
 * pass-through list's order changes the result.
 */

/** Which host variables belong to one provider. */
export interface ProviderEnvVars {
  /** Name prefixes, e.g. `CODEX_`. */
  readonly prefixes: readonly string[];
  /** Exact names, e.g. `GOOGLE_API_KEY`. */
  readonly names: readonly string[];
}

/** Variables every CLI needs to run at all: paths, identity, locale, TLS trust, proxies. */
export const BASE_ENV_NAMES: readonly string[] = Object.freeze([
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "SHELL",
  "LANG",
  "LANGUAGE",
  "TZ",
  "TMPDIR",
  "TERM",
  "NO_COLOR",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "NODE_EXTRA_CA_CERTS",
  "http_proxy",
  "https_proxy",
  "no_proxy",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
]);

/** Prefixes of the base allowlist (the locale categories `LC_ALL`, `LC_CTYPE`, …). */
export const BASE_ENV_PREFIXES: readonly string[] = Object.freeze(["LC_"]);

/** The runner's own secrets and settings: the metrics token, auth tokens (spec §7.3). */
const RUNNER_SECRET_PREFIX = "FERMILINK_RUNNER_";
/** The metrics token's old name (spec §7.3), still read by FermiLink deployments. */
const LEGACY_RUNNER_SECRETS: ReadonlySet<string> = new Set(["RUNNER_METRICS_TOKEN"]);

/**
 * True for a name that must never reach a provider, whatever the admin lists
 * in the pass-through (design §3: "Runner secrets never reach it").
 */
export function isRunnerSecretName(name: string): boolean {
  return name.startsWith(RUNNER_SECRET_PREFIX) || LEGACY_RUNNER_SECRETS.has(name);
}

function matches(name: string, names: readonly string[], prefixes: readonly string[]): boolean {
  return names.includes(name) || prefixes.some((p) => name.startsWith(p));
}

/** A copy of `env` with its keys in sorted order (the documented stable form). */
export function sortEnv(env: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of Object.keys(env).sort()) {
    const value = env[key];
    if (value !== undefined) out[key] = value;
  }
  return out;
}

/**
 * Pick the allowlisted variables from the host env for the active provider.
 * Provider-specific rewrites (codex §7.1) run on the result afterwards.
 */
export function pickChildEnv(
  hostEnv: Readonly<Record<string, string>>,
  provider: ProviderEnvVars,
  envPassthrough: readonly string[],
): Record<string, string> {
  const picked: Record<string, string> = {};
  for (const name of Object.keys(hostEnv)) {
    if (isRunnerSecretName(name)) continue;
    const value = hostEnv[name];
    if (typeof value !== "string") continue;
    const allowed =
      matches(name, BASE_ENV_NAMES, BASE_ENV_PREFIXES) ||
      matches(name, provider.names, provider.prefixes) ||
      envPassthrough.includes(name);
    if (allowed) picked[name] = value;
  }
  return sortEnv(picked);
}
