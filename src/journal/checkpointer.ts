import path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), "checkpoint-worker.cjs");

/** Log bytes written since the last checkpoint that make the next one due: SQLite's own default. */
export const CHECKPOINT_BYTES = 4 * 1024 * 1024;

/** How long a stopping checkpointer may take to finish its pass and empty the log. */
const STOP_MS = 5000;

/**
 * How soon after a write the log is copied to its end, once CATCH_UP_BYTES
 * are owed since the last such pass. SQLite starts the log over (and cuts its
 * file back to the store's journal_size_limit) only from a write that finds
 * every frame copied; asked only per CHECKPOINT_BYTES, a checkpoint left the
 * frames after it uncopied, even across idle minutes, and the log grew to the
 * ≈ 100 MB backstop. The delay bounds the passes a trickle of writes costs
 * (each ends with two fsyncs) to 1000 / CATCH_UP_MS a second.
 */
const CATCH_UP_MS = 50;

/**
 * Log bytes since the last catch-up pass that make the next one come after
 * CATCH_UP_MS; less waits IDLE_CATCH_UP_MS. The write that starts the log
 * over syncs its header (SQLite's guard against reordered writes), on the
 * runner's event loop: a pass after every small write made nearly every
 * commit of a trickle (a run's start and end) pay an fsync, 0.3 to 1.5 ms
 * here. Now a trickle pays one per CATCH_UP_BYTES or per IDLE_CATCH_UP_MS.
 */
export const CATCH_UP_BYTES = 1024 * 1024;

/** When less than CATCH_UP_BYTES is owed, the log is still copied to its end this soon after a write. */
export const IDLE_CATCH_UP_MS = 2000;

/**
 * Checkpoints the run store's write-ahead log on a worker thread (see
 * checkpoint-worker.cjs): the store reports what it writes (`wrote`); one
 * checkpoint is asked for every CHECKPOINT_BYTES, and one after any write not
 * yet asked for (CATCH_UP_MS on once CATCH_UP_BYTES were written since the
 * last, else IDLE_CATCH_UP_MS on), never two at once. PASSIVE passes never hold the
 * writer up, so the log starts over only when the writer pauses for as long
 * as a pass takes; a writer that never pauses is bounded by SQLite's own
 * backstop (see the store). If the worker fails, `onFailed` is told once (the
 * store then lets SQLite checkpoint on its own again) and nothing more is
 * asked of it.
 */
export class Checkpointer {
  private readonly worker: Worker;
  private owed = 0;
  /** Log bytes since the last catch-up pass was asked (CATCH_UP_BYTES). */
  private sinceCatchUp = 0;
  private inFlight = false;
  private failed = false;
  /** Set while a catch-up pass waits (armed only while none is in flight). */
  private catchUp: NodeJS.Timeout | undefined;
  /** Whether the armed catch-up is the soon one (CATCH_UP_MS). */
  private catchUpSoon = false;
  private readonly onCatchUp = () => {
    this.catchUp = undefined;
    if (this.owed > 0 && !this.inFlight) {
      this.sinceCatchUp = 0;
      this.ask();
    }
  };
  private readonly exited: Promise<void>;

  constructor(
    file: string,
    private readonly onFailed: (why: string) => void,
  ) {
    // A small young generation, as the file-system worker's: its garbage is a few bytes a message.
    this.worker = new Worker(WORKER, {
      workerData: { file },
      execArgv: [],
      resourceLimits: {
        maxYoungGenerationSizeMb: 1,
        maxOldGenerationSizeMb: 8,
        codeRangeSizeMb: 4,
      },
    });
    // Not unref'd: the store's close awaits its exit, which an unref'd worker would let the
    // process skip (it ended mid-shutdown). A 'message' listener refs a worker again anyway.
    this.exited = new Promise((resolve) => this.worker.once("exit", () => resolve()));
    this.worker.on("message", (msg: { error: string | null }) => {
      this.inFlight = false;
      if (msg.error !== null) return this.fail(msg.error);
      this.next();
    });
    this.worker.on("error", (err) => this.fail(err.message));
    this.worker.on("exit", (code) => this.fail(`the checkpoint worker exited (${code})`));
  }

  /** About `bytes` went into the log (the caller's estimate: text plus page overhead). */
  wrote(bytes: number): void {
    this.owed += bytes;
    this.sinceCatchUp += bytes;
    if (!this.inFlight) this.next();
  }

  /**
   * Stop the worker once its pass (if any) is done: it empties the log and
   * closes its connection. Resolves when it has exited; one that takes longer
   * than STOP_MS (a store on a stalled disk) is terminated, which loses nothing.
   */
  close(): Promise<void> {
    clearTimeout(this.catchUp);
    if (!this.failed) {
      this.failed = true;
      this.worker.postMessage("stop");
      const late = setTimeout(() => void this.worker.terminate(), STOP_MS);
      late.unref();
      void this.exited.then(() => clearTimeout(late));
    }
    return this.exited;
  }

  /**
   * No pass in flight: one now if CHECKPOINT_BYTES are owed, else one soon if
   * anything is (sooner once CATCH_UP_BYTES were written since the last).
   */
  private next(): void {
    if (this.owed >= CHECKPOINT_BYTES) this.ask();
    else if (this.owed > 0 && !this.failed) {
      const soon = this.sinceCatchUp >= CATCH_UP_BYTES;
      // A pass armed for later is brought forward once enough is owed.
      if (this.catchUp !== undefined && soon && !this.catchUpSoon) {
        clearTimeout(this.catchUp);
        this.catchUp = undefined;
      }
      if (this.catchUp !== undefined) return;
      this.catchUpSoon = soon;
      // Unref'd: a pending catch-up never keeps the runner alive (close empties the log anyway).
      this.catchUp = setTimeout(this.onCatchUp, soon ? CATCH_UP_MS : IDLE_CATCH_UP_MS).unref();
    }
  }

  private ask(): void {
    if (this.failed) return;
    clearTimeout(this.catchUp);
    this.catchUp = undefined;
    this.owed = 0;
    this.inFlight = true;
    this.worker.postMessage("checkpoint");
  }

  private fail(why: string): void {
    if (this.failed) return;
    this.failed = true;
    clearTimeout(this.catchUp);
    void this.worker.terminate();
    this.onFailed(why);
  }
}
