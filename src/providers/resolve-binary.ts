/**
 * Finding a provider CLI (spec §6.1). The only module of `providers/` that
 * touches the file system. It runs at start-up and again for every run,
 * because the policy file may switch provider at any time (spec §10 item 21).
 * Its two metadata calls per candidate are synchronous on purpose: each takes
 * microseconds, where the thread pool would queue them behind a burst's
 * workspace writes and hold the request (and its 429) for as long.
 */
import { accessSync, constants, statSync } from "node:fs";
import path from "node:path";
import { RunnerError } from "../errors/runner-error.js";
import type { ProviderAdapter } from "./provider-adapter.js";

/** Where to look besides a configured path. */
export interface ResolveBinaryOptions {
  /** The project's own `node_modules/.bin`, searched first when nothing is configured. */
  projectBinDir: string;
  /** The runner's PATH (`Config.hostEnv.PATH`). */
  pathEnv: string;
}

/** Why one candidate was refused, for the error message. */
function whyNotExecutable(file: string): string | null {
  const info = statSync(file, { throwIfNoEntry: false });
  if (!info) return "missing";
  if (!info.isFile()) return "not a file";
  try {
    accessSync(file, constants.X_OK);
    return null;
  } catch {
    return "not executable";
  }
}

/**
 * Absolute PATH entries. Empty and relative entries are skipped: POSIX reads
 * them as the current directory, which must not decide which agent runs.
 */
function pathDirs(pathEnv: string): string[] {
  return pathEnv.split(path.delimiter).filter((d) => d !== "" && path.isAbsolute(d));
}

/**
 * Resolve the adapter's CLI to an absolute path of an executable file.
 *
 * - `configured` (`FERMILINK_<PROVIDER>_BIN`) wins: a value with a path
 *   separator is checked as a path (relative to the CWD); a bare name is
 *   searched on PATH.
 * - Unset or blank: `<projectBinDir>/<defaultBinName>` (the CLIs installed as
 *   this project's npm dependencies), the adapter's `extraBinCandidates`
 *   there, then PATH.
 *
 * @throws RunnerError PROVIDER_BINARY_MISSING with FermiLink's message (spec
 *   §1.0) plus every place that was tried and why it was refused.
 */
export async function resolveProviderBinary(
  adapter: Pick<ProviderAdapter, "id" | "binEnvKey" | "defaultBinName" | "extraBinCandidates">,
  configured: string | null,
  opts: ResolveBinaryOptions,
): Promise<string> {
  const value = configured?.trim() ?? "";
  const candidates: string[] = [];
  if (value !== "" && value.includes(path.sep)) {
    candidates.push(path.resolve(value));
  } else {
    const name = value === "" ? adapter.defaultBinName : value;
    if (value === "") {
      candidates.push(path.resolve(opts.projectBinDir, name));
      for (const extra of adapter.extraBinCandidates ?? [])
        candidates.push(path.resolve(opts.projectBinDir, extra));
    }
    for (const dir of pathDirs(opts.pathEnv)) candidates.push(path.join(dir, name));
  }
  const tried: string[] = [];
  for (const candidate of candidates) {
    const problem = whyNotExecutable(candidate);
    if (problem === null) return candidate;
    tried.push(`${candidate} (${problem})`);
  }
  const triedText = tried.length > 0 ? tried.join(", ") : "nothing (PATH is empty)";
  throw new RunnerError(
    "PROVIDER_BINARY_MISSING",
    `${adapter.id} CLI not found. Install it in the runner image or set ${adapter.binEnvKey} to its path. Tried: ${triedText}.`,
  );
}
