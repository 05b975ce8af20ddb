/**
 * `gemini --output-format stream-json` lines → `AgentItem`s (real-clis.md §4,
 * spec §6.3): `init`, `message {role, content, delta}` (real token deltas),
 * `tool_use {tool_name, tool_id, parameters}`, `tool_result {tool_id, status,
 * output | error}`, `error {severity, message}`, `result {status, error, stats}`.
 */
import type { AgentItem } from "../../events/run-event.js";
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
 * The tool name inside a call id; a `tool_result` line carries only the id,
 * so this is how it is paired with a shell command without keeping state.
 * Gemini CLI 0.61 builds ids as `<tool>__<tool>_<epoch ms>_<n>` (captured from
 * the real CLI); older builds used `<tool>-<epoch ms>-<hex>`.
 */
export function toolNameFromId(toolId: string): string {
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

/** A result names only its tool id: a file tool's change comes without entries, to pair by id. */
function toolResultItems(event: JsonObject): AgentItem[] {
  const id = asString(event.tool_id);
  const error = asObject(event.error);
  const refused = asString(error?.type) === POLICY_VIOLATION;
  const status = refused ? "declined" : asItemStatus(event.status);
  const output = asString(event.output) || asString(error?.message);
  const name = toolNameFromId(id);
  if (name === SHELL_TOOL) {
    return [{ kind: "command", id, command: "", output, exitCode: null, status }];
  }
  const call: AgentItem = { kind: "tool_call", id, name, inputJson: "", output, status };
  const change = fileChangeItem(FILE_TOOLS, { id, name, input: null, status });
  return change ? [call, change] : [call];
}

function resultItems(event: JsonObject): AgentItem[] {
  const items: AgentItem[] = [];
  const stats = asObject(event.stats);
  if (stats) {
    items.push(
      usageItem({ input: stats.input_tokens, cached: stats.cached, output: stats.output_tokens }),
    );
  }
  const success = event.status === "success";
  const text = asString(asObject(event.error)?.message);
  if (!success) {
    const message = text || "Gemini run ended with an error.";
    items.push({ kind: "error", message, retryable: false, fatal: true });
    items.push({ kind: "result", success, text: message });
  } else {
    items.push({ kind: "result", success, text: "" });
  }
  return items;
}

/** Normalise one stdout line of Gemini's stream-json. Pure; never throws. */
export function normalizeGeminiLine(line: string): AgentItem[] {
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
      return toolResultItems(event);
    case "error": {
      // Mid-stream errors and warnings; the run's outcome comes with `result`.
      const message = asString(event.message);
      return message === "" ? [] : [{ kind: "error", message, retryable: false, fatal: false }];
    }
    case "result":
      return resultItems(event);
    default:
      return [];
  }
}
