import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { PROVIDER_IDS } from "../config/providers.js";
import type { ExitReason } from "../events/run-event.js";

/** The reasons a live run ends with (`interrupted` is found at a restart, never counted here). */
const ENDED_REASONS: readonly ExitReason[] = [
  "completed",
  "timeout",
  "cancelled",
  "client_gone",
  "shutdown",
  "error",
  "retries_exhausted",
];

/** The two streaming faces. */
export type StreamFace = "sse" | "connect";

/** What transports report about streaming (implemented by RunnerMetrics). */
export interface StreamObserver {
  /** Events written to one caller since the last report: count per event type, and line bytes. */
  streamed(face: StreamFace, counts: ReadonlyMap<string, number>, bytes: number): void;
  firstEventSent(face: StreamFace, ms: number): void;
}

/** What the metrics read from admission at scrape time. */
export interface AdmissionGauges {
  activeTotal: number;
  pendingTotal: number;
  globalLimit: number;
  perUserLimit: number;
  maxQueueSize: number;
}

/** Every metric name, help text and label set, in one place. */
export class RunnerMetrics implements StreamObserver {
  readonly registry = new Registry();
  readonly runsStarted: Counter<"provider">;
  readonly runsEnded: Counter<"provider" | "reason">;
  readonly admissionRejections: Counter<"scope">;
  readonly queueWait: Histogram;
  readonly timeToFirstEvent: Histogram<"face">;
  readonly runDuration: Histogram<"provider" | "reason">;
  readonly eventsStreamed: Counter<"face" | "type">;
  readonly bytesStreamed: Counter<"face">;
  readonly eventsReadBack: Counter;

  constructor(readAdmission: () => AdmissionGauges) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // FermiLink's gauges under their names (spec §1.3), read at scrape time.
    const gauge = (name: string, help: string, value: (a: AdmissionGauges) => number | null) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const v = value(readAdmission());
          // No sample, as FermiLink leaves the line out: reset() would report 0 (an empty queue).
          if (v === null) this.remove();
          else this.set(v);
        },
      });
    gauge("runner_active_runs", "Runs currently holding an admission slot.", (a) => a.activeTotal);
    gauge(
      "runner_global_run_limit",
      "Configured global concurrent run limit.",
      (a) => a.globalLimit,
    );
    gauge("runner_global_run_utilization", "Active runs divided by the global limit.", (a) =>
      a.globalLimit > 0 ? a.activeTotal / a.globalLimit : 0,
    );
    gauge("runner_pending_runs", "Runs waiting for an admission slot.", (a) => a.pendingTotal);
    gauge(
      "runner_per_user_run_limit",
      "Configured per-user concurrent run limit.",
      (a) => a.perUserLimit,
    );
    gauge("runner_queue_bounded", "1 when the admission queue has a capacity, else 0.", (a) =>
      a.maxQueueSize > 0 ? 1 : 0,
    );
    gauge("runner_queue_capacity", "Admission queue capacity (absent when unbounded).", (a) =>
      a.maxQueueSize > 0 ? a.maxQueueSize : null,
    );
    gauge("runner_queue_utilization", "Pending runs divided by the queue capacity.", (a) =>
      a.maxQueueSize > 0 ? a.pendingTotal / a.maxQueueSize : null,
    );

    this.runsStarted = new Counter({
      name: "fermilink_runner_runs_started_total",
      help: "Runs whose provider process was started.",
      labelNames: ["provider"],
      registers,
    });
    this.runsEnded = new Counter({
      name: "fermilink_runner_runs_ended_total",
      help: "Runs that ended, by provider and exit reason.",
      labelNames: ["provider", "reason"],
      registers,
    });
    this.admissionRejections = new Counter({
      name: "fermilink_runner_admission_rejections_total",
      help: "Runs refused because the admission queue was full, by scope (user or global).",
      labelNames: ["scope"],
      registers,
    });
    // Every series of a fixed label set exists from the start at 0: a series that first appears
    // at 1 shows no increase to rate() or increase(), so the first refusals (or failed runs)
    // after a restart would never alert.
    for (const scope of ["user", "global"]) this.admissionRejections.inc({ scope }, 0);
    for (const provider of PROVIDER_IDS) {
      this.runsStarted.inc({ provider }, 0);
      for (const reason of ENDED_REASONS) this.runsEnded.inc({ provider, reason }, 0);
    }
    this.queueWait = new Histogram({
      name: "fermilink_runner_queue_wait_seconds",
      help: "Time from request to admission.",
      buckets: [0.001, 0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800],
      registers,
    });
    this.timeToFirstEvent = new Histogram({
      name: "fermilink_runner_time_to_first_event_seconds",
      help: "Time from request to the first event sent to the caller.",
      labelNames: ["face"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
      registers,
    });
    this.runDuration = new Histogram({
      name: "fermilink_runner_run_duration_seconds",
      help: "Time from request to the run's end, by provider and exit reason.",
      labelNames: ["provider", "reason"],
      buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 600, 1800, 3600],
      registers,
    });
    this.eventsStreamed = new Counter({
      name: "fermilink_runner_events_streamed_total",
      help: "Events written to callers, by face (sse or connect) and event type.",
      labelNames: ["face", "type"],
      registers,
    });
    this.bytesStreamed = new Counter({
      name: "fermilink_runner_streamed_bytes_total",
      help: "UTF-8 bytes written to callers, by face: SSE frames as written; Connect, the provider lines carried.",
      labelNames: ["face"],
      registers,
    });
    this.eventsReadBack = new Counter({
      name: "fermilink_runner_events_read_back_total",
      help: "Events of live runs that viewers read from the store because they were further behind than the in-memory tail.",
      registers,
    });
  }

  /** RunObserver: a provider process started. */
  runStarted(provider: string): void {
    this.runsStarted.inc({ provider });
  }

  /** RunObserver: a run ended (its exit event was produced). */
  runEnded(provider: string, reason: ExitReason, durationMs: number): void {
    this.runsEnded.inc({ provider, reason });
    this.runDuration.observe({ provider, reason }, durationMs / 1000);
  }

  /** RunObserver: a viewer of a live run read `events` from the store. */
  readBack(events: number): void {
    this.eventsReadBack.inc(events);
  }

  private readonly streamedChildren = new Map<string, { inc(n?: number): void }>();

  /** A transport wrote events to a caller (label children cached: this is the hot path). */
  streamed(face: StreamFace, counts: ReadonlyMap<string, number>, bytes: number): void {
    for (const [type, n] of counts) {
      const key = `${face}/${type}`;
      let events = this.streamedChildren.get(key);
      if (!events) {
        events = this.eventsStreamed.labels(face, type);
        this.streamedChildren.set(key, events);
      }
      events.inc(n);
    }
    let total = this.streamedChildren.get(face);
    if (!total) {
      total = this.bytesStreamed.labels(face);
      this.streamedChildren.set(face, total);
    }
    total.inc(bytes);
  }

  /** A transport sent a run's first event, `ms` after the request arrived. */
  firstEventSent(face: StreamFace, ms: number): void {
    this.timeToFirstEvent.observe({ face }, ms / 1000);
  }
}
