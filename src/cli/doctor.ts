import { execFile } from "node:child_process";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Config } from "../config/config.js";
import { PROVIDER_IDS, type ProviderId } from "../config/providers.js";
import { getProviderAdapter } from "../providers/registry.js";
import { resolveProviderBinary } from "../providers/resolve-binary.js";
import { checkProviderVersion } from "../providers/version-check.js";

const PROJECT_BIN = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../node_modules/.bin",
);

/** One line of the report. */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** First line of `<bin> <args>` within a short time, or the reason it failed. */
function versionOf(bin: string, args: string[], env: NodeJS.ProcessEnv): Promise<Check["detail"]> {
  return new Promise((resolve) => {
    // In the temp dir: a CLI must not leave files in whatever directory doctor runs from.
    execFile(bin, args, { timeout: 15_000, env, cwd: tmpdir() }, (err, stdout, stderr) => {
      const first = `${stdout}${stderr}`.split("\n").find((l) => l.trim() !== "") ?? "";
      resolve(err ? `failed: ${first || err.message}` : first.trim());
    });
  });
}

/** A provider CLI: found (as the server would find it) and its version. */
async function checkProvider(config: Config, id: ProviderId): Promise<Check> {
  const adapter = getProviderAdapter(id);
  try {
    const bin = await resolveProviderBinary(adapter, config.providerBins[id], {
      projectBinDir: PROJECT_BIN,
      pathEnv: config.hostEnv.PATH ?? "",
    });
    const report = await checkProviderVersion(id, bin, { ...process.env, NO_COLOR: "1" });
    const warn = report.ok ? "" : " (warning)";
    return {
      name: `${id} CLI`,
      ok: report.version !== null,
      detail: `${bin} · ${report.message}${warn}`,
    };
  } catch {
    return { name: `${id} CLI`, ok: false, detail: `not found (set ${adapter.binEnvKey})` };
  }
}

async function checkTool(name: string, bin: string, args: string[]): Promise<Check> {
  const version = await versionOf(bin, args, process.env);
  return {
    name,
    ok: !version.startsWith("failed"),
    detail: version.startsWith("failed") ? "not found" : version,
  };
}

/**
 * What this machine can run: each provider CLI (found the way the server
 * finds it, with its version), git (needed for session repos) and bubblewrap
 * (codex's sandbox), plus where the runner keeps its files.
 */
export async function doctor(config: Config): Promise<{ checks: Check[]; defaultOk: boolean }> {
  const providers = await Promise.all(PROVIDER_IDS.map((id) => checkProvider(config, id)));
  const checks = [
    ...providers,
    await checkTool("git", "git", ["--version"]),
    await checkTool("bubblewrap", "bwrap", ["--version"]),
    { name: "FERMILINK_HOME", ok: true, detail: config.home },
    { name: "workspaces", ok: true, detail: config.workspacesRoot },
    { name: "run store", ok: true, detail: config.store.path },
  ];
  const defaultProvider = config.agentEnv.provider ?? "codex";
  const defaultOk =
    (providers[PROVIDER_IDS.indexOf(defaultProvider)]?.ok ?? false) &&
    (checks.find((c) => c.name === "git")?.ok ?? false);
  return { checks, defaultOk };
}
