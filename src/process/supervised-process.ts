import { accessSync, constants, statSync } from "node:fs";
import type { Readable } from "node:stream";
import { RunnerError } from "../errors/runner-error.js";
import type { Logger } from "../log/logger.js";
import {
  type LaunchError,
  type LaunchedChild,
  type Launcher,
  type LeaderExit,
  StartAbandoned,
  spawnDirect,
} from "./launch.js";
import { splitLineBatches } from "./line-splitter.js";
import { RUN_ID_ENV, reapOrphans } from "./reap-orphans.js";
import { KILL_WAIT_MS, terminateGroup } from "./terminate-group.js";

/**
 * Once the leader has exited and its group is gone, only a process that left
 * the group (`setsid`, a detached spawn) can still hold the pipes open, and it
 * may never close them: this long after the group, that process is killed
 * (found by its run id) and the lines end as soon as the pipes are quiet.
 * Output still in the pipes is read first, however far behind the consumer
 * is: nothing the provider printed is dropped.
 */
export const PIPES_AFTER_GROUP_MS = 2000;

/**
 * After the cut, at most this much more is read from the pipes: far more than
 * they can hold, so it only ends a process without a run id that keeps
 * writing (it would hold the run open for good).
 */
const DRAIN_AFTER_CUT_BYTES = 8 << 20;

/** Two turns of the event loop: a poll phase lies between them. */
const twoTurns = async () => {
  for (let i = 0; i < 2; i++) await new Promise<void>((resolve) => setImmediate(resolve));
};

/** One line of the child's output, tagged with its stream. */
export interface ProcessLine {
  stream: "stdout" | "stderr";
  text: string;
  truncated: boolean;
}

/** How the leader ended; `lost` says why the runner does not know (code and signal are null). */
export interface ProcessExit extends LeaderExit {
  /** The runner signalled the group before the leader exited by itself. */
  killedByRunner: boolean;
}

/** A provider process running in its own process group. */
export interface SupervisedProcess {
  readonly pid: number;
  /**
   * stdout and stderr lines merged in arrival order, in batches (the lines one
   * pipe read completed), pull-based; ends at EOF of both. Call once (or `lines`).
   * `onOutput` is called for every read from either pipe, also one that
   * completes no line (a `\r` progress bar, the rest of a cut line): what an
   * idle timer counts as the provider's activity.
   */
  lineBatches(onOutput?: () => void): AsyncIterable<ProcessLine[]>;
  /** `lineBatches`, one line at a time. */
  lines(): AsyncIterable<ProcessLine>;
  /** Resolves once the leader exited and its group was cleaned up. Never rejects. */
  readonly exited: Promise<ProcessExit>;
  /** Resolves as soon as the leader exited, before its group is cleaned up. Never rejects. */
  readonly leaderExited: Promise<void>;
  /**
   * Idempotent: SIGTERM the group, SIGKILL after the grace; resolves when the
   * leader is reaped, or when the runner gave up on it (see `killWaitMs`).
   */
  terminate(): Promise<void>;
}

/** Options for `startSupervisedProcess`. */
export interface StartProcessOptions {
  bin: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  maxLineBytes: number;
  killGraceMs: number;
  /** Nice value for the provider (0 = the runner's own priority). */
  niceness?: number;
  /**
   * After the group's SIGKILL, how long the group, and then the report of the
   * leader's exit, are each waited for. A leader still unreported then (stuck
   * in uninterruptible sleep, or a zombie nobody reaps: a wedged spawn helper)
   * is given up on: its exit is reported as lost, so the run ends and its slot
   * and session are released.
   */
  killWaitMs?: number;
  /** Where a leader given up on is reported. */
  logger?: Pick<Logger, "warn">;
  /**
   * The run's abort: a start still waiting for the spawn helper rejects with
   * its reason, or a `StartAbandoned` carrying it and how far the start got
   * (launch.ts). Once started, the process is the caller's to terminate.
   */
  signal?: AbortSignal;
}

/** `source`'s chunks, calling `onChunk` as each is read (before the splitter, which may hold it). */
async function* noting(source: AsyncIterable<Buffer>, onChunk: () => void): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    onChunk();
    yield chunk;
  }
}

