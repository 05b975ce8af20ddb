import type { AdmissionController } from "../../admission/admission-controller.js";
import { admissionKeyForQuery } from "../../admission/user-key.js";

/** FermiLink's `timestamp_utc`: ISO-8601 with a trailing Z (spec §1.2). */
export function timestampUtc(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * FermiLink's `/ops/concurrency` object (spec §1.2). Read straight from the
 * controller's counters: no lock, no await, so it stays fast under a burst.
 */
export function concurrencySnapshot(admission: AdmissionController, nowMs: number) {
  const s = admission.snapshot();
  const bounded = admission.maxQueueSize > 0;
  return {
    active_total: s.active_total,
    global_limit: s.global_limit,
    global_utilization: s.global_limit > 0 ? s.active_total / s.global_limit : 0,
    pending_total: s.pending_total,
    queue_bounded: bounded,
    queue_capacity: bounded ? admission.maxQueueSize : null,
    queue_utilization: bounded ? s.pending_total / admission.maxQueueSize : null,
    per_user_limit: s.per_user_limit,
    timestamp_utc: timestampUtc(nowMs),
  };
}

/** FermiLink's `/ops/admission` object (spec §1.4), with `can_run_now` fixed (§10 item 18). */
export function admissionSnapshot(
  admission: AdmissionController,
  userId: string | undefined,
  sessionId: string | undefined,
  nowMs: number,
) {
  return {
    ...admission.snapshotForUser(admissionKeyForQuery(userId, sessionId)),
    timestamp_utc: timestampUtc(nowMs),
  };
}

/** FermiLink's `/ops/concurrency.prom` text, gauge by gauge in its order (spec §1.3). */
export function concurrencyPrometheusText(admission: AdmissionController, nowMs: number): string {
  const c = concurrencySnapshot(admission, nowMs);
  const lines: string[] = [];
  const gauge = (name: string, help: string, value: number) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${value}`);
  };
  gauge("runner_active_runs", "Active runner executions.", c.active_total);
  gauge("runner_global_run_limit", "Configured global concurrent run limit.", c.global_limit);
  gauge(
    "runner_global_run_utilization",
    "Active runs divided by the global run limit.",
    c.global_utilization,
  );
  gauge("runner_pending_runs", "Queued runner executions waiting for a slot.", c.pending_total);
  gauge("runner_per_user_run_limit", "Configured per-user concurrent run limit.", c.per_user_limit);
  gauge(
    "runner_queue_bounded",
    "Whether the runner queue is bounded (1) or not (0).",
    c.queue_bounded ? 1 : 0,
  );
  if (c.queue_capacity !== null && c.queue_capacity > 0 && c.queue_utilization !== null) {
    gauge("runner_queue_capacity", "Configured runner queue capacity.", c.queue_capacity);
    gauge(
      "runner_queue_utilization",
      "Pending runs divided by the queue capacity.",
      c.queue_utilization,
    );
  }
  return `${lines.join("\n")}\n`;
}
