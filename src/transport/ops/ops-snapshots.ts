import type { AdmissionController } from "../../admission/admission-controller.js";
import { admissionKeyForQuery } from "../../admission/user-key.js";
import { pyFloatRepr } from "../sse/py-json.js";

/**
 * FermiLink's `timestamp_utc` (spec §1.2): Python's `isoformat()` of a UTC
 * time with `+00:00` made `Z`, microseconds included (this clock has
 * milliseconds: the last three digits are 0).
 */
export function timestampUtc(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** The fields of `/ops/concurrency` that FermiLink computes as floats. */
const FLOAT_FIELDS = new Set(["global_utilization", "queue_utilization"]);

/**
 * `/ops/concurrency` as FastAPI writes it: compact JSON, in FermiLink's key
 * order, its two ratios as Python floats (`0.0`, `1.0`), which
 * `JSON.stringify` would write as the integers `0` and `1`.
 */
export function concurrencyJsonText(admission: AdmissionController, nowMs: number): string {
  const fields = Object.entries(concurrencySnapshot(admission, nowMs)).map(([key, value]) => {
    const text =
      FLOAT_FIELDS.has(key) && typeof value === "number"
        ? pyFloatRepr(value)
        : JSON.stringify(value);
    return `${JSON.stringify(key)}:${text}`;
  });
  return `{${fields.join(",")}}`;
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
  // FermiLink's help texts, and its values as Python's str() writes them: the ratios as floats.
  const gauge = (name: string, help: string, value: string | number) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${value}`);
  };
  gauge("runner_active_runs", "Active admitted runs in this runner process.", c.active_total);
  gauge("runner_global_run_limit", "Configured global active-run limit.", c.global_limit);
  gauge(
    "runner_global_run_utilization",
    "Active/global limit ratio.",
    pyFloatRepr(c.global_utilization),
  );
  gauge("runner_pending_runs", "Number of runs waiting in the admission queue.", c.pending_total);
  gauge("runner_per_user_run_limit", "Configured per-user active-run limit.", c.per_user_limit);
  gauge(
    "runner_queue_bounded",
    "Whether queue capacity is bounded (1) or unbounded (0).",
    c.queue_bounded ? 1 : 0,
  );
  if (c.queue_capacity !== null && c.queue_capacity > 0 && c.queue_utilization !== null) {
    gauge(
      "runner_queue_capacity",
      "Configured max number of pending queued runs.",
      c.queue_capacity,
    );
    gauge(
      "runner_queue_utilization",
      "Pending/queue capacity ratio.",
      pyFloatRepr(c.queue_utilization),
    );
  }
  return `${lines.join("\n")}\n`;
}
