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
}

const ansi = (code: string) => (s: string) => `\x1b[${code}m${s}\x1b[0m`;
export const COLOR: Style = {
  dim: ansi("2"),
  bold: ansi("1"),
  green: ansi("32"),
  red: ansi("31"),
  cyan: ansi("36"),
};
const id = (s: string) => s;
export const PLAIN: Style = { dim: id, bold: id, green: id, red: id, cyan: id };

export const EXIT_REASON_NAMES: Record<ExitReason, string> = {
  [ExitReason.UNSPECIFIED]: "unknown",
  [ExitReason.COMPLETED]: "completed",
  [ExitReason.TIMEOUT]: "timeout",
  [ExitReason.CANCELLED]: "cancelled",
  [ExitReason.CLIENT_GONE]: "client_gone",
  [ExitReason.SHUTDOWN]: "shutdown",
  [ExitReason.ERROR]: "error",
  [ExitReason.INTERRUPTED]: "interrupted",
};

const indent = (text: string, prefix = "    ") =>
  text
    .split("\n")
    .map((l) => prefix + l)
    .join("\n");

function renderItem(item: AgentItem, st: Style): string | null {
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
      return st.dim(`tokens: ${u.inputTokens} in, ${u.outputTokens} out${cost}`);
    }
    case "error":
      return st.red(`error: ${k.value.message}`);
    case "result":
      return k.value.text ? k.value.text : null;
    case undefined:
      return null;
  }
}

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
      if (e.value.items.length === 0) return st.dim(e.value.raw);
      const parts = e.value.items.map((i) => renderItem(i, st)).filter((p) => p !== null);
      return parts.length > 0 ? parts.join("\n") : null;
    }
    case "log":
      return st.dim(e.value.text);
    case "exit": {
      const x = e.value;
      const secs = x.duration ? Number(x.duration.seconds) + x.duration.nanos / 1e9 : 0;
      const ok = x.succeeded;
      const code = x.returnCode === undefined ? "" : `, return code ${x.returnCode}`;
      const line = `${EXIT_REASON_NAMES[x.reason]}${code}, ${secs.toFixed(1)} s${x.message ? ` — ${x.message}` : ""}`;
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
