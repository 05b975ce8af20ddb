/**
 * Narrowing helpers shared by the normalisers. Every provider line is
 * untrusted input: these never throw and turn anything unexpected into a
 * neutral value, so a normaliser can stay a plain total function.
 */
import type { AgentItem, ItemStatus } from "../events/run-event.js";

/** A parsed JSON object. */
export type JsonObject = Record<string, unknown>;

/** Parse one line as a JSON object; `null` for anything else (blank, text, arrays, bad JSON). */
export function parseJsonObject(line: string): JsonObject | null {
  const trimmed = line.trim();
  if (!trimmed.startsWith("{")) return null;
  try {
    const value: unknown = JSON.parse(trimmed);
    return asObject(value);
  } catch {
    return null;
  }
}

/** `value` when it is a plain object, else `null`. */
export function asObject(value: unknown): JsonObject | null {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as JsonObject)
    : null;
}

/** `value` when it is an array, else `[]`. */
export function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** `value` when it is a string, else `fallback`. */
export function asString(value: unknown, fallback = ""): string {
  return typeof value === "string" ? value : fallback;
}

/** `value` when it is a finite number, else `null`. */
export function asNumber(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** A token count for the proto's uint64 fields: a non-negative safe integer, 0 when absent. */
export function asCount(value: unknown): number {
  const n = asNumber(value);
  return n === null || n < 0 ? 0 : Math.min(Math.trunc(n), Number.MAX_SAFE_INTEGER);
}

/** An exit code for the proto's int32 field, or `null` when absent or not an integer. */
export function asExitCode(value: unknown): number | null {
  const n = asNumber(value);
  return n !== null && Number.isInteger(n) && Math.abs(n) <= 0x7fffffff ? n : null;
}

/** Map a provider's status word to `ItemStatus`; `null` when unknown. */
export function asItemStatus(value: unknown): ItemStatus | null {
  switch (asString(value).toLowerCase()) {
    case "in_progress":
    case "inprogress":
    case "running":
    case "pending":
      return "in_progress";
    case "completed":
    case "success":
      return "completed";
    case "failed":
    case "error":
      return "failed";
    case "declined":
      return "declined";
    default:
      return null;
  }
}

/** JSON text of a tool input; `"{}"` when absent; a string input is kept as it is. */
export function toInputJson(value: unknown): string {
  if (value === undefined || value === null) return "{}";
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value) ?? "{}";
  } catch {
    return "{}";
  }
}

/**
 * A usage item. All providers are mapped to one convention, OpenAI's:
 * `inputTokens` counts every prompt token, cached ones and those written to
 * the cache included; `cachedInputTokens` (read from the cache) and
 * `cacheWriteInputTokens` (written to it) are parts of it.
 */
export function usageItem(parts: {
  input: unknown;
  cached?: unknown;
  cacheWrite?: unknown;
  output: unknown;
  reasoning?: unknown;
  costUsd?: unknown;
}): AgentItem {
  return {
    kind: "usage",
    inputTokens: asCount(parts.input),
    cachedInputTokens: asCount(parts.cached),
    outputTokens: asCount(parts.output),
    reasoningTokens: asCount(parts.reasoning),
    costUsd: asNumber(parts.costUsd),
    cacheWriteInputTokens: asCount(parts.cacheWrite),
  };
}

/**
 * A tool call that has just started: a `command` item when `name` is the
 * provider's shell tool (its input's `command` field), else a `tool_call`.
 */
export function startedToolItem(
  id: string,
  name: string,
  shellTool: string,
  input: unknown,
): AgentItem {
  if (name === shellTool) {
    const command = asString(asObject(input)?.command);
    return { kind: "command", id, command, output: "", exitCode: null, status: "in_progress" };
  }
  return {
    kind: "tool_call",
    id,
    name,
    inputJson: toInputJson(input),
    output: "",
    status: "in_progress",
  };
}

/**
 * A tool that writes a file: the input field naming it, and the change it
 * makes when nothing more is known (`write`: the whole file, created or
 * replaced, the provider does not say which).
 */
export interface FileTool {
  pathKey: string;
  kind: "add" | "update" | "write";
}

/**
 * The `file_change` reading of a file tool's call (besides its `tool_call`
 * item, which keeps the whole input): `null` for any other tool. A call
 * without a usable path still yields the item, with no entries, so a
 * consumer can pair it by id with the start that named the file.
 */
export function fileChangeItem(
  tools: Readonly<Record<string, FileTool>>,
  call: { id: string; name: string; input: unknown; status: ItemStatus | null },
  kind?: string,
): AgentItem | null {
  const tool = Object.hasOwn(tools, call.name) ? tools[call.name] : undefined;
  if (!tool) return null;
  const path = asString(asObject(call.input)?.[tool.pathKey]);
  return {
    kind: "file_change",
    id: call.id,
    changes: path === "" ? [] : [{ path, kind: kind ?? tool.kind }],
    status: call.status,
  };
}
