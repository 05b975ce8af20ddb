import {
  type AgentItem,
  ExitReason,
  ItemStatus,
  type RunEvent,
} from "../../gen/fermilink/runner/v1/run_pb.js";

/** Terminal styling, off when the output is not a terminal. */
export interface Style {
  dim(s: string): string;
  bold(s: string): string;
  green(s: string): string;
  red(s: string): string;
  cyan(s: string): string;
  /** The text as written: on a terminal, with no control sequence but colours left to obey. */
  safe(s: string): string;
}

/**
 * A colour sequence (SGR: ours, or a CLI's own colours), or one control character: any other
 * sequence starts with one (ESC, CSI as 0x9b, BEL, backspace, CR), so showing that character
 * defuses the sequence. Tab and newline are layout.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds.
const CONTROL = /\x1b\[[0-9;]*m|[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

/**
 * Provider output (model text, command output, raw lines) on a terminal: an agent's or a
 * command's escape sequences would otherwise drive it (an OSC sets the window title or the
 * clipboard, a CSI moves the cursor or clears the screen, a CR rewrites a line). Each control
 * character is shown instead, caret-style (`^[`, `^M`; C1 as `\x9b`), as `cat -v` does.
 */
export function terminalSafe(s: string): string {
  return s.replace(CONTROL, (m) => {
    if (m.length > 1) return m;
    const c = m.charCodeAt(0);
    if (c < 0x20) return `^${String.fromCharCode(c + 64)}`;
    return c === 0x7f ? "^?" : `\\x${c.toString(16)}`;
  });
}

const ansi = (code: string) => (s: string) => `\x1b[${code}m${s}\x1b[0m`;
export const COLOR: Style = {
  dim: ansi("2"),
  bold: ansi("1"),
  green: ansi("32"),
  red: ansi("31"),
  cyan: ansi("36"),
  safe: terminalSafe,
};
const id = (s: string) => s;
/** Output to a file or a pipe: the provider's bytes as they are. */
export const PLAIN: Style = { dim: id, bold: id, green: id, red: id, cyan: id, safe: id };

export const EXIT_REASON_NAMES: Record<ExitReason, string> = {
  [ExitReason.UNSPECIFIED]: "unknown",
  [ExitReason.COMPLETED]: "completed",
  [ExitReason.TIMEOUT]: "timeout",
  [ExitReason.CANCELLED]: "cancelled",
  [ExitReason.CLIENT_GONE]: "client_gone",
  [ExitReason.SHUTDOWN]: "shutdown",
  [ExitReason.ERROR]: "error",
  [ExitReason.INTERRUPTED]: "interrupted",
  [ExitReason.RETRIES_EXHAUSTED]: "model calls kept failing",
};

const indent = (text: string, prefix = "    ") =>
  text
    .split("\n")
    .map((l) => prefix + l)
    .join("\n");

/**
 * One typed item as terminal text (null: nothing to show). A message is
 * shown on its own; {@link TerminalRenderer} joins deltas.
 */
export function renderItem(item: AgentItem, st: Style): string | null {
  const k = item.kind;
  switch (k.case) {
    case "message":
      return k.value.text;
    case "reasoning":
      return st.dim(`(thinking) ${k.value.text}`);
    case "command": {
      const c = k.value;
      if (c.status === ItemStatus.IN_PROGRESS) return st.cyan(`$ ${c.command}`);
      const code = c.exitCode === undefined ? "" : ` (exit ${c.exitCode})`;
      // Some providers name the command only when it starts; its end then shows as a result line.
      const what = c.command ? `$ ${c.command}` : "  ↳";
      const head =
        st.cyan(what) +
        (c.exitCode === 0 || c.exitCode === undefined ? st.dim(code) : st.red(code));
      return c.output ? `${head}\n${st.dim(indent(c.output.trimEnd()))}` : head;
    }
    case "fileChange":
      return k.value.changes.map((ch) => st.cyan(`${ch.kind} ${ch.path}`)).join("\n");
    case "toolCall": {
      const t = k.value;
      if (t.status === ItemStatus.IN_PROGRESS) return st.cyan(`→ ${t.name} ${t.inputJson}`);
      return st.cyan(`→ ${t.name}`) + (t.output ? `\n${st.dim(indent(t.output.trimEnd()))}` : "");
    }
    case "usage": {
      const u = k.value;
      const cost = u.costUsd === undefined ? "" : `, $${u.costUsd.toFixed(4)}`;
      const cacheParts = [
        u.cachedInputTokens > 0n ? `${u.cachedInputTokens} cached` : "",
        u.cacheWriteInputTokens > 0n ? `${u.cacheWriteInputTokens} written to cache` : "",
      ].filter((p) => p !== "");
      const cached = cacheParts.length > 0 ? ` (${cacheParts.join(", ")})` : "";
      const reasoning = u.reasoningTokens > 0n ? `, ${u.reasoningTokens} reasoning` : "";
      return st.dim(
        `tokens: ${u.inputTokens} in${cached}, ${u.outputTokens} out${reasoning}${cost}`,
      );
    }
    case "error":
      return st.red(`error: ${k.value.message}`);
    case "result":
      if (!k.value.text) return null;
      return k.value.success ? k.value.text : st.red(k.value.text);
    case undefined:
      return null;
  }
}

