/**
 * Spare session directories, made ahead of need: a new session on the
 * built-in template renames one into place instead of creating its ~15
 * directories and files while its caller waits for the first byte.
 *
 * Why: creating a file costs the kernel an inode allocation, and ext4
 * without a journal (as on this project's machines) skips every inode freed
 * in the last minutes, reading its inode-table block for each. After a large
 * delete (a previous runner's or any other program's workspaces) a new
 * session's files took 3–4 ms of kernel time instead of 0.3 ms, and a burst
 * of 200 new sessions held its last first byte for up to 1.4 s. A rename
 * allocates nothing. Spares are made on the file-system worker only while it
 * has nothing else to do, so making them never delays a run.
 *
 * Layout: `<root>/.runner-spares/<layout key>/<owner>/<n>/`, each a complete
 * new session (`.tmp/`, `repo/` with AGENTS.md, the empty git repo,
 * `projects/.memory.md.tmp` empty, `outputs/`). The key hashes everything a spare
 * contains; the owner is the runner that made or took over the spares
 * (owner.ts). Runners sharing a root (a rolling deploy) each use only their
 * own: at start-up a runner takes over the spares of its layout whose owner
 * is gone (reused after a restart) and removes the rest of what gone runners
 * left, never a live runner's, whatever its layout. A spare is built under a
 * `.building-` name and renamed when complete: a crash never leaves a
 * half-made one where it could be taken.
 */
import { createHash, randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, rename, rmdir } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../log/logger.js";
import type { FsBatchRunner, FsOp, TreeOp } from "./fs-batch/fs-batch.js";
import { freshGitRepoOps, type GitSkeleton } from "./git-repo.js";
import { forgetFresh, keepFresh, ownerGone, runnerOwner } from "./owner.js";
import { MEMORY_TEMP_NAME, SESSION_TMP_DIRNAME } from "./session-path.js";

/** Under the workspaces root; a dot name, so no session id can take it. */
export const SPARES_DIRNAME = ".runner-spares";

/** Bump when the layout of a spare changes (the key then changes, and old spares go). */
const LAYOUT_VERSION = "2";

/**
 * What a starting runner removes of a gone runner is first renamed to this
 * prefix in one step, so that another runner starting at the same time, which
 * takes spares out of it one rename each, gets a whole spare or none, never one
 * half removed; what a removal cut short leaves is removed, never taken.
 */
const TRASH_PREFIX = ".trash-";

/** A ready spare's name in a runner's layout directory before spares had owners. */
const LEGACY_SPARE = /^[0-9a-f]{8}-\d+$/;

/** How long to wait before making spares again after one could not be made. */
const RETRY_AFTER_FAILURE_MS = 60_000;

/** The longest pause between attempts to set the pool up, in pauses after a failure. */
const MAX_OPEN_BACKOFF = 16;

/** How often a filler waiting for the worker to be idle looks again. */
const IDLE_POLL_MS = 25;

/** What every spare contains. */
export interface SpareContent {
  /** The built-in template's AGENTS.md. */
  agents: Buffer;
  /** The empty git repo's layout. */
  skeleton: GitSkeleton;
}

/** How a taken spare ended: it became the session, the session already existed, or it is unusable. */
export type SpareOutcome = "claimed" | "unused" | "broken";

/** What `prepareWorkspace` needs of the pool. */
export interface SpareSource {
  /** A ready spare session directory to claim, or null when there is none. */
  take(): string | null;
  /** Report how the claim of a taken spare ended. */
  settle(dir: string, outcome: SpareOutcome): void;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

function layoutKey(content: SpareContent): string {
  const h = createHash("sha256");
  h.update(`${LAYOUT_VERSION}\0`).update(content.agents).update("\0");
  for (const d of content.skeleton.dirs) h.update(`d ${d}\0`);
  for (const f of content.skeleton.files) h.update(`f ${f.rel}\0`).update(f.content).update("\0");
  return h.digest("hex").slice(0, 16);
}

/** A new session's directory, minus what depends on the run, relative to the session dir. */
export function spareTree(content: SpareContent): TreeOp[] {
  const git = freshGitRepoOps("repo", content.skeleton) as TreeOp[];
  return [
    { op: "mkdir", path: "" },
    { op: "mkdir", path: SESSION_TMP_DIRNAME },
    { op: "mkdir", path: "repo" },
    { op: "write", path: "repo/AGENTS.md", content: content.agents },
    ...git,
    { op: "mkdir", path: "repo/projects" },
    // Filled and renamed into place by the claim: made here, it costs the claim no inode.
    { op: "write", path: `repo/projects/${MEMORY_TEMP_NAME}`, content: "" },
    { op: "mkdir", path: "repo/outputs" },
  ];
}

export class SpareWorkspaces implements SpareSource {
  private readonly ready: string[] = [];
  /** This runner's directory name in the layout's directory (owner.ts). */
  private readonly owner: string;
  private made = 0;
  private dir: string | null = null;
  /** The spare layout's name on the file-system worker. */
  private tree = "";
  private starting: Promise<void> | null = null;
  private filling: Promise<void> | null = null;
  private failedAtMs = Number.NEGATIVE_INFINITY;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Failed attempts to set the pool up, since the last that worked. */
  private openFailures = 0;
  private openTimer: NodeJS.Timeout | undefined;
  private readonly retryAfterFailureMs: number;
  private stopped = false;

