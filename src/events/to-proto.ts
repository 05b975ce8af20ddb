import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  AgentItemSchema,
  type PackageOverlay,
  PackageOverlaySchema,
  type AgentItem as ProtoAgentItem,
  ExitReason as ProtoExitReason,
  ItemStatus as ProtoItemStatus,
  type RunEvent as ProtoRunEvent,
  RunEventSchema,
  type RunInfo,
  RunInfoSchema,
  RunStatus,
} from "../../gen/fermilink/runner/v1/run_pb.js";
import type { RunRecord } from "../journal/run-store.js";
import type { PackageOverlaySummary } from "../packages/overlay.js";
import type { AgentItem, ExitReason, ItemStatus, RunEvent } from "./run-event.js";

const EXIT_REASONS: Record<ExitReason, ProtoExitReason> = {
  completed: ProtoExitReason.COMPLETED,
  timeout: ProtoExitReason.TIMEOUT,
  cancelled: ProtoExitReason.CANCELLED,
  client_gone: ProtoExitReason.CLIENT_GONE,
  shutdown: ProtoExitReason.SHUTDOWN,
  error: ProtoExitReason.ERROR,
  interrupted: ProtoExitReason.INTERRUPTED,
  retries_exhausted: ProtoExitReason.RETRIES_EXHAUSTED,
};

function status(s: ItemStatus | null): ProtoItemStatus {
  switch (s) {
    case "in_progress":
      return ProtoItemStatus.IN_PROGRESS;
    case "completed":
      return ProtoItemStatus.COMPLETED;
    case "failed":
      return ProtoItemStatus.FAILED;
    case "declined":
      return ProtoItemStatus.DECLINED;
    case null:
      return ProtoItemStatus.UNSPECIFIED;
  }
}

function itemToProto(item: AgentItem): ProtoAgentItem {
  switch (item.kind) {
    case "message":
      return create(AgentItemSchema, { kind: { case: "message", value: item } });
    case "reasoning":
      return create(AgentItemSchema, { kind: { case: "reasoning", value: item } });
    case "command":
      return create(AgentItemSchema, {
        kind: {
          case: "command",
          value: { ...item, exitCode: item.exitCode ?? undefined, status: status(item.status) },
        },
      });
    case "file_change":
      return create(AgentItemSchema, {
        kind: { case: "fileChange", value: { ...item, status: status(item.status) } },
      });
    case "tool_call":
      return create(AgentItemSchema, {
        kind: { case: "toolCall", value: { ...item, status: status(item.status) } },
      });
    case "usage":
      return create(AgentItemSchema, {
        kind: {
          case: "usage",
          value: {
            inputTokens: BigInt(Math.max(0, Math.trunc(item.inputTokens))),
            cachedInputTokens: BigInt(Math.max(0, Math.trunc(item.cachedInputTokens))),
            outputTokens: BigInt(Math.max(0, Math.trunc(item.outputTokens))),
            reasoningTokens: BigInt(Math.max(0, Math.trunc(item.reasoningTokens))),
            costUsd: item.costUsd ?? undefined,
            cacheWriteInputTokens: BigInt(Math.max(0, Math.trunc(item.cacheWriteInputTokens))),
          },
        },
      });
    case "error":
      return create(AgentItemSchema, { kind: { case: "error", value: item } });
    case "result":
      return create(AgentItemSchema, { kind: { case: "result", value: item } });
  }
}

/** FermiLink's overlay summary, field for field (`requested_entries: null` is `allEntries`). */
export function packageToProto(p: PackageOverlaySummary): PackageOverlay {
  return create(PackageOverlaySchema, {
    packageId: p.package_id,
    packagePath: p.package_path,
    linkedCount: p.linked_count,
    collisionCount: p.collision_count,
    collisions: p.collisions,
    requestedEntries: p.requested_entries ?? [],
    allEntries: p.requested_entries === null,
    missingRequestedEntries: p.missing_requested_entries,
    dependencyPackageIds: p.dependency_package_ids,
    linkedDependencyCount: p.linked_dependency_count,
    linkedDependencyPackages: p.linked_dependency_packages.map((d) => ({
      packageId: d.package_id,
      mode: d.mode,
      source: d.source,
    })),
    missingDependencyPackages: p.missing_dependency_packages,
    dependencyCollisionCount: p.dependency_collision_count,
    dependencyCollisions: p.dependency_collisions,
  });
}

const RUN_STATUS: Record<RunRecord["status"], RunStatus> = {
  queued: RunStatus.QUEUED,
  running: RunStatus.RUNNING,
  finished: RunStatus.FINISHED,
};

const ts = (ms: number | null) => (ms === null ? undefined : timestampFromMs(ms));

/** A run's stored record as the proto `RunInfo`. */
export function runInfoToProto(r: RunRecord): RunInfo {
  return create(RunInfoSchema, {
    runId: r.runId,
    userId: r.userId ?? "",
    sessionId: r.sessionId,
    agent: {
      provider: r.policy.provider,
      sandboxPolicy: r.policy.sandboxPolicy,
      sandboxMode: r.policy.sandboxMode ?? undefined,
      model: r.policy.model ?? undefined,
      reasoningEffort: r.policy.reasoningEffort ?? undefined,
    },
    packageId: r.packageId ?? "",
    detached: r.detached,
    promptPreview: r.promptPreview,
    status: RUN_STATUS[r.status],
    createdAt: ts(r.createdAtMs),
    startedAt: ts(r.startedAtMs),
    endedAt: ts(r.endedAtMs),
    exitReason: r.exitReason ? EXIT_REASONS[r.exitReason] : ProtoExitReason.UNSPECIFIED,
    returnCode: r.returnCode ?? undefined,
    exitMessage: r.exitMessage,
    succeeded: r.succeeded ?? false,
    lastSeq: BigInt(r.lastSeq),
  });
}

/** The Connect message for one journal entry (total over the internal union). */
export function runEventToProto(event: RunEvent): ProtoRunEvent {
  const base = { runId: event.runId, seq: BigInt(event.seq), time: timestampFromMs(event.timeMs) };
  const b = event.body;
  switch (b.type) {
    case "queued":
      return create(RunEventSchema, {
        ...base,
        event: { case: "queued", value: { position: b.position, queueSize: b.queueSize } },
      });
    case "meta":
      return create(RunEventSchema, {
        ...base,
        event: {
          case: "meta",
          value: {
            sessionId: b.sessionId,
            workspacePath: b.workspacePath,
            agent: {
              provider: b.agent.provider,
              sandboxPolicy: b.agent.sandboxPolicy,
              sandboxMode: b.agent.sandboxMode ?? undefined,
              model: b.agent.model ?? undefined,
              reasoningEffort: b.agent.reasoningEffort ?? undefined,
            },
            package: b.package ? packageToProto(b.package) : undefined,
          },
        },
      });
    case "agent":
      return create(RunEventSchema, {
        ...base,
        event: {
          case: "agent",
          value: { raw: b.raw, truncated: b.truncated, items: b.items.map(itemToProto) },
        },
      });
    case "log":
      return create(RunEventSchema, {
        ...base,
        event: { case: "log", value: { text: b.text, truncated: b.truncated } },
      });
    case "exit":
      return create(RunEventSchema, {
        ...base,
        event: {
          case: "exit",
          value: {
            reason: EXIT_REASONS[b.reason],
            returnCode: b.returnCode ?? undefined,
            signal: b.signal ?? "",
            duration: durationFromMs(b.durationMs),
            message: b.message,
            succeeded: b.succeeded,
            killedByRunner: b.killedByRunner,
          },
        },
      });
  }
}
