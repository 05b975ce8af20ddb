/**
 * opencode retries a failing model call five times with backoff (about 70 s
 * on a dead endpoint, real-clis.md §5) and has no setting to bound that. Run
 * with `--print-logs --log-level WARN`, it reports each failed call on stderr
 * as one logfmt line, which lets the runner bound the retries itself:
 *
 *   ... level=ERROR ... message="stream error" ... agent=build ... error.error="AI_APICallError: ..."
 *
 * The title agent's side call (`agent=title`) retries inside the AI SDK and
 * does not decide the run, so it is not counted.
 */
import type { RetryGuard } from "../provider-adapter.js";

const MAX_ERROR_CHARS = 400;

/** The value of `key="..."` (backslash escapes undone) or `key=bare`, else null. */
function logfmtValue(line: string, key: string): string | null {
  const at = line.indexOf(` ${key}=`);
  if (at === -1) return null;
  let i = at + key.length + 2;
  if (line[i] !== '"') {
    const end = line.indexOf(" ", i);
    return line.slice(i, end === -1 ? undefined : end);
  }
  let out = "";
  for (i += 1; i < line.length; i++) {
    const c = line[i];
    if (c === "\\" && i + 1 < line.length) out += line[++i];
    else if (c === '"') break;
    else out += c;
  }
  return out;
}

/** The error of a failed conversation model call reported on `line`, else null. */
export function opencodeFailedCall(line: string): string | null {
  if (!line.includes("level=ERROR") || logfmtValue(line, "message") !== "stream error") return null;
  if (logfmtValue(line, "agent") === "title") return null;
  const error = logfmtValue(line, "error.error") ?? "stream error";
  return error.length > MAX_ERROR_CHARS ? `${error.slice(0, MAX_ERROR_CHARS)}…` : error;
}

/** One retry, as codex, claude and gemini are configured (request_max_retries, MAX_RETRIES, maxAttempts). */
export const OPENCODE_RETRY_GUARD: RetryGuard = Object.freeze({
  maxRetries: 1,
  failedCall: opencodeFailedCall,
});
