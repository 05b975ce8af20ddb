import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import type { Config } from "../config/config.js";
import { PROVIDER_IDS, type ProviderId } from "../config/providers.js";
import { PROJECT_BIN_DIR } from "../project-root.js";
import { findWorkingBwrap, NO_BWRAP_CONSEQUENCE } from "../providers/read-only-sandbox.js";
import { getProviderAdapter } from "../providers/registry.js";
import { resolveProviderBinary } from "../providers/resolve-binary.js";
import {
  mergeRuntimePolicy,
  parseAgentRuntimeFile,
  type RuntimePolicy,
} from "../providers/runtime-policy.js";
import { checkProviderVersion } from "../providers/version-check.js";

/**
 * How one line of the report came out: `ok` usable, `warn` usable with a
 * caveat, `missing` not usable, `info` a fact (a path) with nothing to judge.
 */
export type CheckState = "ok" | "warn" | "missing" | "info";

/** One line of the report. */
export interface Check {
  name: string;
  state: CheckState;
  detail: string;
}

/** What `doctor` found. */
export interface DoctorReport {
  checks: Check[];
  /** The policy's provider (as the server would pick it). */
  defaultProvider: ProviderId;
  /** The default provider's CLI and git are usable: the server can run. */
  defaultOk: boolean;
}

/** Whether a line counts as usable. */
export const usable = (c: Check | undefined): boolean => c?.state === "ok" || c?.state === "warn";

/** First non-empty output line of `<bin> <args>`, or null when it could not be run in time. */
function firstLineOf(bin: string, args: string[], pathEnv: string): Promise<string | null> {
  return new Promise((resolve) => {
    // In the temp dir: a tool must not leave files in whatever directory doctor runs from.
    const child = execFile(
      bin,
      args,
      { timeout: 5_000, cwd: tmpdir(), env: { PATH: pathEnv } },
      (err, stdout, stderr) => {
        const first = `${stdout}${stderr}`.split("\n").find((l) => l.trim() !== "");
        resolve(err ? null : (first?.trim() ?? ""));
      },
    );
    child.stdin?.end();
  });
}

/**
 * One provider CLI: resolved exactly as the server resolves it
 * (`FERMILINK_<PROVIDER>_BIN`, then the project's node_modules/.bin, then
 * PATH), then judged by its `--version`. This is the place for further
 * per-provider checks (login state, endpoint reachability): each should turn
 * a problem into `warn` (usable with a caveat) or `missing` (not usable).
 */
export async function checkProvider(config: Config, id: ProviderId): Promise<Check> {
  const adapter = getProviderAdapter(id);
  const name = `${id} CLI`;
  const configured = config.providerBins[id];
  let bin: string;
  try {
    bin = await resolveProviderBinary(adapter, configured, {
      projectBinDir: PROJECT_BIN_DIR,
      pathEnv: config.hostEnv.PATH ?? "",
    });
  } catch {
    // "Set it" is no help when it is set: the value is what needs fixing.
    const detail =
      configured === null
        ? `not found (set ${adapter.binEnvKey})`
        : `not found: ${adapter.binEnvKey}=${configured} is not an executable file${configured.includes("/") ? "" : " on PATH"}`;
    return { name, state: "missing", detail };
  }
  const report = await checkProviderVersion(id, bin, {
    PATH: config.hostEnv.PATH ?? "",
    NO_COLOR: "1",
  });
  if (report.version === null)
    return { name, state: "missing", detail: `${bin} · ${report.message}` };
  return { name, state: report.ok ? "ok" : "warn", detail: `${bin} · ${report.message}` };
}

/** A host tool the runner relies on, judged by whether `<bin> <args>` answers. */
async function checkTool(
  config: Config,
  name: string,
  bin: string,
  args: string[],
  whenMissing: string,
): Promise<Check> {
  const line = await firstLineOf(bin, args, config.hostEnv.PATH ?? "");
  return line === null
    ? { name, state: "missing", detail: `not found on PATH (${whenMissing})` }
    : { name, state: "ok", detail: line };
}

/**
 * The bwrap the server would use for opencode's read-only runs (the system's,
 * else codex's bundled one; codex picks the same way for its own sandbox),
 * tried as the server tries it.
 */
async function checkBwrap(config: Config): Promise<Check> {
  const name = "bubblewrap";
  const found = await findWorkingBwrap(config.hostEnv.PATH ?? "");
  if (found.bin !== null) return { name, state: "ok", detail: `${found.version} · ${found.bin}` };
  const where =
    found.refused.length === 0
      ? "not found on PATH nor in codex's npm package"
      : `not usable here: ${found.refused.join(", ")}`;
  return { name, state: "missing", detail: `${where}; ${NO_BWRAP_CONSEQUENCE}` };
}

/** The admin policy the server would use now: FERMILINK_AGENT_* over agent_runtime.json over defaults. */
async function readPolicy(
  config: Config,
): Promise<{ policy: RuntimePolicy; source: string; warning: string | null }> {
  const text = await readFile(config.agentRuntimeFile, "utf8").catch(() => null);
  const parsed = parseAgentRuntimeFile(text);
  const policy = mergeRuntimePolicy(config.agentEnv, parsed.policy);
  const source =
    config.agentEnv.provider !== null
      ? "FERMILINK_AGENT_PROVIDER"
      : parsed.policy.provider !== undefined
        ? config.agentRuntimeFile
        : "built-in default";
  return { policy, source, warning: parsed.warning };
}

/**
 * What this machine can run: each provider CLI (found the way the server
 * finds it, with its version), git (session repos), bubblewrap (opencode's
 * read-only runs; codex's sandbox),
 * the provider the policy selects, and where the runner keeps its files.
 */
export async function doctor(config: Config): Promise<DoctorReport> {
  const [providers, git, bwrap, { policy, source, warning }] = await Promise.all([
    Promise.all(PROVIDER_IDS.map((id) => checkProvider(config, id))),
    checkTool(config, "git", "git", ["--version"], "session workspaces are git repos"),
    checkBwrap(config),
    readPolicy(config),
  ]);
  const defaultCheck = providers[PROVIDER_IDS.indexOf(policy.provider)];
  const defaultOk = usable(defaultCheck) && usable(git);
  const checks: Check[] = [
    ...providers,
    git,
    bwrap,
    {
      name: "default provider",
      state: usable(defaultCheck) ? "ok" : "missing",
      detail: `${policy.provider} (from ${source})`,
    },
    ...(warning === null
      ? []
      : [{ name: "agent policy", state: "warn" as const, detail: warning }]),
    { name: "FERMILINK_HOME", state: "info", detail: config.home },
    { name: "workspaces", state: "info", detail: config.workspacesRoot },
    { name: "run store", state: "info", detail: config.store.path },
  ];
  return { checks, defaultProvider: policy.provider, defaultOk };
}

const MARK: Record<CheckState, string> = { ok: "ok", warn: "warn", missing: "--", info: "" };

/**
 * The report as aligned lines: mark, name, detail. A detail is kept on its
 * line: a failed `--version` carries the CLI's stderr, often several lines,
 * which would otherwise break the table into lines with no mark or name.
 */
export function formatChecks(checks: Check[]): string {
  return checks
    .map((c) => {
      const detail = c.detail
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l !== "")
        .join("; ");
      return `${MARK[c.state].padEnd(5)} ${c.name.padEnd(17)} ${detail}\n`;
    })
    .join("");
}
