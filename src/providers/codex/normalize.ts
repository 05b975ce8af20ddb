/**
 * `codex exec --json` lines → `AgentItem`s (real-clis.md §4, spec §6.3).
 * Codex sends whole items (no text deltas): `item.started` / `item.updated` /
 * `item.completed {item:{id,type,…}}`, then `turn.completed {usage}` or
 * `turn.failed {error}`, plus bare `{"type":"error"}` lines while it retries.
 */
import type { AgentItem } from "../../events/run-event.js";
import {
  asArray,
  asExitCode,
  asItemStatus,
  asObject,
  asString,
  type JsonObject,
  parseJsonObject,
  toInputJson,
  usageItem,
} from "../json-line.js";

/** Reasoning text: codex ≥0.40 sends `text`; older builds sent `summary:[{text}]` (spec §6.3). */
function reasoningText(item: JsonObject): string {
  const text = asString(item.text);
  if (text !== "") return text;
  return asArray(item.summary)
    .map((s) => asString(asObject(s)?.text))
    .filter((s) => s !== "")
    .join("\n");
}

function mcpOutput(item: JsonObject): string {
  const error = asString(asObject(item.error)?.message);
  if (error !== "") return error;
  const result = asObject(item.result);
  if (!result) return "";
  const texts = asArray(result.content)
    .map((c) => asString(asObject(c)?.text))
    .filter((t) => t !== "");
  return texts.length > 0 ? texts.join("\n") : toInputJson(result.structured_content ?? null);
}

/** One thread item. Messages and reasoning are reported once, when complete. */
function itemToAgentItems(item: JsonObject, completed: boolean): AgentItem[] {
  const id = asString(item.id);
  const status = asItemStatus(item.status);
  switch (asString(item.type)) {
    case "agent_message": {
      const text = asString(item.text);
      return completed && text !== "" ? [{ kind: "message", text, delta: false }] : [];
    }
    case "reasoning": {
      const text = reasoningText(item);
      return completed && text !== "" ? [{ kind: "reasoning", text }] : [];
    }
    case "command_execution":
      return [
        {
          kind: "command",
          id,
          command: asString(item.command),
          output: asString(item.aggregated_output, asString(item.stdout)),
          exitCode: asExitCode(item.exit_code),
          status: status ?? (completed ? "completed" : "in_progress"),
        },
      ];
    case "file_change":
      return [
        {
          kind: "file_change",
          id,
          changes: asArray(item.changes).flatMap((c) => {
            const change = asObject(c);
            const path = asString(change?.path);
            return path === "" ? [] : [{ path, kind: asString(change?.kind) }];
          }),
          status,
        },
      ];
    case "mcp_tool_call":
      return [
        {
          kind: "tool_call",
          id,
          name: `${asString(item.server)}.${asString(item.tool)}`,
          inputJson: toInputJson(item.arguments),
          output: mcpOutput(item),
          status,
        },
      ];
    case "function_call":
      return [
        {
          kind: "tool_call",
          id: id || asString(item.call_id),
          name: asString(item.name),
          inputJson: toInputJson(item.arguments),
          output: "",
          status: status ?? (completed ? "completed" : "in_progress"),
        },
      ];
    case "web_search":
      return [
        {
          kind: "tool_call",
          id,
          name: "web_search",
          inputJson: JSON.stringify({ query: asString(item.query) }),
          output: "",
          status: status ?? (completed ? "completed" : "in_progress"),
        },
      ];
    case "error": {
      // Non-fatal warnings, e.g. "Model metadata for `x` not found" (real-clis.md §3).
      const message = asString(item.message);
      return message === "" ? [] : [{ kind: "error", message, retryable: false, fatal: false }];
    }
    default:
      return [];
  }
}

/** Normalise one stdout line of `codex exec --json`. Pure; never throws. */
export function normalizeCodexLine(line: string): AgentItem[] {
  const event = parseJsonObject(line);
  if (!event) return [];
  switch (asString(event.type)) {
    case "item.started":
    case "item.updated":
    case "item.completed": {
      const item = asObject(event.item);
      return item ? itemToAgentItems(item, event.type === "item.completed") : [];
    }
    case "turn.completed": {
      const usage = asObject(event.usage);
      const items: AgentItem[] = [];
      if (usage) {
        items.push(
          usageItem({
            input: usage.input_tokens,
            cached: usage.cached_input_tokens,
            // Codex ≥0.169 (real-tool-run transcript); like the cached count, part of input_tokens.
            cacheWrite: usage.cache_write_input_tokens,
            output: usage.output_tokens,
            reasoning: usage.reasoning_output_tokens,
          }),
        );
      }
      items.push({ kind: "result", success: true, text: "" });
      return items;
    }
    case "turn.failed": {
      const message = asString(asObject(event.error)?.message, "Codex turn failed.");
      return [
        { kind: "error", message, retryable: false, fatal: true },
        { kind: "result", success: false, text: message },
      ];
    }
    case "error": {
      // Codex documents a bare error as unrecoverable, except its own retry notices.
      const message = asString(event.message);
      if (message === "") return [];
      const retryable = message.startsWith("Reconnecting");
      return [{ kind: "error", message, retryable, fatal: !retryable }];
    }
    default:
      return [];
  }
}