async function* tagged(
  stream: Readable,
  name: ProcessLine["stream"],
  max: number,
  onOutput: (() => void) | undefined,
): AsyncGenerator<ProcessLine[]> {
  const chunks = stream as AsyncIterable<Buffer>;
  const source = onOutput === undefined ? chunks : noting(chunks, onOutput);
  for await (const batch of splitLineBatches(source, max)) {
    yield batch.map((l) => ({ stream: name, text: l.text, truncated: l.truncated }));
  }
}

/**
 * Merge two pull-based batch sources in arrival order, holding at most one
 * pending batch per source (bounded: the pipes stay the buffer). Not
 * `Promise.race` over the pending pulls: each race adds a reaction to the
 * pull that stays pending (a silent stderr), and through it kept every batch
 * of the other source reachable until the process ended (≈30 MB per 100,000
 * lines); here each pull has exactly one reaction.
 *
 * After `cut`, the merge ends without waiting for the sources' end once they
 * are quiet: nothing arrived and nothing was read from the pipes (`bytesRead`)
 * over a poll of them. Not at once: a consumer behind the pipes (a slow
 * journal) would lose what they still held after the process had exited.
 */
async function* merge(
  sources: AsyncIterator<ProcessLine[]>[],
  cut: AbortSignal,
  bytesRead: () => number,
): AsyncGenerator<ProcessLine[]> {
  const arrived: { i: number; r: IteratorResult<ProcessLine[]> }[] = [];
  let failed: { err: unknown } | null = null;
  let wake: (() => void) | null = null;
  let readAtCut: number | null = null;
  cut.addEventListener(
    "abort",
    () => {
      readAtCut = bytesRead();
      wake?.();
    },
    { once: true },
  );
  const pull = (i: number) => {
    (sources[i] as AsyncIterator<ProcessLine[]>).next().then(
      (r) => {
        arrived.push({ i, r });
        wake?.();
      },
      (err: unknown) => {
        failed ??= { err };
        wake?.();
      },
    );
  };
  for (let i = 0; i < sources.length; i++) pull(i);
  let open = sources.length;
  try {
    while (open > 0) {
      if (readAtCut !== null && bytesRead() - readAtCut > DRAIN_AFTER_CUT_BYTES) return;
      if (arrived.length === 0 && failed === null) {
        if (readAtCut !== null) {
          const before = bytesRead();
          await twoTurns();
          if (arrived.length === 0 && failed === null && bytesRead() === before) return;
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = null;
        continue;
      }
      if (failed !== null) throw (failed as { err: unknown }).err;
      const next = arrived.shift();
      if (next === undefined) continue;
      if (next.r.done) {
        open--;
        continue;
      }
      pull(next.i);
      yield next.r.value;
    }
  } finally {
    for (const it of sources) void it.return?.();
  }
}

/**
 * Spawn errors that mean the binary itself cannot be executed, each with what
 * it says about the file and what the operator can do about it. Anything else
 * (the spawn helper gone or past its deadline, a refused fork, an oversized
 * command) says nothing about the binary: see `RUNNER_SIDE`.
 */
const BINARY_PROBLEMS: Readonly<Record<string, string>> = {
  ENOENT:
    "it does not exist, or it is a script whose interpreter (its #! line) does not (ENOENT). Install the CLI, or set the provider's FERMILINK_<PROVIDER>_BIN to its path",
  EACCES:
    "permission denied (EACCES): the file is not executable, a directory on its path is not searchable, or its file system is mounted noexec. Make it executable for the runner's user (chmod +x) or install it elsewhere",
  EPERM:
    "the system does not permit executing it (EPERM), e.g. a security module's policy. Allow it for the runner's user, or install the CLI elsewhere",
  ENOTDIR:
    "a component of its path is not a directory (ENOTDIR). Set the provider's FERMILINK_<PROVIDER>_BIN to the CLI's real path",
  EISDIR:
    "it is a directory, or its #! line names one (EISDIR). Set the provider's FERMILINK_<PROVIDER>_BIN to the CLI itself",
  ELOOP:
    "its path runs into a loop of symbolic links (ELOOP). Fix the links, or set the provider's FERMILINK_<PROVIDER>_BIN to the CLI's real path",
  ENAMETOOLONG:
    "its path is longer than the system allows (ENAMETOOLONG). Install the CLI under a shorter path",
  ENOEXEC:
    "the system cannot execute its format (ENOEXEC): a build for another machine, or a script without a #! line. Install the CLI built for this machine",
  ETXTBSY:
    "the file is open for writing by another process (ETXTBSY), as while an install or upgrade replaces it. Retry the run once that has finished",
};

/**
 * Errors of the runner's own start of a process (the CLI is not at fault):
 * what happened, and what the operator can do about it.
 */
const RUNNER_SIDE: Readonly<Record<string, readonly [why: string, fix: string]>> = {
  E2BIG: [
    "its arguments and environment together exceed what the system allows a new program (E2BIG; one variable or argument may hold at most 128 KiB)",
    "pass the provider fewer or smaller variables (FERMILINK_RUNNER_ENV_PASSTHROUGH, the provider's own variables); retrying the same run will not help",
  ],
  EAGAIN: [
    "the system refused to create a process (EAGAIN): the runner's user or cgroup reached its process limit",
    "raise the limit (ulimit -u, the cgroup's pids.max) or lower FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS, then retry the run",
  ],
  ENOMEM: [
    "the system is out of memory for a new process (ENOMEM)",
    "free memory or lower FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS, then retry the run",
  ],
  EMFILE: [
    "the runner ran out of file descriptors (EMFILE)",
    "raise its open-file limit (ulimit -n, LimitNOFILE) or lower FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS, then retry the run",
  ],
  ENFILE: [
    "the system ran out of file descriptors (ENFILE)",
    "raise fs.file-max or lower FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS, then retry the run",
  ],
};

/** Errnos a spawn reports when its working directory cannot be entered (chdir's). */
const CWD_ERRNOS: ReadonlySet<string> = new Set([
  "ENOENT",
  "EACCES",
  "ENOTDIR",
  "ELOOP",
  "ENAMETOOLONG",
]);

/** True when `dir` is a directory this process may enter. */
function canEnter(dir: string): boolean {
  try {
    accessSync(dir, constants.X_OK);
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

const startFailed = (bin: string, why: string, fix: string, cause: unknown) =>
  new RunnerError(
    "PROVIDER_START_FAILED",
    `The runner failed to start the provider CLI ${bin}: ${why}. This is a runner-side failure, not a problem with the CLI; ${fix}.`,
    { cause },
  );

/**
 * The caller's error for a launch that failed, naming the culprit (the CLI,
 * the runner's exec wrapper, the run's directory, the command's size, the
 * system) and what the operator can do: PROVIDER_BINARY_MISSING when the CLI
 * cannot be executed, PROVIDER_START_FAILED otherwise.
 */
export function launchError(bin: string, cwd: string, err: unknown): RunnerError {
  const e = err as LaunchError;
  const code = e.code ?? "";
  if (e.wrapper !== undefined) {
    return startFailed(
      bin,
      `the spawn helper's exec wrapper ${e.wrapper} cannot be executed (${code || e.message}), so the CLI was never started`,
      code === "ETXTBSY"
        ? "it is being replaced (an upgrade of perl in progress): retry the run once that has finished"
        : "reinstall perl (Debian's perl-base), or set FERMILINK_RUNNER_SPAWN_HELPER=0 and restart the runner to start providers without it",
      err,
    );
  }
  // A directory that cannot be entered fails the spawn with chdir's errno, named after the binary.
  if (CWD_ERRNOS.has(code) && !canEnter(cwd)) {
    return startFailed(
      bin,
      `the run's working directory ${cwd} is missing or cannot be entered (${code})`,
      "retry the run",
      err,
    );
  }
  const problem = BINARY_PROBLEMS[code];
  if (problem !== undefined) {
    return new RunnerError(
      "PROVIDER_BINARY_MISSING",
      `Could not start the provider CLI ${bin}: ${problem}.`,
      { cause: err },
    );
  }
  const known = RUNNER_SIDE[code];
  if (known !== undefined) return startFailed(bin, known[0], known[1], err);
  const said = e.message.replace(/\.$/, "");
  const why = code && !said.includes(code) ? `${code}, ${said}` : said;
  return startFailed(bin, why, "retry the run", err);
}

/**
 * Start the provider (see launch.ts: detached, stdin from /dev/null, exactly
 * the given env) and supervise it. Rejects with PROVIDER_BINARY_MISSING when
 * the binary cannot be executed, PROVIDER_START_FAILED when the launch failed
 * for another reason (see `launchError`); with the abort's reason, or a
 * `StartAbandoned`, when the run was aborted while it started.
 */
export async function startSupervisedProcess(
  opts: StartProcessOptions,
  launch: Launcher = spawnDirect,
): Promise<SupervisedProcess> {
  let child: LaunchedChild;
  try {
    child = await launch({
      bin: opts.bin,
      args: opts.args,
      env: opts.env,
      cwd: opts.cwd,
      niceness: opts.niceness ?? 0,
      signal: opts.signal,
    });
  } catch (err) {
    if (err instanceof StartAbandoned || (opts.signal?.aborted && err === opts.signal.reason)) {
      throw err;
    }
    throw launchError(opts.bin, opts.cwd, err);
  }
  const pid = child.pid as number;
  const killWaitMs = opts.killWaitMs ?? KILL_WAIT_MS;
  let killedByRunner = false;
  let leaderExited = false;
  let terminating: Promise<void> | undefined;
  let giveUp: (r: LeaderExit) => void = () => {};
  const givenUp = new Promise<LeaderExit>((resolve) => {
    giveUp = resolve;
  });
  const leaderExit = Promise.race([child.exit, givenUp]).then((r) => {
    leaderExited = true;
    return r;
  });
  /** The group's end; a leader whose exit is still unreported after it is given up on. */
  const endGroup = async (): Promise<void> => {
    await terminateGroup(pid, opts.killGraceMs, killWaitMs);
    if (leaderExited) return;
    let timer: NodeJS.Timeout | undefined;
    const reported = await Promise.race([
      leaderExit.then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), killWaitMs);
      }),
    ]);
    clearTimeout(timer);
    if (reported) return;
    const lost = `The provider's process ${pid} did not end within ${killWaitMs} ms of its SIGKILL (stuck in the kernel, or not reaped); the runner stopped waiting for it.`;
    opts.logger?.warn({ pid, runId: opts.env[RUN_ID_ENV] }, lost);
    giveUp({ code: null, signal: null, lost });
  };
  const terminate = (): Promise<void> => {
    if (!leaderExited) killedByRunner = true;
    terminating ??= endGroup();
    return terminating.then(() => leaderExit.then(() => undefined));
  };
  // A leader that exits by itself may leave grandchildren holding the pipes: they are orphans.
  const exited = leaderExit.then(async (r) => {
    terminating ??= endGroup();
    await terminating;
    return { ...r, killedByRunner };
  });
  let linesTaken = false;
  const proc: SupervisedProcess = {
    pid,
    exited,
    leaderExited: leaderExit.then(() => undefined),
    terminate,
    async *lines() {
      for await (const batch of proc.lineBatches()) yield* batch;
    },
    lineBatches(onOutput) {
      if (linesTaken) throw new Error("lines() can be called once");
      linesTaken = true;
      const cut = new AbortController();
      let cutTimer: NodeJS.Timeout | undefined;
      let done = false;
      void exited.then(() => {
        if (done) return;
        cutTimer = setTimeout(() => {
          cut.abort();
          const runId = opts.env[RUN_ID_ENV];
          if (runId !== undefined) void reapOrphans(new Set([runId]), opts.killGraceMs);
        }, PIPES_AFTER_GROUP_MS);
      });
      const gen = merge(
        [
          tagged(child.stdout, "stdout", opts.maxLineBytes, onOutput),
          tagged(child.stderr, "stderr", opts.maxLineBytes, onOutput),
        ],
        cut.signal,
        () =>
          ((child.stdout as { bytesRead?: number }).bytesRead ?? 0) +
          ((child.stderr as { bytesRead?: number }).bytesRead ?? 0),
      );
      return (async function* () {
        let finished = false;
        try {
          // Not `yield* gen`: an abandoning consumer's return() would reach the pipes' readers,
          // and they would close the pipes under a provider still shutting down (below).
          for (let r = await gen.next(); !r.done; r = await gen.next()) yield r.value;
          finished = true;
        } finally {
          done = true;
          clearTimeout(cutTimer);
          if (!finished) {
            // SIGTERM first, and the pipes read (what they bring dropped) until the group is
            // gone: closed earlier, they fail what a provider writes as it shuts down (EPIPE, a
            // C CLI dies of SIGPIPE), and unread, a full pipe blocks it until its SIGKILL.
            const ended = terminate();
            void (async () => {
              while (!(await gen.next()).done);
            })().catch(() => {});
            await ended;
          }
          // Also ends a drain still reading: a process out of the group may hold them for good.
          child.stdout.destroy();
          child.stderr.destroy();
        }
      })();
    },
  };
  return proc;
}
