/**
 * Batches of small file creations, run in order on a worker thread
 * (fs-batch-worker.mjs). A new session's workspace is about twenty local
 * creations: through libuv's thread pool each is a thread hand-off and a
 * promise on the runner's loop (several times the CPU of the call itself,
 * and a burst of new sessions interleaves so that all finish at the end);
 * run synchronously on the loop they would hold every other caller for the
 * kernel's time (about 1 ms per session, more under load). On a worker the
 * loop sends one message per session and stays free; sessions are written
 * in arrival order.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), "fs-batch-worker.mjs");

export type FsOp =
  | { op: "mkdir"; path: string; recursive?: boolean }
  | { op: "write"; path: string; content: string | Uint8Array; flag?: "w" | "wx"; mode?: number }
  /**
   * A relative symlink `path` -> `target`, or a copy of `copyFrom` where symlinks
   * fail; refused (EEXIST) when something is at `path` already.
   */
  | { op: "link"; path: string; target: string; copyFrom: string }
  /** Move `from` to `to`, refused (EEXIST) when `to` exists. */
  | { op: "claim"; from: string; to: string }
  /** `rm -rf path`. */
  | { op: "remove"; path: string }
  /**
   * Every directory from below `root` down to `path` made a real directory:
   * a symlink or anything else the session's agent put in the way is
   * removed (never followed) and replaced by a directory.
   */
  | { op: "ownDir"; root: string; path: string }
  /**
   * `path`'s content replaced through a fresh file renamed over it, so a
   * symlink, hard link or FIFO the agent left there is replaced, never
   * written through or opened.
   */
  | { op: "replaceFile"; path: string; content: string | Uint8Array; mode?: number }
  /** Write the tree registered as `tree` (`defineTree`) under the new directory `at`. */
  | { op: "stamp"; tree: string; at: string };

/** A tree for `stamp`: directories (parents first) and files, paths relative to the stamp ("" = itself). */
export type TreeOp =
  | { op: "mkdir"; path: string }
  | { op: "write"; path: string; content: string | Uint8Array; mode?: number };

/** How a batch ended: `failedAt` is the index of the op that failed (its error code and message), or -1. */
export interface FsBatchResult {
  failedAt: number;
  code: string;
  message: string;
}

interface Pending {
  worker: Worker;
  resolve(r: FsBatchResult): void;
  reject(err: Error): void;
}

export class FsBatchRunner {
  private worker: Worker | null = null;
  /** Batches the current worker has not answered: while there are any, it keeps the process alive. */
  private inFlight = 0;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly trees = new Map<string, readonly TreeOp[]>();

  /** Run `ops` in order; resolves with where it stopped (a failed op is a result, not a rejection). */
  run(ops: readonly FsOp[]): Promise<FsBatchResult> {
    const worker = this.worker ?? this.start();
    const id = this.nextId++;
    if (this.inFlight++ === 0) worker.ref();
    return new Promise<FsBatchResult>((resolve, reject) => {
      this.pending.set(id, { worker, resolve, reject });
      worker.postMessage({ id, ops });
    });
  }

  /**
   * Register a tree that `stamp` ops write: its contents cross to the worker
   * once, and each stamp is then a message of a few bytes (a spare workspace
   * every few milliseconds would otherwise leave its ops as garbage on both
   * threads). Kept across worker restarts.
   */
  defineTree(name: string, ops: readonly TreeOp[]): void {
    this.trees.set(name, ops);
    this.worker?.postMessage({ id: 0, tree: name, ops });
  }

  /**
   * Start the worker now and wait until it answers: the server does this at
   * start-up, so its isolate (≈ 8 MB of RSS) is part of the idle footprint
   * and the first new session does not wait for a thread to boot.
   */
  async warm(): Promise<void> {
    await this.run([]);
  }

  /** Whether no batch is waiting for the worker. */
  get idle(): boolean {
    return this.pending.size === 0;
  }

  /** Whether a worker is up. */
  get running(): boolean {
    return this.worker !== null;
  }

  /** Stop the worker (batches still running are failed). */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    if (worker) await worker.terminate();
  }

  private start(): Worker {
    // Bare node: the worker is plain JavaScript and needs none of the runner's flags.
    // A small young generation: the worker's garbage (a few KB per batch) is collected in the
    // pages it already has; by default the young generation kept growing, and making 1,000 spare
    // workspaces added 4.6 MB to the runner's RSS (0.5 MB with this cap).
    const worker = new Worker(WORKER, {
      execArgv: [],
      resourceLimits: { maxYoungGenerationSizeMb: 2 },
    });
    worker.on("message", (msg: { id: number } & FsBatchResult) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (worker === this.worker && --this.inFlight === 0) worker.unref();
      p.resolve({ failedAt: msg.failedAt, code: msg.code, message: msg.message });
    });
    worker.on("error", () => {}); // reported through "exit"
    worker.once("exit", () => {
      if (this.worker === worker) this.worker = null;
      for (const [id, p] of this.pending) {
        if (p.worker !== worker) continue;
        this.pending.delete(id);
        p.reject(new Error("The file-system worker stopped before finishing its batch."));
      }
    });
    for (const [tree, ops] of this.trees) worker.postMessage({ id: 0, tree, ops });
    // An idle worker never keeps the process alive (a runner stopped in-process, a CLI), a batch
    // in flight does (run). After the 'message' listener, which refs the worker again.
    worker.unref();
    this.inFlight = 0;
    this.worker = worker;
    return worker;
  }
}

/** The worker every workspace write goes through (new sessions, `.git` repairs, provider files). */
export const workspaceFs = new FsBatchRunner();
