/**
 * Starting a provider process, by one of two launchers with the same result:
 * `spawnDirect` forks the runner itself; `SpawnHelper.launch`
 * (spawner/spawner.ts) asks a small helper process to fork, so the runner's
 * event loop never blocks on process creation. Either way the child leads
 * its own process group (spec §10 item 9: a kill reaches its whole tree),
 * has stdin from /dev/null (§10 item 10), exactly the given env, and its
 * stdout and stderr pipes are read by the runner directly. The direct child
 * is also its own session; so are the helper's first two live children,
 * while later ones share the helper's session (one scheduler autogroup for
 * all of them, see spawner-child.mjs).
 */
import { spawn } from "node:child_process";
import type { Readable } from "node:stream";
import { yieldCpu } from "./yield-cpu.mjs";

export interface LaunchOptions {
  bin: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /** Nice value for the provider and its scheduler autogroup (0 = the runner's priority). */
  niceness: number;
  /**
   * The run's abort: a start still waiting for the spawn helper then rejects
   * with a `StartAbandoned` once the helper answered, or after a short bound
   * (a wedged helper must not hold the run, or the runner's shutdown), and a
   * provider the helper starts after that is killed. A direct spawn is
   * synchronous: there is nothing to wait for.
   */
  signal?: AbortSignal;
}

export interface LaunchedChild {
  pid: number;
  stdout: Readable;
  stderr: Readable;
  /** Resolves once the leader exited and was reaped, or its exit was lost. Never rejects. */
  exit: Promise<LeaderExit>;
}

/** How the leader ended, as far as the runner knows. */
export interface LeaderExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /**
   * Set (with code and signal null) when the runner does not know how the
   * leader ended, and says why: the spawn helper died with its status, or the
   * leader was given up on after its SIGKILL (supervised-process.ts).
   */
  lost?: string;
}

/**
 * What a launcher rejects with: the spawn error (ENOENT, EACCES, E2BIG, ...).
 * `wrapper` is set when the program that could not be executed is the
 * launcher's own exec wrapper (the spawn helper's perl), not the CLI.
 */
export interface LaunchError extends NodeJS.ErrnoException {
  wrapper?: string;
}

/**
 * How far a start got that its run's abort ended while the spawn helper had
 * it: `not-started` (the helper could not start it, or never got it),
 * `killed` (the provider started, and the runner killed its group), or
 * `unknown` (no answer in time: whatever the helper starts later is killed).
 */
export type AbandonedStart = "not-started" | "killed" | "unknown";

/**
 * What a launcher rejects with for a start its run's abort ended midway: the
 * abort's reason, and how far the start got, so the run's exit can say what
 * the runner did (run-execution.ts).
 */
export class StartAbandoned extends Error {
  override readonly name = "StartAbandoned";
  constructor(
    readonly reason: unknown,
    readonly outcome: AbandonedStart,
  ) {
    super(`The provider's start was abandoned (${outcome}).`);
  }
}

/**
 * Rejects with a `LaunchError` when the process cannot be started, or a
 * `StartAbandoned` when its run was aborted while it started.
 */
export type Launcher = (opts: LaunchOptions) => Promise<LaunchedChild>;

/** Fork the runner itself (blocks its event loop for the fork; see spawn-turns.ts). */
export const spawnDirect: Launcher = async (opts) => {
  const child = spawn(opts.bin, opts.args, {
    cwd: opts.cwd,
    env: opts.env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (opts.niceness > 0 && child.pid !== undefined) yieldCpu(child.pid, opts.niceness);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      child.off("spawn", onSpawn);
      reject(err);
    };
    const onSpawn = () => {
      child.off("error", onError);
      resolve();
    };
    child.once("error", onError);
    child.once("spawn", onSpawn);
  });
  child.on("error", () => {}); // late errors (e.g. EPIPE) are not fatal to the runner
  return {
    pid: child.pid as number,
    stdout: child.stdout,
    stderr: child.stderr,
    exit: new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal }))),
  };
};
