/**
 * The runner's side of the spawn helper (spawner-child.mjs). A fork copies
 * the page tables of the process that forks and blocks its event loop
 * meanwhile: for the runner, with its heap and SQLite, that is several
 * milliseconds per provider, tens under load, during which no caller, ops
 * request or 429 is answered. The helper is a bare node process started once
 * (lazily), so forks happen there and the runner only exchanges two small IPC
 * messages per run. The child's pipes come back as IPC handles: the runner
 * reads them itself, nothing is relayed.
 */
import { type ChildProcess, fork } from "node:child_process";
import { accessSync, constants } from "node:fs";
import type { Socket } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  type AbandonedStart,
  type LaunchError,
  type LaunchedChild,
  type LaunchOptions,
  StartAbandoned,
} from "../launch.js";
import { KILL_WAIT_MS } from "../terminate-group.js";
import type { SpawnerMessage, SpawnRequest } from "./spawner-protocol.js";

const HELPER = path.join(path.dirname(fileURLToPath(import.meta.url)), "spawner-child.mjs");

/**
 * perl, which the helper uses to start each provider in its own process
 * group inside the helper's session (spawner-child.mjs says why); null when
 * this system has none (Debian's perl-base is essential, so it is there).
 */
export function findGroupExec(): string | null {
  for (const candidate of ["/usr/bin/perl", "/bin/perl"]) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Try the next place.
    }
  }
  return null;
}

type ExitInfo = Awaited<LaunchedChild["exit"]>;

const HELPER_LOST =
  "The runner's spawn helper exited unexpectedly and the provider's exit status was lost with it; its process group was killed.";
const HELPER_CLOSED =
  "The runner closed its spawn helper while the provider ran; its process group was killed, and its exit status is unknown.";

/**
 * How long a start whose run was aborted waits for the helper's answer, so
 * the run's exit can say whether a provider was started (and killed): the
 * helper answers in milliseconds, and a wedged one must not hold a cancel or
 * the runner's shutdown for longer than this.
 */
export const ABANDON_WAIT_MS = 1000;

interface Starting {
  /** The helper asked to start it: another may already run while this one's death is handled. */
  helper: ChildProcess;
  resolve(child: LaunchedChild): void;
  reject(err: unknown): void;
  pid?: number;
  stdout?: Socket;
  stderr?: Socket;
  exit: Promise<ExitInfo>;
  onExit(info: ExitInfo): void;
  /**
   * Its run was aborted before the helper answered: whatever the helper
   * starts for it is killed, and its caller hears how far the start got once
   * that is known, or after the wait (`settleAbandoned`).
   */
  abandoned?: { reason: unknown; timer?: NodeJS.Timeout; settled: boolean };
}

/** A spawn error as the direct spawn() reports it (code ENOENT, EACCES, ...). */
function spawnError(code: string, message: string, wrapper?: string): LaunchError {
  const err: LaunchError = new Error(message);
  if (code !== "") err.code = code;
  if (wrapper !== undefined) err.wrapper = wrapper;
  return err;
}

export class SpawnHelper {
  private helper: ChildProcess | null = null;
  /** The helper `close` stopped: its death is no crash. */
  private closed: ChildProcess | null = null;
  /** perl for shared-autogroup providers, or null: each provider detached on its own. */
  private readonly groupExec: string | null;
  private nextId = 1;
  /** Every child from its request until its exit message. */
  private readonly children = new Map<number, Starting>();

  /** How long a shared provider may take to lead its own group (the helper's default: 5 s). */
  private readonly groupLeaderDeadlineMs: number | null;
  /** How long an aborted start waits for the helper's answer (ABANDON_WAIT_MS). */
  private readonly abandonWaitMs: number;

  constructor(
    opts: {
      groupExec?: string | null;
      groupLeaderDeadlineMs?: number;
      abandonWaitMs?: number;
    } = {},
  ) {
    this.groupExec = opts.groupExec === undefined ? findGroupExec() : opts.groupExec;
    this.groupLeaderDeadlineMs = opts.groupLeaderDeadlineMs ?? null;
    this.abandonWaitMs = opts.abandonWaitMs ?? ABANDON_WAIT_MS;
  }

  /** The helper's pid while one runs (for diagnostics and tests). */
  get helperPid(): number | null {
    return this.helper?.pid ?? null;
  }

