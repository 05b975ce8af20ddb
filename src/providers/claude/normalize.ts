/**
 * `claude --print --output-format stream-json --verbose` lines → `AgentItem`s
 * (real-clis.md §4, spec §6.3). Without `--include-partial-messages` Claude
 * prints one `assistant` line per finished content block, so messages are
 * never deltas. A `tool_result` names only its call's id: it is reported
 * under that id with the kind of its call (a `command` for Bash) and, for a
 * `tool_call`, its tool's name, both from the call's `tool_use` line among the
 * run's earlier lines; the call's input (command text, arguments) stays with
 * the call, for consumers to merge by id. A Bash result that shows itself as
 * one (its stdout, or "Exit code N") needs no look-back.
 */
import {
  type AgentItem,
  type EarlierLines,
  type ItemStatus,
  NO_EARLIER_LINES,
} from "../../events/run-event.js";
import {
  asArray,
  asCount,
  asExitCode,
  asNumber,
  asObject,
  asString,
  type FileTool,
  fileChangeItem,
  type JsonObject,
  parseJsonObject,
  startedToolItem,
  toInputJson,
  usageItem,
} from "../json-line.js";

/** Claude's shell tool. */
const SHELL_TOOL = "Bash";

/** Claude Code 2.1's file-writing tools (their input schemas, as sent to the model). */
const FILE_TOOLS: Readonly<Record<string, FileTool>> = {
  Write: { pathKey: "file_path", kind: "write" },
  Edit: { pathKey: "file_path", kind: "update" },
  MultiEdit: { pathKey: "file_path", kind: "update" },
  NotebookEdit: { pathKey: "notebook_path", kind: "update" },
};

function toolUseItems(block: JsonObject): AgentItem[] {
  const id = asString(block.id);
  const name = asString(block.name);
  const change = fileChangeItem(FILE_TOOLS, {
    id,
    name,
    input: block.input,
    status: "in_progress",
  });
  const call = startedToolItem(id, name, SHELL_TOOL, block.input);
  return change ? [call, change] : [call];
}

function assistantItems(event: JsonObject): AgentItem[] {
  const blocks = asArray(asObject(event.message)?.content).flatMap((b): JsonObject[] => {
    const block = asObject(b);
    return block ? [block] : [];
  });
  // An API failure comes as a synthetic assistant message with a top-level `error` code.
  const errorCode = asString(event.error);
  if (errorCode !== "") {
    const text = blocks.map((b) => asString(b.text)).join("");
    return [{ kind: "error", message: text || errorCode, retryable: false, fatal: false }];
  }
  return blocks.flatMap((block): AgentItem[] => {
    switch (asString(block.type)) {
      case "text": {
        const text = asString(block.text);
        return text === "" ? [] : [{ kind: "message", text, delta: false }];
      }
      case "thinking": {
        const text = asString(block.thinking);
        return text === "" ? [] : [{ kind: "reasoning", text }];
      }
      case "tool_use":
        return toolUseItems(block);
      default:
        return [];
    }
  });
}

function toolResultText(content: unknown): string {
  if (typeof content === "string") return content;
  return asArray(content)
    .map((c) => asString(asObject(c)?.text))
    .filter((t) => t !== "")
    .join("\n");
}

/**
 * `tool_result_meta[].non_execution_kind` values for a call Claude's
 * permission check refused (the others, `interrupted` and `cancelled`, are no
 * refusal).
 */
const REFUSED_KINDS = new Set([
  "user-rejected",
  "permission-rule",
  "automode-blocked",
  "automode-unavailable",
  "automode-parsing-error",
]);

/**
 * Claude's own refusal templates ("ask" unanswered in `--print`, and a deny
 * rule), for a line without `tool_result_meta`. Anything else that is_error is
 * a failure: the refusal messages of Bash and of the auto-mode check are many
 * and worded freely, so only the meta tells them.
 */
const REFUSAL_TEXTS = [
  /^Claude requested permissions to .+, but you haven't granted it yet\./,
  /^Permission to .+ has been denied\./,
];

/**
 * A result's status. Claude 2.1 prints, beside the `tool_result`, a
 * `tool_result_meta` entry per call whose `permission_decision.decision` is
 * `reject` when its permission check refused it (a Bash write needing
 * approval, plan mode, a deny rule); the run's `permission_denials` lists the
 * same calls at the end. A refused call ran nothing: declined, not failed.
 */
function toolResultStatus(block: JsonObject, meta: JsonObject | null, output: string): ItemStatus {
  if (block.is_error !== true) return "completed";
  if (meta) {
    const decision = asString(asObject(meta.permission_decision)?.decision);
    const refused = decision === "reject" || REFUSED_KINDS.has(asString(meta.non_execution_kind));
    return refused ? "declined" : "failed";
  }
  return REFUSAL_TEXTS.some((re) => re.test(output)) ? "declined" : "failed";
}

/** A call as its `tool_use` block in an earlier assistant line gave it. */
interface ToolCall {
  name: string;
  input: unknown;
}

/** The `tool_use` block with id `id` in an assistant line, or null. */
function toolUseIn(raw: string, id: string): ToolCall | null {
  const event = parseJsonObject(raw);
  if (event?.type !== "assistant") return null;
  for (const b of asArray(asObject(event.message)?.content)) {
    const block = asObject(b);
    if (block?.type === "tool_use" && block.id === id) {
      return { name: asString(block.name), input: block.input };
    }
  }
  return null;
}

