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
 * One SSE frame for a journal entry in FermiLink's wire form (spec §2.1):
 * `event: <name>`, `id: <seq>`, then the payload. A payload line break (CR,
 * LF or CRLF) starts a new `data:` line, so a client that parses SSE as its
 * spec says always sees exactly one event and a provider line can never
 * forge a frame (spec §10 item 12); the client's join with "\n" restores the
 * text, with every line break as LF. (A client that also splits lines at
 * U+2028/U+2029/U+0085, as Python's `str.splitlines` does, is not an SSE
 * parser; FermiLink sends those characters as they are too.) Returns null
 * for entries that have no frame (`queued` is sent as an SSE comment instead).
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
      payload = b.raw;
      break;
    case "log":
      name = "log";
      payload = pyJsonDumps({ text: b.text });
      break;
    case "exit":
      name = "runner.exit";
      payload = pyJsonDumps({
        reason: b.reason,
        return_code: b.returnCode,
        signal: b.signal,
        duration_ms: b.durationMs,
        message: b.message === "" ? undefined : b.message,
        succeeded: b.succeeded,
        killed_by_runner: b.killedByRunner,
        run_id: event.runId,
      });
      break;
  }
  const data = payload
    .split(/\r\n|\r|\n/)
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