/**
 * Said after a line the runner cut at its line cap: without it the line reads as complete (a
 * cut JSON line has no typed reading, so it shows raw).
 */
const cutMark = (truncated: boolean, st: Style) =>
  truncated ? st.bold(" … [cut: longer than FERMILINK_RUNNER_MAX_LINE_BYTES]") : "";

/**
 * One run event as terminal text (null: nothing to show). Pure, so the
 * rendering is tested without a terminal. `queued` is handled by the caller
 * (a spinner on a terminal).
 */
export function renderEvent(event: RunEvent, st: Style): string | null {
  const e = event.event;
  switch (e.case) {
    case "queued":
      return st.dim(`queued ${e.value.position}/${e.value.queueSize}`);
    case "meta": {
      const m = e.value;
      const pkg = m.package ? `, package ${m.package.packageId}` : "";
      return st.dim(
        `run ${event.runId} · session ${m.sessionId} · ${m.agent?.provider ?? "?"}${pkg}`,
      );
    }
    case "agent": {
      if (e.value.items.length === 0) return st.dim(e.value.raw) + cutMark(e.value.truncated, st);
      const parts = e.value.items.map((i) => renderItem(i, st)).filter((p) => p !== null);
      return parts.length > 0 ? parts.join("\n") : null;
    }
    case "log":
      return st.dim(e.value.text) + cutMark(e.value.truncated, st);
    case "exit": {
      const x = e.value;
      const secs = x.duration ? Number(x.duration.seconds) + x.duration.nanos / 1e9 : 0;
      const ok = x.succeeded;
      const signal = x.signal ? ` (${x.signal})` : "";
      const code = x.returnCode === undefined ? "" : `, return code ${x.returnCode}${signal}`;
      // A reason from a newer server (proto enums are open) by its number, never "undefined".
      const reason = EXIT_REASON_NAMES[x.reason] ?? `reason ${x.reason}`;
      const line = `${reason}${code}, ${secs.toFixed(1)} s${x.message ? ` — ${x.message}` : ""}`;
      return ok ? st.green(`✓ ${line}`) : st.red(`✗ ${line}`);
    }
    case undefined:
      return null;
  }
}

/** The runner's verdict on the run (exit 0 and a successful final result): the CLI's exit code follows it. */
export function exitSucceeded(event: RunEvent): boolean {
  return event.event.case === "exit" && event.event.value.succeeded;
}

/** Same text once surrounding whitespace is ignored (providers differ in trailing newlines). */
const sameText = (a: string, b: string) => a.trim() !== "" && a.trim() === b.trim();

/**
 * A run as terminal text, event after event. It keeps the little state the
 * stream needs and {@link renderEvent} cannot have: gemini sends assistant
 * text as token deltas, which belong on one line, not one line per token; and
 * claude, gemini and codex repeat the final message or error as the turn's
 * result, which need not be printed twice. Pure apart from that state.
 */
export class TerminalRenderer {
  /** Deltas were written on a line that has no newline yet. */
  private openLine = false;
  /** The last assistant message (all its deltas so far) or error, to recognise a result repeating it. */
  private lastText = "";

  constructor(private readonly st: Style) {}

  /** What to write for one event ("" for nothing). Lines end with "\n", except an open delta line. */
  push(event: RunEvent): string {
    const e = event.event;
    if (e.case !== "agent" || e.value.items.length === 0) {
      const text = renderEvent(event, this.st);
      return text === null ? "" : this.st.safe(this.line(text));
    }
    return this.st.safe(e.value.items.map((item) => this.item(item)).join(""));
  }

  /** What is left to write when the stream ends: the newline of an open delta line. */
  end(): string {
    return this.close();
  }

  private item(item: AgentItem): string {
    const k = item.kind;
    if (k.case === "message" && k.value.delta) {
      // Gemini marks every chunk as a delta, the first too: a closed line starts a new message.
      this.lastText = this.openLine ? this.lastText + k.value.text : k.value.text;
      this.openLine = true;
      return k.value.text;
    }
    if (k.case === "message") this.lastText = k.value.text;
    if (k.case === "error") this.lastText = k.value.message;
    if (k.case === "result" && sameText(k.value.text, this.lastText)) return "";
    const text = renderItem(item, this.st);
    return text === null ? "" : this.line(text);
  }

  private line(text: string): string {
    return `${this.close()}${text}\n`;
  }

  private close(): string {
    if (!this.openLine) return "";
    this.openLine = false;
    return "\n";
  }
}
