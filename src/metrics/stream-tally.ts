import type { RunEventBody } from "../events/run-event.js";
import type { StreamFace, StreamObserver } from "./metrics.js";

/**
 * Counts a transport's events between two reports: per event it only bumps
 * a map entry, and the metrics are updated once per written batch (a
 * labelled counter increment per event cost more than the frame encoding).
 */
export class StreamTally {
  private readonly counts = new Map<string, number>();
  private bytes = 0;

  constructor(
    private readonly observer: StreamObserver,
    private readonly face: StreamFace,
  ) {}

  /** One event, counting the bytes of its provider line (agent raw line, log text). */
  addEvent(body: RunEventBody): void {
    this.add(
      body.type,
      body.type === "agent" ? body.raw.length : body.type === "log" ? body.text.length : 0,
    );
  }

  add(type: string, bytes: number): void {
    this.counts.set(type, (this.counts.get(type) ?? 0) + 1);
    this.bytes += bytes;
  }

  report(): void {
    if (this.counts.size === 0) return;
    this.observer.streamed(this.face, this.counts, this.bytes);
    this.counts.clear();
    this.bytes = 0;
  }
}
