/**
 * Paths a runner keeps fresh while it lives: their times are set to now
 * every `intervalMs`, so that a runner that cannot look this one up in /proc
 * (another container, another host) judges them by their age (owner.ts) and
 * never takes them for gone. Used for the directories a runner owns
 * (owner.ts) and the session lock files it holds (session-hold.ts).
 *
 * The timer runs only while there is a path to touch, and is unref'd: a
 * heartbeat never keeps the process alive.
 */
import { utimes } from "node:fs/promises";

export class Heartbeat {
  private readonly paths = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly intervalMs: number) {}

  /** Touch `p` from now on. */
  add(p: string): void {
    this.paths.add(p);
    this.timer ??= setInterval(() => void this.touch(), this.intervalMs).unref();
  }

  /** Stop touching `p`. */
  delete(p: string): void {
    this.paths.delete(p);
    if (this.paths.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  has(p: string): boolean {
    return this.paths.has(p);
  }

  /** Whether the timer runs (some path is kept fresh). */
  get running(): boolean {
    return this.timer !== undefined;
  }

  /** Touch every path now (the timer's beat; tests call it directly). */
  async touch(): Promise<void> {
    const now = new Date();
    // A path gone or replaced meanwhile is not the heartbeat's to revive (utimes only touches what
    // is there), nor its to forget: its owner says when it is done with it, and a failure that
    // passes (an I/O error) must not let others take a live runner's path for gone.
    await Promise.all([...this.paths].map((p) => utimes(p, now, now).catch(() => {})));
  }
}
