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

/** opencode's patch tool, which GPT-family models get instead of edit and write. */
const PATCH_TOOL = "apply_patch";

const PATCH_HEADERS: readonly (readonly [string, "add" | "update" | "delete"])[] = [
  ["*** Add File:", "add"],
  ["*** Update File:", "update"],
  ["*** Delete File:", "delete"],
];
const MOVE_HEADER = "*** Move to:";

/**
 * The files a patch names, read from its file headers as opencode's own patch
 * parser reads them (line start, path trimmed). The headers are in the call's
 * input whatever its status, unlike the `metadata.files` only a completed
 * call has. A move (`*** Move to:` right under an update) is the old path
 * deleted and the new one added, as opencode's file watcher reports it.
 */
function patchChanges(patchText: string): { path: string; kind: string }[] {
  const changes: { path: string; kind: string }[] = [];
  const lines = patchText.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? "";
    const header = PATCH_HEADERS.find(([prefix]) => line.startsWith(prefix));
    if (!header) continue;
    const path = line.slice(header[0].length).trim();
    if (path === "") continue;
    const next = lines[i + 1] ?? "";
    const to =
      header[1] === "update" && next.startsWith(MOVE_HEADER)
        ? next.slice(MOVE_HEADER.length).trim()
        : "";
    if (to !== "") {
      changes.push({ path, kind: "delete" }, { path: to, kind: "add" });
      i++;
    } else {
      changes.push({ path, kind: header[1] });
    }
  }
  return changes;
}

/**
 * Texts of opencode's permission errors (PermissionRejectedError,
 * PermissionCorrectedError, PermissionDeniedError), matched as opencode's own
 * UI matches them to tell a refused call from a failed one.
 */
const REFUSAL_TEXTS = [
  "rejected permission to use this specific tool call",
  "specified a rule which prevents you from using this specific tool call",
];

/**
 * One `tool_use` line: the call (a shell command or another tool) and, for a
 * file-writing tool, its change. The line comes once, finished, so the change
 * is final too; a `write` tells in its metadata whether the file existed.
 */
function toolItems(part: JsonObject): AgentItem[] {
  const id = asString(part.callID) || asString(part.id);
  const state = asObject(part.state);
  const metadata = asObject(state?.metadata);
  const output = toolOutput(state);
  const reported = asItemStatus(state?.status);
  const refused = reported === "failed" && REFUSAL_TEXTS.some((t) => output.includes(t));
  const status = refused ? "declined" : reported;
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
  if (name === PATCH_TOOL) {
    const changes = patchChanges(asString(asObject(input)?.patchText));
    return [call, { kind: "file_change", id, changes, status }];
  }
  const exists = metadata?.exists;
  const kind =
    name === "write" && typeof exists === "boolean" ? (exists ? "update" : "add") : undefined;
  const change = fileChangeItem(FILE_TOOLS, { id, name, input, status }, kind);
  return change ? [call, change] : [call];
}

/** AI SDK finish reasons that end the turn short of an answer. */
const FAILED_FINISH = new Set(["length", "content-filter", "error"]);

function stepFinishItems(part: JsonObject): AgentItem[] {
  const tokens = asObject(part.tokens);
  const cache = asObject(tokens?.cache);
  const cacheRead = asCount(cache?.read);
  const cacheWrite = asCount(cache?.write);
  // opencode's `input` excludes cache reads and writes; add them back (json-line.ts convention).
  const input = asCount(tokens?.input) + cacheRead + cacheWrite;
  const items: AgentItem[] = [
    usageItem({
      input,
      cached: cacheRead,
      cacheWrite,
      output: tokens?.output,
      reasoning: tokens?.reasoning,
      costUsd: part.cost,
    }),
  ];
  const reason = asString(part.reason);
  if (FAILED_FINISH.has(reason)) {
    items.push({ kind: "result", success: false, text: `opencode stopped: ${reason}.` });
  } else if (reason !== "" && reason !== "tool-calls") {
    // `stop`, and `other`/`unknown`: what the AI SDK (v6/v5) makes of a finish_reason it does not
    // know, or of none at all; gateways differ. opencode ends the turn normally on `other` and
    // runs one more step after `unknown`; that step's line (or an error) then overrides this
    // reading, as the run keeps the last one. `tool-calls` always has a step after it.
    items.push({ kind: "result", success: true, text: "" });
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