  constructor(
    private readonly opts: {
      workspacesRoot: string;
      /** How many spares to keep ready (0: none). */
      target: number;
      content: () => Promise<SpareContent>;
      fs: FsBatchRunner;
      logger: Logger;
      /** The pause after a spare could not be made or claimed (tests shorten it). */
      retryAfterFailureMs?: number;
      /** Whose spares these are (owner.ts); this process by default. */
      owner?: string;
    },
  ) {
    this.retryAfterFailureMs = opts.retryAfterFailureMs ?? RETRY_AFTER_FAILURE_MS;
    this.owner = opts.owner ?? runnerOwner();
  }

  /** Spares ready to be taken. */
  get readyCount(): number {
    return this.ready.length;
  }

  /**
   * Find the spares an earlier runner left, remove outdated ones, and start
   * making the rest in the background. A failure here only leaves the pool
   * empty for a while: new sessions are then created file by file, as without
   * it, and the pool is set up again after a pause that doubles with each
   * failure (a passing failure, such as the git template not made yet, had
   * left a runner without spares for its whole life).
   */
  start(): Promise<void> {
    this.starting ??= this.begin();
    return this.starting;
  }

  private async begin(): Promise<void> {
    if (this.opts.target <= 0 || this.stopped) return;
    try {
      const content = await this.opts.content();
      const base = path.join(this.opts.workspacesRoot, SPARES_DIRNAME);
      const keyDir = path.join(base, layoutKey(content));
      const dir = path.join(keyDir, this.owner);
      await mkdir(dir, { recursive: true });
      const stale: string[] = [];
      const adopt: string[] = [];
      /** What gone runners left: renamed aside (TRASH_PREFIX), then removed. */
      const gone: string[] = [];
      /** This runner's ready spares: handed out only once the pool is set up. */
      const own: string[] = [];
      for (const key of await readdir(base)) {
        const at = path.join(base, key);
        const names = await readdir(at).catch(() => null);
        // Something else there, from no layout of spares.
        if (names === null) stale.push(at);
        for (const name of names ?? []) {
          const from = path.join(at, name);
          if (name.startsWith(TRASH_PREFIX)) {
            stale.push(from);
            continue;
          }
          if (name === this.owner) {
            // Made by an earlier pool of this process (tests make several): still this runner's.
            for (const spare of (await readdir(from)).sort()) {
              if (!/^\d+$/.test(spare)) stale.push(path.join(from, spare));
              else if (at === keyDir) own.push(path.join(from, spare));
              this.made = Math.max(this.made, Number(spare) || 0);
            }
            if (at !== keyDir) stale.push(from);
            continue;
          }
          if (LEGACY_SPARE.test(name)) {
            // A spare of a runner from before owners (no way to tell whether it lives).
            (at === keyDir ? adopt : gone).push(from);
            continue;
          }
          const st = await lstat(from).catch(() => null);
          // A live runner's spares, whatever their layout, are its own to use (a rolling deploy).
          if (st === null || !ownerGone(name, st.mtimeMs)) continue;
          // A gone runner's ready spares of this layout are taken over; the rest of its dir goes.
          if (at === keyDir) {
            for (const spare of await readdir(from).catch(() => [] as string[]))
              if (/^\d+$/.test(spare)) adopt.push(path.join(from, spare));
          }
          gone.push(from);
        }
      }
      this.tree = `spare-${path.basename(keyDir)}`;
      this.opts.fs.defineTree(this.tree, spareTree(content));
      this.dir = dir;
      this.ready.push(...own);
      keepFresh(dir);
      await this.adopt(adopt);
      for (const from of gone) {
        const aside = path.join(path.dirname(from), TRASH_PREFIX + randomBytes(6).toString("hex"));
        // Failing: another starting runner renamed it first, and removes it.
        if (
          await rename(from, aside).then(
            () => true,
            () => false,
          )
        )
          stale.push(aside);
      }
      if (stale.length > 0) {
        const removed = await this.opts.fs.run(stale.map((p): FsOp => ({ op: "remove", path: p })));
        if (removed.failedAt >= 0) {
          this.opts.logger.warn(
            { err: removed.message },
            "could not remove outdated spare workspaces",
          );
        }
      }
      // Layouts no runner uses any more: their directories go once they are empty.
      for (const key of await readdir(base)) {
        if (path.join(base, key) !== keyDir) await rmdir(path.join(base, key)).catch(() => {});
      }
    } catch (err) {
      // Set up, but not tidied (what gone runners left stays): its spares serve all the same.
      if (this.dir !== null) {
        this.opts.logger.warn({ err }, "could not remove outdated spare workspaces");
      } else {
        this.retryOpen(err);
        return;
      }
    }
    if (this.openFailures > 0) {
      this.opts.logger.info({ failedAttempts: this.openFailures }, "spare workspaces available");
      this.openFailures = 0;
    }
    this.fill();
  }

