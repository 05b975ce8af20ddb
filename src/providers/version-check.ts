import { execFile } from "node:child_process";
import { tmpdir } from "node:os";
import type { ProviderId } from "../config/providers.js";

/**
 * The CLI versions the adapters were written and end-to-end tested against
 * (real-clis.md; test/e2e): same major and minor. Newer CLIs often still
 * work, but their flags and JSON have changed before (codex dropped
 * `--full-auto`, `wire_api="chat"`), so the runner says so.
 */
export const TESTED_VERSIONS: Readonly<Record<ProviderId, string>> = {
  codex: "0.169",
  claude: "2.1",
  gemini: "0.61",
  opencode: "1.18",
};

/** What `--version` said, judged against the tested range. */
export interface VersionReport {
  provider: ProviderId;
  version: string | null;
  tested: string;
  ok: boolean;
  message: string;
}

/** The first `x.y.z` in a `--version` output. */
export function parseVersion(text: string): string | null {
  return /(\d+)\.(\d+)\.(\d+)/.exec(text)?.[0] ?? null;
}

export function judgeVersion(provider: ProviderId, output: string): VersionReport {
  const tested = TESTED_VERSIONS[provider];
  const version = parseVersion(output);
  if (version === null) {
    return {
      provider,
      version,
      tested,
      ok: false,
      message: `could not read a version from ${JSON.stringify(output.trim().slice(0, 80))}; tested with ${tested}.x`,
    };
  }
  const ok = version === tested || version.startsWith(`${tested}.`);
  return {
    provider,
    version,
    tested,
    ok,
    message: ok
      ? `${version} (tested)`
      : `${version} is outside the tested ${tested}.x; flags or JSON output may differ`,
  };
}

/**
 * What a provider needs in its environment for `--version` as for a run, beyond `env`: gemini
 * otherwise relaunches itself with a bigger heap (real-clis.md §3), two node starts (≈ 3.4
 * CPU-seconds against 2.0) to print one line.
 */
const VERSION_ENV: Partial<Record<ProviderId, NodeJS.ProcessEnv>> = {
  gemini: { GEMINI_CLI_NO_RELAUNCH: "true" },
};

/** Run `<bin> --version` (bounded, in the temp dir, stdin closed) and judge the answer. */
export function checkProviderVersion(
  provider: ProviderId,
  bin: string,
  env: NodeJS.ProcessEnv,
  signal?: AbortSignal,
): Promise<VersionReport> {
  return new Promise((resolve) => {
    const child = execFile(
      bin,
      ["--version"],
      { timeout: 15_000, env: { ...env, ...VERSION_ENV[provider] }, cwd: tmpdir(), signal },
      (err, stdout, stderr) => {
        if (err && !stdout) {
          resolve({
            provider,
            version: null,
            tested: TESTED_VERSIONS[provider],
            ok: false,
            message: `\`${bin} --version\` failed: ${err.message}`,
          });
          return;
        }
        resolve(judgeVersion(provider, `${stdout}\n${stderr}`));
      },
    );
    child.stdin?.end();
  });
}
