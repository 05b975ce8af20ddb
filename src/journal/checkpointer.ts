import path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), "checkpoint-worker.cjs");

/** Log bytes written since the last checkpoint that make the next one due: SQLite's own default. */
export const CHECKPOINT_BYTES = 4 * 1024 * 1024;

/** How long a stopping checkpointer may take to finish its pass and empty the log. */
const STOP_MS = 5000;

/**
 * Checkpoints the run store's write-ahead log on a worker thread (see
 * checkpoint-worker.cjs): the store reports what it writes (`wrote`), and
 * every CHECKPOINT_BYTES one checkpoint is asked for, never two at once. If
 * the worker fails, `onFailed` is told once (the store then lets SQLite
 * checkpoint on its own again) and nothing more is asked of it.
 */
export class Checkpointer {
  private readonly worker: Worker;
  private owed = 0;
  private inFlight = false;
  private failed = false;
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
    // Never keeps the runner alive: the store's close stops it.
    this.worker.unref();
    this.exited = new Promise((resolve) => this.worker.once("exit", () => resolve()));
    this.worker.on("message", (msg: { error: string | null }) => {
      this.inFlight = false;
      if (msg.error !== null) return this.fail(msg.error);
      if (this.owed >= CHECKPOINT_BYTES) this.ask();
    });
    this.worker.on("error", (err) => this.fail(err.message));
    this.worker.on("exit", (code) => this.fail(`the checkpoint worker exited (${code})`));
  }

  /** About `bytes` went into the log (the caller's estimate: text plus page overhead). */
  wrote(bytes: number): void {
    this.owed += bytes;
    if (this.owed >= CHECKPOINT_BYTES && !this.inFlight) this.ask();
  }

  /**
   * Stop the worker once its pass (if any) is done: it empties the log and
   * closes its connection. Resolves when it has exited; one that takes longer
   * than STOP_MS (a store on a stalled disk) is terminated, which loses nothing.
   */
  close(): Promise<void> {
    if (!this.failed) {
      this.failed = true;
      this.worker.postMessage("stop");
      const late = setTimeout(() => void this.worker.terminate(), STOP_MS);
      late.unref();
      void this.exited.then(() => clearTimeout(late));
    }
    return this.exited;
  }

  private ask(): void {
    if (this.failed) return;
    this.owed = 0;
    this.inFlight = true;
    this.worker.postMessage("checkpoint");
  }

  private fail(why: string): void {
    if (this.failed) return;
    this.failed = true;
    void this.worker.terminate();
    this.onFailed(why);
  }
}