  /** Start one provider through the helper (forking the helper first if none runs). */
  launch = (opts: LaunchOptions): Promise<LaunchedChild> => {
    // The signal stays here: it is no part of the request.
    const { signal, ...spawnOpts } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.nextId++;
    const request: SpawnRequest = { type: "spawn", id, ...spawnOpts };
    return new Promise<LaunchedChild>((resolve, reject) => {
      let onExit: (info: ExitInfo) => void = () => {};
      const exit = new Promise<ExitInfo>((r) => {
        onExit = r;
      });
      const onAbort = () => this.abandon(id, signal?.reason);
      const settled = () => signal?.removeEventListener("abort", onAbort);
      this.children.set(id, {
        helper: this.helper ?? this.startHelper(),
        resolve: (child) => {
          settled();
          resolve(child);
        },
        reject: (err) => {
          settled();
          reject(err);
        },
        exit,
        onExit,
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      this.send(request, true);
    });
  };

  /**
   * Send a start to its helper. One that could not be written (the helper
   * died, and the runner has not handled its exit and its channel's end yet)
   * never reached a helper, so nothing was forked for it: once (`mayRetry`),
   * it goes to a new helper instead of failing its run; the dead one's
   * children stay its own (onHelperGone). A start that was written is never
   * sent again, even when its helper dies unanswered: it may have forked the
   * CLI already (found by its run id, see orphan-sweeper.ts), and a second
   * one would run beside it. A helper the runner closed gets no successor.
   */
  private send(request: SpawnRequest, mayRetry: boolean): void {
    const child = this.children.get(request.id);
    if (!child) return;
    const helper = child.helper;
    helper.send(request, (err: Error | null) => {
      if (!err) return;
      const now = this.children.get(request.id);
      if (now === child && mayRetry && !child.abandoned && helper !== this.closed) {
        if (this.helper === helper) this.helper = null;
        child.helper = this.helper ?? this.startHelper();
        this.send(request, false);
        return;
      }
      this.fail(request.id, spawnError("", `The spawn helper is not reachable: ${err.message}`));
    });
  }

  /**
   * Stop the helper; it SIGKILLs any group it still runs (the runner
   * terminates its runs first). Not by the disconnect alone: while pipes it
   * sent wait for the runner's acknowledgement (a start whose run was aborted
   * meanwhile), node defers the helper's 'disconnect' for good, and it would
   * live on with that provider. A helper that does not exit in time (wedged)
   * is killed, with every group the runner knows of.
   */
  async close(): Promise<void> {
    const helper = this.helper;
    if (!helper || helper.exitCode !== null || helper.signalCode !== null) return;
    const gone = new Promise<void>((r) => helper.once("exit", () => r()));
    this.closed = helper;
    helper.kill("SIGTERM");
    helper.disconnect();
    let timer: NodeJS.Timeout | undefined;
    const exited = await Promise.race([
      gone.then(() => true),
      new Promise<false>((r) => {
        timer = setTimeout(() => r(false), KILL_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
    if (exited) return;
    helper.kill("SIGKILL");
    for (const child of this.children.values()) {
      if (child.pid !== undefined) this.killGroup(child.pid);
    }
    await gone;
  }

  private startHelper(): ChildProcess {
    const helper = fork(HELPER, [], {
      // Bare node: no TypeScript loader, profiler or inspector flags of the runner.
      execArgv: [],
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        FERMILINK_GROUP_EXEC: this.groupExec ?? "",
        ...(this.groupLeaderDeadlineMs === null
          ? {}
          : { FERMILINK_GROUP_LEADER_DEADLINE_MS: String(this.groupLeaderDeadlineMs) }),
      },
      // Its own session, so its own scheduler autogroup: the one all its providers share.
      detached: true,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    // The helper never keeps the runner alive; live runs hold their own pipes.
    helper.unref();
    (helper.channel as { unref?: () => void } | undefined)?.unref?.();
    helper.on("message", (msg: SpawnerMessage, handle?: Socket) => this.onMessage(msg, handle));
    helper.on("error", () => {}); // reported through "exit"
    // Gone once its channel has ended too, so every exit it reported before it died is handled.
    // Not 'close': a channel the runner disconnected itself (close()) never counts for it.
    helper.once("exit", () => {
      if (helper.connected) helper.once("disconnect", () => this.onHelperGone(helper));
      else this.onHelperGone(helper);
    });
    this.helper = helper;
    return helper;
  }

  private onMessage(msg: SpawnerMessage, handle?: Socket): void {
    const child = this.children.get(msg.id);
    if (!child) {
      handle?.destroy();
      return;
    }
    if (child.abandoned) {
      handle?.destroy();
      if (msg.type === "spawned") {
        child.pid = msg.pid;
        this.killGroup(msg.pid);
        this.settleAbandoned(child, "killed");
      } else {
        // An error, or the exit of the group killed above: the helper is done with it.
        this.children.delete(msg.id);
        this.settleAbandoned(child, "not-started");
      }
      return;
    }
    if (msg.type === "error") {
      this.fail(msg.id, spawnError(msg.code, msg.message, msg.wrapper));
    } else if (msg.type === "spawned") {
      child.pid = msg.pid;
      if (!handle) {
        // Node sends the message without its handle when the pipe closed before its turn.
        this.killGroup(msg.pid);
        this.fail(
          msg.id,
          spawnError("", "The provider's output pipe was lost in the spawn helper."),
        );
        return;
      }
      if (msg.stream === "stdout") child.stdout = handle;
      else child.stderr = handle;
      if (child.stdout && child.stderr) {
        child.resolve({
          pid: msg.pid,
          stdout: child.stdout,
          stderr: child.stderr,
          exit: child.exit,
        });
      }
    } else {
      this.children.delete(msg.id);
      child.onExit({ code: msg.code, signal: msg.signal });
    }
  }

  private killGroup(pid: number): void {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }

  /**
   * The run of a start the helper has not answered yet was aborted. Its
   * caller hears once the helper answers (a provider it started is killed
   * first), or after `abandonWaitMs`: a wedged helper may never answer. The
   * entry stays until the helper answers, so a provider it starts after all
   * is killed (onMessage); one that dies instead leaves it unknown
   * (onHelperGone).
   */
  private abandon(id: number, reason: unknown): void {
    const child = this.children.get(id);
    if (!child || child.abandoned) return;
    child.abandoned = { reason, settled: false };
    child.stdout?.destroy();
    child.stderr?.destroy();
    if (child.pid !== undefined) {
      // One of its pipes has arrived: the provider runs.
      this.killGroup(child.pid);
      this.settleAbandoned(child, "killed");
      return;
    }
    child.abandoned.timer = setTimeout(
      () => this.settleAbandoned(child, "unknown"),
      this.abandonWaitMs,
    );
  }

  /** Tell an abandoned start's caller how far it got; the first outcome known counts. */
  private settleAbandoned(child: Starting, outcome: AbandonedStart): void {
    const abandoned = child.abandoned;
    if (!abandoned || abandoned.settled) return;
    abandoned.settled = true;
    clearTimeout(abandoned.timer);
    child.reject(new StartAbandoned(abandoned.reason, outcome));
    child.onExit({ code: null, signal: null });
  }

  private fail(id: number, err: Error): void {
    const child = this.children.get(id);
    if (!child) return;
    this.children.delete(id);
    child.stdout?.destroy();
    child.stderr?.destroy();
    if (child.abandoned) {
      // Only a start that never reached a helper fails here once its run gave up on it (send).
      this.settleAbandoned(child, "not-started");
      return;
    }
    child.reject(err);
    child.onExit({ code: null, signal: null });
  }

  /**
   * The helper died (closed by the runner, or a crash): runs still starting
   * fail; children it started live on in their own process groups, so their
   * groups are killed. Their exit status died with the helper: only it could
   * reap them, and every exit it reported has been handled by now (see
   * startHelper). So a child not reported yet ends as lost, not as SIGKILLed:
   * it may as well have exited 0 just before, unreaped or with its report
   * still queued in the helper. A child whose pid never arrived cannot be
   * killed from here: the caller's orphan sweep finds it by its run id
   * (orphan-sweeper.ts). The next launch starts a new helper.
   */
  private onHelperGone(helper: ChildProcess): void {
    if (this.helper === helper) this.helper = null;
    for (const [id, child] of this.children) {
      if (child.helper !== helper) continue;
      if (child.abandoned) {
        // Whatever it may have forked unannounced dies with it or is swept by its run id.
        if (child.pid !== undefined) this.killGroup(child.pid);
        this.children.delete(id);
        this.settleAbandoned(child, "unknown");
        continue;
      }
      if (child.pid === undefined || !(child.stdout && child.stderr)) {
        if (child.pid !== undefined) this.killGroup(child.pid);
        this.fail(id, spawnError("", "The spawn helper exited before the provider started."));
        continue;
      }
      this.killGroup(child.pid);
      this.children.delete(id);
      child.onExit({
        code: null,
        signal: null,
        lost: this.closed === helper ? HELPER_CLOSED : HELPER_LOST,
      });
    }
  }
}
