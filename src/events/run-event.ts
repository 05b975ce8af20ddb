/**
 * The internal event language of a run. It mirrors the `RunEvent` oneof in
 * `proto/fermilink/runner/v1/run.proto` (the source of truth); the Connect
 * encoder (`events/to-proto.ts`) and the SSE encoder are total functions over
 * this union, so a forgotten variant fails type-checking.
 */

import type { PackageOverlaySummary } from "../packages/overlay.js";

/** Why a run ended (proto `ExitReason`). */
export type ExitReason =
  | "completed"
  | "timeout"
  | "cancelled"
  | "client_gone"
  | "shutdown"
  | "error"
  /** The runner process stopped (crash, kill -9) while the run was live; found at the next start. */
  | "interrupted"
  /** The provider's model calls kept failing; the runner ended it after its retry budget. */
  | "retries_exhausted";

/** Lifecycle state of a command, tool call or file change (proto `ItemStatus`). */
export type ItemStatus = "in_progress" | "completed" | "failed" | "declined";

/** The agent policy a run uses (FermiLink's `meta.agent`). */
export interface AgentPolicy {
  provider: string;
  sandboxPolicy: "enforce" | "bypass";
  sandboxMode: string | null;
  model: string | null;
  reasoningEffort: string | null;
}

/** One provider-independent reading of a provider stdout line (proto `AgentItem`). */
export type AgentItem =
  | { kind: "message"; text: string; delta: boolean }
  | { kind: "reasoning"; text: string }
  | {
      kind: "command";
      id: string;
      command: string;
      output: string;
      exitCode: number | null;
      status: ItemStatus | null;
    }
  | {
      kind: "file_change";
      id: string;
      changes: { path: string; kind: string }[];
      status: ItemStatus | null;
    }
  | {
      kind: "tool_call";
      id: string;
      name: string;
      inputJson: string;
      output: string;
      status: ItemStatus | null;
    }
  | {
      kind: "usage";
      inputTokens: number;
      cachedInputTokens: number;
      outputTokens: number;
      reasoningTokens: number;
      costUsd: number | null;
      cacheWriteInputTokens: number;
    }
  | { kind: "error"; message: string; retryable: boolean; fatal: boolean }
  | { kind: "result"; success: boolean; text: string };

/** The payload of one journal entry (proto `RunEvent.event`). */
export type RunEventBody =
  /** Waiting for an admission slot. */
  | { type: "queued"; position: number; queueSize: number }
  /** The run started. `package` is the overlay summary (FermiLink §5.4) when a package was overlaid. */
  | {
      type: "meta";
      sessionId: string;
      agent: AgentPolicy;
      workspacePath: string;
      package: PackageOverlaySummary | null;
    }
  /** One stdout line of the provider, verbatim, plus typed readings. */
  | { type: "agent"; raw: string; items: AgentItem[]; truncated: boolean }
  /** One stderr line of the provider. */
  | { type: "log"; text: string; truncated: boolean }
  /** The run ended; always last. `returnCode` is negative for a signal (FermiLink's convention). */
  | {
      type: "exit";
      reason: ExitReason;
      returnCode: number | null;
      signal: string | null;
      durationMs: number;
      message: string;
      /** The runner signalled the process (timeout, cancel, client gone, shutdown), whatever its exit code says. */
      killedByRunner: boolean;
      /** The provider ended by itself with return code 0 and reported a successful final result. */
      succeeded: boolean;
    };

/** One entry of a run's journal. */
export interface RunEvent {
  runId: string;
  /** 1-based, gap-free position in the run's journal. */
  seq: number;
  /** Milliseconds since the epoch when the runner recorded it. */
  timeMs: number;
  body: RunEventBody;
}

/**
 * The run's earlier stdout lines, newest first, for a provider line that
 * names what an earlier one started (a Claude tool result names only its
 * call's id): the first of them that holds `needle` and that `pick` reads as
 * non-null, or null. How far back it looks is fixed per line
 * (`journal/earlier-lines.ts`), whoever asks and whenever (live, or read back
 * from the store), so every viewer gets the same reading of a line.
 */
export type EarlierLines = <T>(needle: string, pick: (raw: string) => T | null) => T | null;

/** No earlier lines (a line read alone). */
export const NO_EARLIER_LINES: EarlierLines = () => null;
