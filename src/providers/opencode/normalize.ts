/**
 * `opencode run --format json` lines → `AgentItem`s (real-clis.md §4, spec
 * §6.3). Each line is `{type, timestamp, sessionID, part}`; text arrives whole
 * (no deltas) and a tool line is printed once, when the tool has finished.
 */
import type { AgentItem } from "../../events/run-event.js";
import {
  asCount,
  asExitCode,
  asItemStatus,
  asObject,
  asString,
  type FileTool,
  fileChangeItem,
  type JsonObject,
  parseJsonObject,
  toInputJson,
  usageItem,
} from "../json-line.js";

/** opencode's shell tool. */
const SHELL_TOOL = "bash";

function toolOutput(state: JsonObject | null): string {
  const output = state?.output;
  if (typeof output === "string") return output;
  const error = state?.error;
  if (typeof error === "string") return error;
  return asString(asObject(error)?.message);
}

/** opencode 1.18's file-writing tools (their parameters, as sent to the model). */
const FILE_TOOLS: Readonly<Record<string, FileTool>> = {
  write: { pathKey: "filePath", kind: "write" },
  edit: { pathKey: "filePath", kind: "update" },
};

/**
 * One `tool_use` line: the call (a shell command or another tool) and, for a
 * file-writing tool, its change. The line comes once, finished, so the change
 * is final too; a `write` tells in its metadata whether the file existed.
 */
function toolItems(part: JsonObject): AgentItem[] {
  const id = asString(part.callID) || asString(part.id);
  const state = asObject(part.state);
  const metadata = asObject(state?.metadata);
  const status = asItemStatus(state?.status);
  const output = toolOutput(state);
  const name = asString(part.tool);
  const input = state?.input;
  if (name === SHELL_TOOL) {
    const command = asString(asObject(input)?.command);
    const exitCode = asExitCode(metadata?.exit);
    return [{ kind: "command", id, command, output, exitCode, status }];
  }
  const call: AgentItem = {
    kind: "tool_call",
    id,
    name,
    inputJson: toInputJson(input),
    output,
    status,
  };
  const exists = metadata?.exists;
  const kind =
    name === "write" && typeof exists === "boolean" ? (exists ? "update" : "add") : undefined;
  const change = fileChangeItem(FILE_TOOLS, { id, name, input, status }, kind);
  return change ? [call, change] : [call];
}

/** Finish reasons that end the run (AI SDK `finishReason`); `tool-calls` means another step follows. */
const FAILED_FINISH = new Set(["length", "content-filter", "error"]);

function stepFinishItems(part: JsonObject): AgentItem[] {
  const tokens = asObject(part.tokens);
  const cache = asObject(tokens?.cache);
  const cacheRead = asCount(cache?.read);
  // opencode's `input` excludes cache reads and writes; add them back (json-line.ts convention).
  const input = asCount(tokens?.input) + cacheRead + asCount(cache?.write);
  const items: AgentItem[] = [
    usageItem({
      input,
      cached: cacheRead,
      output: tokens?.output,
      reasoning: tokens?.reasoning,
      costUsd: part.cost,
    }),
  ];
  const reason = asString(part.reason);
  if (reason === "stop") items.push({ kind: "result", success: true, text: "" });
  if (FAILED_FINISH.has(reason)) {
    items.push({ kind: "result", success: false, text: `opencode stopped: ${reason}.` });
  }
  return items;
}

/** `{"error":{"name","data":{"message","isRetryable"}}}`, or the older `{"message"}` (spec §6.3). */
function errorItems(event: JsonObject): AgentItem[] {
  const error = asObject(event.error);
  const data = asObject(error?.data);
  const message =
    asString(data?.message) || asString(event.message) || asString(error?.name) || "opencode error";
  return [
    { kind: "error", message, retryable: data?.isRetryable === true, fatal: true },
    { kind: "result", success: false, text: message },
  ];
}

/** Normalise one stdout line of `opencode run --format json`. Pure; never throws. */
export function normalizeOpencodeLine(line: string): AgentItem[] {
  const event = parseJsonObject(line);
  if (!event) return [];
  const part = asObject(event.part);
  switch (asString(event.type)) {
    case "text": {
      const text = asString(part?.text);
      return text === "" ? [] : [{ kind: "message", text, delta: false }];
    }
    case "reasoning": {
      const text = asString(part?.text);
      return text === "" ? [] : [{ kind: "reasoning", text }];
    }
    case "tool_use":
      return part ? toolItems(part) : [];
    case "step_finish":
      return part ? stepFinishItems(part) : [];
    case "error":
      return errorItems(event);
    default:
      return [];
  }
}
