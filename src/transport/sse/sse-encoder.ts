import type { AgentPolicy, RunEvent } from "../../events/run-event.js";
import { pyJsonDumps } from "./py-json.js";

/** FermiLink's `meta.agent` object (snake_case keys, spec §2.1). */
export function agentPolicyJson(p: AgentPolicy): Record<string, unknown> {
  return {
    provider: p.provider,
    sandbox_policy: p.sandboxPolicy,
    sandbox_mode: p.sandboxMode,
    model: p.model,
    reasoning_effort: p.reasoningEffort,
  };
}

/**
 * Line breaks of Python's `str.splitlines` beyond CR and LF that a JSON
 * string may hold as they are (codex and claude leave them unescaped).
 */
const JSON_LEGAL_LINE_BREAKS = /[\u0085\u2028\u2029]/;

/**
 * Every line break of Python's `str.splitlines`. FermiLink's own client reads
 * the stream with httpx's `aiter_lines`, which splits there: left inside a
 * `data:` line, one would cut the frame, and two could make a blank line and
 * then a field of the provider's choosing (a forged `meta` or `runner.exit`).
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: VT, FF and U+001C–U+001E are line breaks to Python.
const PY_LINE_BREAKS = /\r\n|[\n\r\u000b\u000c\u001c-\u001e\u0085\u2028\u2029]/;

/**
 * An agent line with U+0085, U+2028 and U+2029 as `\uXXXX` escapes. In a JSON
 * line they can only stand inside strings, so the line still parses to the
 * same value; a line that is not JSON keeps them (escaping would change it),
 * and they then start new `data:` lines as CR and LF do.
 */
function escapeOtherLineBreaks(raw: string): string {
  const t = raw.trimStart();
  if (!t.startsWith("{") && !t.startsWith("[")) return raw;
  return raw.replace(
    /[\u0085\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/**
 * One SSE frame for a journal entry in FermiLink's wire form (spec §2.1):
 * `event: <name>`, `id: <seq>`, then the payload. A payload line break starts
 * a new `data:` line: CR, LF and CRLF, and the other breaks of Python's
 * `splitlines` (VT, FF, U+001C–U+001E, U+0085, U+2028, U+2029), so a client
 * that parses SSE as its spec says and one that splits lines as httpx does
 * (FermiLink's) both see exactly one event, the same text, and a provider
 * line can never forge a frame (spec §10 item 12); the client's join with
 * "\n" restores the text, with every line break as LF. A JSON agent line has
 * U+0085, U+2028 and U+2029 escaped first, keeping its value (above).
 * Returns null for entries that have no frame (`queued` is sent as an SSE
 * comment instead).
 */
export function encodeSseFrame(event: RunEvent): string | null {
  const b = event.body;
  let name: string;
  let payload: string;
  switch (b.type) {
    case "queued":
      return null;
    case "meta": {
      name = "meta";
      const meta: Record<string, unknown> = { session_id: b.sessionId };
      if (b.package) meta.package = b.package;
      meta.agent = agentPolicyJson(b.agent);
      meta.run_id = event.runId;
      payload = pyJsonDumps(meta);
      break;
    }
    case "agent":
      name = "agent";
      payload = JSON_LEGAL_LINE_BREAKS.test(b.raw) ? escapeOtherLineBreaks(b.raw) : b.raw;
      break;
    case "log":
      name = "log";
      payload = pyJsonDumps({ text: b.text });
      break;
    case "exit":
      name = "runner.exit";
      payload = exitPayload(b, event.runId);
      break;
  }
  const data = payload
    .split(PY_LINE_BREAKS)
    .map((line) => `data: ${line}\n`)
    .join("");
  return `event: ${name}\nid: ${event.seq}\n${data}\n`;
}

/**
 * An SSE comment line: ignored by parsers, but keeps proxies from timing out.
 * No blank line follows it: a naive client (FermiLink's web parser) that
 * dispatches on every blank line would otherwise see an empty event.
 */
export function encodeSseComment(text: string): string {
  return `: ${text.replace(/[\r\n]+/g, " ")}\n`;
}

/**
 * The last frame of an SSE stream that a failure cut short after its headers
 * were sent (README, Errors: such a stream ends with an exit of reason `error`
 * and a message), e.g. a run deleted by retention while it was being read
 * back. It has no `id:`, as it is not one of the run's events: a resuming
 * `EventSource` keeps the id of the last frame it got (and, for a deleted
 * run, is then answered 404).
 */
export function encodeSseFailure(runId: string | null, message: string): string {
  const payload = exitPayload(
    {
      reason: "error",
      returnCode: null,
      signal: null,
      durationMs: null,
      message,
      succeeded: false,
      killedByRunner: false,
    },
    runId,
  );
  return `event: runner.exit\ndata: ${payload}\n\n`;
}

/**
 * `runner.exit`'s JSON (FermiLink's fields, then this runner's additions), one
 * field order for the run's own exit and for a failure's; `message` and
 * `run_id` only when there is something to say.
 */
function exitPayload(
  e: {
    reason: string;
    returnCode: number | null;
    signal: string | null;
    durationMs: number | null;
    message: string;
    succeeded: boolean;
    killedByRunner: boolean;
  },
  runId: string | null,
): string {
  return pyJsonDumps({
    reason: e.reason,
    return_code: e.returnCode,
    signal: e.signal,
    duration_ms: e.durationMs,
    message: e.message === "" ? undefined : e.message,
    succeeded: e.succeeded,
    killed_by_runner: e.killedByRunner,
    run_id: runId ?? undefined,
  });
}
