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

  /**
   * One event, counting the UTF-8 bytes of its provider line (agent raw line,
   * log text); `Buffer.byteLength` is ~25 ns for a 200-byte ASCII line.
   */
  addEvent(body: RunEventBody): void {
    const text = body.type === "agent" ? body.raw : body.type === "log" ? body.text : "";
    this.add(body.type, text === "" ? 0 : Buffer.byteLength(text, "utf8"));
  }

  /** Bytes written that belong to no single event (a write of several frames). */
  addBytes(bytes: number): void {
    this.bytes += bytes;
  }

  add(type: string, bytes: number): void {
    this.counts.set(type, (this.counts.get(type) ?? 0) + 1);
    this.bytes += bytes;
  }

  report(): void {
    if (this.counts.size === 0 && this.bytes === 0) return;
    this.observer.streamed(this.face, this.counts, this.bytes);
    this.counts.clear();
    this.bytes = 0;
  }
}
