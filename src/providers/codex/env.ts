/**
 * Codex's part of the child environment: its own variables and FermiLink's
 * key-handling rules (spec §7.1), applied to codex only (FermiLink ran the
 * codex sanitiser for every provider: spec §10 item 4).
 */
import path from "node:path";
import { type ProviderEnvVars, sortEnv } from "../child-env.js";

/** Codex reads `CODEX_*` and the OpenAI client's `OPENAI_*`. */
export const CODEX_ENV_VARS: ProviderEnvVars = Object.freeze({
  prefixes: Object.freeze(["CODEX_", "OPENAI_"]),
  names: Object.freeze([]),
});

/** FermiLink's prefixed names and the native names they stand for (spec §7.1 step 1). */
const PROMOTIONS: readonly (readonly [prefixed: string, native: string])[] = [
  ["FERMILINK_CODEX_AUTH_MODE", "CODEX_AUTH_MODE"],
  ["FERMILINK_CODEX_API_KEY", "CODEX_API_KEY"],
  ["FERMILINK_OPENAI_API_KEY", "OPENAI_API_KEY"],
];

/** The four key variables §7.1 step 2 removes together. */
const KEY_NAMES: readonly string[] = [
  "FERMILINK_CODEX_API_KEY",
  "FERMILINK_OPENAI_API_KEY",
  "CODEX_API_KEY",
  "OPENAI_API_KEY",
];

/** Auth modes meaning "use codex's stored login, not a key" (spec §7.1, §7.2). */
const STORED_LOGIN_MODES: ReadonlySet<string> = new Set(["login", "oauth", "keychain", "stored"]);

/**
 * True for the sample values FermiLink's docs ship (spec §7.1). FermiLink
 * lists `YOUR_KEY*HERE` literally; it is read here as the glob it was meant
 * to be, which also covers the literal and `YOUR_KEY_HERE`.
 */
export function isPlaceholderKey(value: string): boolean {
  const v = value.trim();
  return v === "YOUR_REAL_OPENAI_API_KEY" || v === "CHANGEME" || /^YOUR_KEY.*HERE$/s.test(v);
}

/** `value` unless it is unset or blank (FermiLink's `not env.get(name)`), else `null`. */
function present(value: string | undefined): string | null {
  return value === undefined || value.trim() === "" ? null : value;
}

function isKeyName(name: string): boolean {
  return KEY_NAMES.includes(name);
}

/** `~` and `~/x` against HOME, then relative paths against `cwd` (FermiLink's expanduser + CWD). */
function absoluteHome(raw: string, homeDir: string | undefined, cwd: string): string {
  let p = raw.trim();
  if (homeDir && (p === "~" || p.startsWith("~/"))) p = path.join(homeDir, p.slice(1));
  return path.resolve(cwd, p);
}

/** The codex env and the CODEX_HOME directory the caller must create (null: codex's default). */
export interface CodexEnvResult {
  env: Record<string, string>;
  codexHome: string | null;
}

/**
 * Apply spec §7.1 to the allowlisted env, reading FermiLink's prefixed
 * settings from `hostEnv` (they are runner configuration and do not reach the
 * child under their own names unless the admin passes them through).
 *
 * 1. A prefixed value is copied to its native name only when the native one is
 *    unset (blank counts as unset, and for keys so does a placeholder).
 * 2. Auth mode (`FERMILINK_CODEX_AUTH_MODE`, else `CODEX_AUTH_MODE`)
 *    login/oauth/keychain/stored: all four key names are removed.
 * 3. Otherwise every key is checked, not only the first one found (fix for
 *    spec §10 item 5): each placeholder is dropped on its own, so a real key
 *    is never lost because another variable holds a sample value.
 * 4. CODEX_HOME: the native value is kept when set, else the prefixed one; it
 *    is made absolute. Creating it is I/O, left to the caller (`dirs`).
 */
export function applyCodexEnvRules(
  picked: Readonly<Record<string, string>>,
  hostEnv: Readonly<Record<string, string>>,
  cwd: string = process.cwd(),
): CodexEnvResult {
  const env: Record<string, string> = { ...picked };
  const modeSource = present(hostEnv.FERMILINK_CODEX_AUTH_MODE) ?? present(hostEnv.CODEX_AUTH_MODE);
  const storedLogin = STORED_LOGIN_MODES.has((modeSource ?? "").trim().toLowerCase());

  for (const [prefixed, native] of PROMOTIONS) {
    const value = present(hostEnv[prefixed]);
    if (value === null) continue;
    if (isKeyName(native) && (storedLogin || isPlaceholderKey(value))) continue;
    const current = present(env[native]);
    if (current === null || (isKeyName(native) && isPlaceholderKey(current))) env[native] = value;
  }
  for (const name of KEY_NAMES) {
    const value = env[name];
    if (value !== undefined && (storedLogin || isPlaceholderKey(value))) delete env[name];
  }

  const homeRaw = present(env.CODEX_HOME) ?? present(hostEnv.FERMILINK_CODEX_HOME);
  let codexHome: string | null = null;
  if (homeRaw !== null) {
    codexHome = absoluteHome(homeRaw, hostEnv.HOME, cwd);
    env.CODEX_HOME = codexHome;
    // FermiLink sets both names; keep them in step if the admin passed the prefixed one through.
    if (env.FERMILINK_CODEX_HOME !== undefined) env.FERMILINK_CODEX_HOME = codexHome;
  }
  return { env: sortEnv(env), codexHome };
}
