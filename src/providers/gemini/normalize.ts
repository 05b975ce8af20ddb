/**
 * `gemini --output-format stream-json` lines → `AgentItem`s (real-clis.md §4,
 * spec §6.3): `init`, `message {role, content, delta}` (real token deltas),
 * `tool_use {tool_name, tool_id, parameters}`, `tool_result {tool_id, status,
 * output | error}`, `error {severity, message}`, `result {status, error, stats}`.
 */
import { type AgentItem, type EarlierLines, NO_EARLIER_LINES } from "../../events/run-event.js";
import {
  asItemStatus,
  asObject,
  asString,
  type FileTool,
  fileChangeItem,
  type JsonObject,
  parseJsonObject,
  startedToolItem,
  usageItem,
} from "../json-line.js";

/** Gemini's shell tool. */
const SHELL_TOOL = "run_shell_command";

/**
 * The tool name inside a call id, for a `tool_result` whose `tool_use` line is
 * out of reach. Gemini CLI 0.61 builds ids as `<tool>__<raw id>`, the raw id
 * being the model's own or, when it gave none, `<tool>_<epoch ms>_<n>`
 * (captured from the real CLI); older builds used `<tool>-<epoch ms>-<hex>`.
 * A tool name can itself hold `__` (an MCP tool's, `mcp_<server>_<tool>` with
 * both parts the server's), so the name repeated in a generated raw id is
 * matched whole before the first `__` is taken.
 */
export function toolNameFromId(toolId: string): string {
  const generated = /^(.+)__\1_\d+_\d+$/.exec(toolId);
  if (generated?.[1]) return generated[1];
  const current = /^(.+?)__/.exec(toolId);
  if (current?.[1]) return current[1];
  const older = /^(.+)-\d{10,}-[0-9a-f]+$/i.exec(toolId);
  return older?.[1] ?? "";
}

/** Gemini CLI 0.61's file-writing tools (their declarations, as sent to the model). */
const FILE_TOOLS: Readonly<Record<string, FileTool>> = {
  write_file: { pathKey: "file_path", kind: "write" },
  replace: { pathKey: "file_path", kind: "update" },
};

function toolUseItems(event: JsonObject): AgentItem[] {
  const id = asString(event.tool_id);
  const name = asString(event.tool_name);
  const call = startedToolItem(id, name, SHELL_TOOL, event.parameters);
  const input = event.parameters;
  const change = fileChangeItem(FILE_TOOLS, { id, name, input, status: "in_progress" });
  return change ? [call, change] : [call];
}

/**
 * Gemini's error type for a call its policy engine (or a blocking hook)
 * refused: "Tool execution denied by policy." The call ran nothing.
 */
const POLICY_VIOLATION = "policy_violation";

/** A call as its `tool_use` line gave it. */
interface ToolUse {
  name: string;
  input: unknown;
}

/** The call `id` of a `tool_use` line, or null. */
function toolUseIn(raw: string, id: string): ToolUse | null {
  const event = parseJsonObject(raw);
  return event?.type === "tool_use" && event.tool_id === id
    ? { name: asString(event.tool_name), input: event.parameters }
    : null;
}

/**
 * A result names only its tool id: its tool's name and input come from the
 * call's `tool_use` line among the run's earlier lines (the id alone cannot
 * always tell where the name ends). A file tool's change ends, as Claude's
 * does, for the path the call named, with the result's status (completed,
 * failed or declined alike); with the call out of reach it has no entries
 * and pairs by id.
 */
function toolResultItems(event: JsonObject, earlier: EarlierLines): AgentItem[] {
  const id = asString(event.tool_id);
  const error = asObject(event.error);
  const refused = asString(error?.type) === POLICY_VIOLATION;
  const status = refused ? "declined" : asItemStatus(event.status);
  const output = asString(event.output) || asString(error?.message);
  const use =
    id === "" ? null : earlier(`"tool_id":${JSON.stringify(id)}`, (raw) => toolUseIn(raw, id));
  const name = use?.name || toolNameFromId(id);
  if (name === SHELL_TOOL) {
    return [{ kind: "command", id, command: "", output, exitCode: null, status }];
  }
  const call: AgentItem = { kind: "tool_call", id, name, inputJson: "", output, status };
  const input = use?.name === name ? use.input : null;
  const change = fileChangeItem(FILE_TOOLS, { id, name, input, status });
  return change ? [call, change] : [call];
}

/** The message of an `error` line of severity error, or null. */
function severeErrorIn(raw: string): string | null {
  const event = parseJsonObject(raw);
  if (event?.type !== "error" || event.severity !== "error") return null;
  return asString(event.message) || null;
}

/**
 * A failed result's message. An invalid stream from the model (an empty
 * reply, a malformed tool call, a blocked or cut-off answer) ends with a
 * `result` carrying no `error`: gemini prints its reason just before, as an
 * `error` line of severity error, which is read back here.
 */
function resultItems(event: JsonObject, earlier: EarlierLines): AgentItem[] {
  const items: AgentItem[] = [];
  const stats = asObject(event.stats);
  if (stats) {
    items.push(
      usageItem({ input: stats.input_tokens, cached: stats.cached, output: stats.output_tokens }),
    );
  }
  const success = event.status === "success";
  if (!success) {
    const message =
      asString(asObject(event.error)?.message) ||
      earlier('"severity":"error"', severeErrorIn) ||
      "Gemini run ended with an error.";
    items.push({ kind: "error", message, retryable: false, fatal: true });
    items.push({ kind: "result", success, text: message });
  } else {
    items.push({ kind: "result", success, text: "" });
  }
  return items;
}

/** Normalise one stdout line of Gemini's stream-json. Pure; never throws. */
export function normalizeGeminiLine(
  line: string,
  earlier: EarlierLines = NO_EARLIER_LINES,
): AgentItem[] {
  const event = parseJsonObject(line);
  if (!event) return [];
  switch (asString(event.type)) {
    case "message": {
      const text = asString(event.content);
      if (event.role !== "assistant" || text === "") return [];
      return [{ kind: "message", text, delta: event.delta === true }];
    }
    case "thought": {
      // Older builds (spec §6.3): {"type":"thought","value":{"subject","description"}}.
      const value = asObject(event.value);
      const text = [asString(value?.subject), asString(value?.description)]
        .filter((s) => s !== "")
        .join(": ");
      return text === "" ? [] : [{ kind: "reasoning", text }];
    }
    case "tool_use":
      return toolUseItems(event);
    case "tool_result":
      return toolResultItems(event, earlier);
    case "error": {
      // Mid-stream errors and warnings; the run's outcome comes with `result`.
      const message = asString(event.message);
      return message === "" ? [] : [{ kind: "error", message, retryable: false, fatal: false }];
    }
    case "result":
      return resultItems(event, earlier);
    default:
      return [];
  }
}
