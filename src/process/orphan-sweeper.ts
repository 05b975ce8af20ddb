/**
 * Processes a finished run left behind. The group kill reaches everything
 * that stayed in the provider's process group, and a process that left the
 * group while holding the pipes is killed when the pipes are cut
 * (supervised-process.ts); but one that left the group (`setsid`, a detached
 * spawn) and closed its output is seen by neither, and a provider whose spawn
 * helper died before the child was reported was never supervised at all.
 * Every provider process carries its run id in its environment
 * (reap-orphans.ts), so once a run's processes should all be gone, its id is
 * looked for in /proc at the next few sweeps and whatever carries it is
 * killed. One sweep covers every run that ended since the last: the cost
 * does not grow with the number of runs.
 */
import type { Logger } from "../log/logger.js";
import { reapOrphans } from "./reap-orphans.js";

export interface OrphanSweeperOptions {
  /** Time between a run's end and the first sweep that looks for it, and between sweeps. */
  intervalMs: number;
  /** Sweeps that look for each run id (a process may fork before it is found). */
  sweeps: number;
  /** SIGTERM first, and this long to exit before SIGKILL (0: SIGKILL at once). */
  graceMs: number;
  logger: Logger;
}

/** How soon a sweep follows a run whose provider may never have been supervised. */
const SOON_MS = 100;

export class OrphanSweeper {
  /** Run ids still looked for, with how many sweeps are left for each. */
  private readonly pending = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private timerDueAt = Number.POSITIVE_INFINITY;
  private sweeping: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly opts: OrphanSweeperOptions) {}

  /** Run ids still to be looked for (tests). */
  get pendingRuns(): number {
    return this.pending.size;
  }

  /**
   * Every process of `runId` should be gone now: look for it in the next
   * sweeps. `soon` when a start failed in a way that may have left a
   * process nobody supervises (the spawn helper died).
   */
  runEnded(runId: string, soon = false): void {
    if (this.stopped) {
      void this.sweepFor(new Set([runId]));
      return;
    }
    this.pending.set(runId, this.opts.sweeps);
    this.schedule(soon ? SOON_MS : this.opts.intervalMs);
  }

  /** No more sweeps after one last for every run id still pending (at shutdown, after the runs). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.sweeping;
    const ids = new Set(this.pending.keys());
    this.pending.clear();
    await this.sweepFor(ids);
  }

  private schedule(inMs: number): void {
    if (this.stopped || this.pending.size === 0) return;
    const due = Date.now() + inMs;
    if (this.timer !== undefined && this.timerDueAt <= due) return;
    clearTimeout(this.timer);
    this.timerDueAt = due;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerDueAt = Number.POSITIVE_INFINITY;
      void this.sweep();
    }, inMs);
    // Never what keeps the runner alive.
    this.timer.unref();
  }

  private sweep(): Promise<void> {
    this.sweeping ??= (async () => {
      const ids = new Set(this.pending.keys());
      await this.sweepFor(ids);
      for (const id of ids) {
        const left = (this.pending.get(id) ?? 1) - 1;
        if (left > 0) this.pending.set(id, left);
        else this.pending.delete(id);
      }
    })().finally(() => {
      this.sweeping = undefined;
      this.schedule(this.opts.intervalMs);
    });
    return this.sweeping;
  }

  private async sweepFor(ids: ReadonlySet<string>): Promise<void> {
    try {
      const killed = await reapOrphans(ids, this.opts.graceMs);
      if (killed.length > 0) {
        this.opts.logger.warn(
          { pids: killed.map((p) => p.pid) },
          "killed processes that finished runs left behind",
        );
      }
    } catch (err) {
      this.opts.logger.warn({ err }, "could not look for processes finished runs left behind");
    }
  }
}