  /**
   * Set the pool up again after a pause, doubled with each failure up to
   * MAX_OPEN_BACKOFF pauses. Only the first failure is logged: a cause that
   * lasts would otherwise log for good.
   */
  private retryOpen(err: unknown): void {
    this.openFailures++;
    const pauseMs =
      this.retryAfterFailureMs * Math.min(2 ** (this.openFailures - 1), MAX_OPEN_BACKOFF);
    if (this.openFailures === 1) {
      this.opts.logger.warn(
        { err, retryInMs: pauseMs },
        "spare workspaces unavailable for now; new sessions are made file by file",
      );
    }
    this.openTimer = setTimeout(() => {
      this.openTimer = undefined;
      // Held as the start is: stop() waits for an attempt under way.
      this.starting = this.begin();
    }, pauseMs).unref();
  }

  /**
   * Move the ready spares a gone runner left into this one's directory, so
   * they are this runner's to hand out (and to leave to the next). Another
   * runner starting at the same time may take some of them first.
   */
  private async adopt(spares: readonly string[]): Promise<void> {
    const { dir } = this;
    if (dir === null) return;
    const ops = spares.map(
      (from): FsOp => ({
        op: "claim",
        from,
        to: path.join(dir, String(++this.made)),
      }),
    );
    for (let i = 0; i < ops.length; ) {
      const result = await this.opts.fs.run(ops.slice(i));
      const end = result.failedAt < 0 ? ops.length : i + result.failedAt;
      for (const op of ops.slice(i, end)) if (op.op === "claim") this.ready.push(op.to);
      i = end + 1;
    }
  }

  take(): string | null {
    return this.ready.pop() ?? null;
  }

  settle(dir: string, outcome: SpareOutcome): void {
    if (outcome === "unused") this.ready.push(dir);
    else if (outcome === "claimed") this.fill();
    else {
      // A spare that could not be claimed (gone, or the root on another file system): making
      // more at once could waste every one the same way, so wait as after a failure.
      this.failedAtMs = Date.now();
      this.opts.logger.warn({ spare: dir }, "a spare workspace could not be claimed");
      this.fill();
    }
  }

  /** Resolves once the pool is full or making spares has stopped, or after `timeoutMs`. */
  async whenFilled(timeoutMs = Number.POSITIVE_INFINITY): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      if (Number.isFinite(timeoutMs)) timer = setTimeout(resolve, timeoutMs);
    });
    const filled = (async () => {
      await this.starting;
      while (this.filling) await this.filling;
    })();
    await Promise.race([filled, timeout]);
    clearTimeout(timer);
  }

  /** Make no more spares; resolves once the one being made (if any) is written. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    clearTimeout(this.openTimer);
    this.openTimer = undefined;
    await this.whenFilled();
    if (this.dir !== null) forgetFresh(this.dir);
  }

  private fill(): void {
    if (this.filling || this.stopped || this.dir === null) return;
    const wait = this.failedAtMs + this.retryAfterFailureMs - Date.now();
    if (wait > 0) {
      // After a failure: once more when the pause is over (not only at the next claim, which
      // never comes once the pool is empty).
      this.retryTimer ??= setTimeout(() => {
        this.retryTimer = undefined;
        this.fill();
      }, wait).unref();
      return;
    }
    this.filling = this.makeSpares()
      .catch((err: unknown) => {
        // The worker died under a batch (it restarts with the next one): retry after the pause.
        this.failedAtMs = Date.now();
        this.opts.logger.warn({ err }, "could not make a spare workspace; retrying in a minute");
      })
      .finally(() => {
        this.filling = null;
        // Stopped by a failure: fill() schedules the retry.
        if (Date.now() - this.failedAtMs < this.retryAfterFailureMs) this.fill();
      });
  }

  private async makeSpares(): Promise<void> {
    const { dir, tree } = this;
    if (dir === null) return;
    while (!this.stopped && this.ready.length < this.opts.target) {
      // Only while the worker has nothing else to do: a run's workspace never waits for a spare.
      if (!this.opts.fs.idle) {
        await sleep(IDLE_POLL_MS);
        continue;
      }
      const name = String(++this.made);
      const building = path.join(dir, `.building-${name}`);
      const result = await this.opts.fs.run([
        { op: "stamp", tree, at: building },
        { op: "claim", from: building, to: path.join(dir, name) },
      ]);
      if (result.failedAt >= 0) {
        this.failedAtMs = Date.now();
        this.opts.logger.warn(
          { err: result.message, code: result.code },
          "could not make a spare workspace; retrying in a minute",
        );
        await this.opts.fs.run([{ op: "remove", path: building }]);
        return;
      }
      this.ready.push(path.join(dir, name));
    }
  }
}