/**
 * A result's items. A Bash result is recognised by the line's
 * `tool_use_result.stdout`, or, when it failed (then `tool_use_result` is
 * only an error string), by the "Exit code N" Claude writes first; Claude
 * marks a non-zero exit `is_error`. Any other result (a refused Bash call
 * among them, which ran nothing) takes its kind and name from its call. A
 * file tool's result that reports no file (refused, failed) ends the call's
 * change with its own status, for the path the call named.
 */
function toolResultItems(
  block: JsonObject,
  toolUseResult: JsonObject | null,
  output: string,
  status: ItemStatus,
  earlier: EarlierLines,
): AgentItem[] {
  const id = asString(block.tool_use_id);
  const exitMatch = status === "failed" ? /^Exit code (\d+)/.exec(output) : null;
  if (typeof toolUseResult?.stdout === "string" || exitMatch !== null) {
    // Tool output can hold any number of digits: beyond int32 it is no exit code (null).
    const exitCode = status === "completed" ? 0 : asExitCode(Number(exitMatch?.[1] ?? Number.NaN));
    return [{ kind: "command", id, command: "", output, exitCode, status }];
  }
  const call =
    id === "" ? null : earlier(`"id":${JSON.stringify(id)}`, (raw) => toolUseIn(raw, id));
  if (call?.name === SHELL_TOOL) {
    return [{ kind: "command", id, command: "", output, exitCode: null, status }];
  }
  const name = call?.name ?? "";
  const items: AgentItem[] = [{ kind: "tool_call", id, name, inputJson: "", output, status }];
  const change =
    fileResultItem(block, toolUseResult, status) ??
    (call && status !== "completed"
      ? fileChangeItem(FILE_TOOLS, { id, name, input: call.input, status })
      : null);
  if (change) items.push(change);
  return items;
}

/**
 * The file a Write or Edit result reports (`tool_use_result.filePath`, with
 * `type` create/update for Write and a `structuredPatch` for both): the
 * completed change, whose kind the result knows better than the call.
 */
function fileResultItem(
  block: JsonObject,
  toolUseResult: JsonObject | null,
  status: ItemStatus,
): AgentItem | null {
  const path = asString(toolUseResult?.filePath);
  const type = asString(toolUseResult?.type);
  const isWrite = type === "create" || type === "update";
  if (path === "" || !(isWrite || Array.isArray(toolUseResult?.structuredPatch))) return null;
  return {
    kind: "file_change",
    id: asString(block.tool_use_id),
    changes: [{ path, kind: type === "create" ? "add" : "update" }],
    status,
  };
}

function userItems(event: JsonObject, earlier: EarlierLines): AgentItem[] {
  const toolUseResult = asObject(event.tool_use_result);
  const metas = asArray(event.tool_result_meta).flatMap((m): JsonObject[] => {
    const meta = asObject(m);
    return meta ? [meta] : [];
  });
  return asArray(asObject(event.message)?.content).flatMap((b): AgentItem[] => {
    const block = asObject(b);
    if (block?.type !== "tool_result") return [];
    const id = asString(block.tool_use_id);
    const meta = metas.find((m) => asString(m.id) === id) ?? null;
    const output = toolResultText(block.content);
    const status = toolResultStatus(block, meta, output);
    return toolResultItems(block, toolUseResult, output, status, earlier);
  });
}

function resultItems(event: JsonObject): AgentItem[] {
  const usage = asObject(event.usage);
  const items: AgentItem[] = [];
  if (usage) {
    const cacheRead = asCount(usage.cache_read_input_tokens);
    const cacheWrite = asCount(usage.cache_creation_input_tokens);
    // Anthropic's input_tokens excludes cache reads and writes; add them back (json-line.ts convention).
    const input = asCount(usage.input_tokens) + cacheRead + cacheWrite;
    items.push(
      usageItem({
        input,
        cached: cacheRead,
        cacheWrite,
        output: usage.output_tokens,
        costUsd: event.total_cost_usd,
      }),
    );
  }
  // API failures arrive as subtype "success" with is_error true (real-clis.md §4).
  const success = event.is_error !== true && event.subtype === "success";
  const text = asString(event.result);
  if (!success) {
    const message = text || `Claude run ended with ${asString(event.subtype, "an error")}.`;
    items.push({ kind: "error", message, retryable: false, fatal: true });
  }
  items.push({ kind: "result", success, text });
  return items;
}

function apiRetryItem(event: JsonObject): AgentItem {
  const status = asNumber(event.error_status);
  const attempt = asNumber(event.attempt);
  const max = asNumber(event.max_retries);
  const error = typeof event.error === "string" ? event.error : toInputJson(event.error ?? "");
  const parts = [
    "API error",
    status === null ? "" : ` ${status}`,
    error === "" ? "" : `: ${error}`,
    attempt === null ? "" : `; retrying (attempt ${attempt}${max === null ? "" : `/${max}`})`,
  ];
  return { kind: "error", message: parts.join(""), retryable: true, fatal: false };
}

/** Normalise one stdout line of Claude's stream-json. Pure; never throws. */
export function normalizeClaudeLine(
  line: string,
  earlier: EarlierLines = NO_EARLIER_LINES,
): AgentItem[] {
  const event = parseJsonObject(line);
  if (!event) return [];
  switch (asString(event.type)) {
    case "assistant":
      return assistantItems(event);
    case "user":
      return userItems(event, earlier);
    case "result":
      return resultItems(event);
    case "system":
      return event.subtype === "api_retry" ? [apiRetryItem(event)] : [];
    default:
      return [];
  }
}
