/**
 * The spawn helper: a small node process that forks the providers for the
 * runner, so the runner's own (large) process never forks and its event loop
 * never blocks on process creation. Plain JavaScript on purpose: it runs on
 * bare node, without the TypeScript loader, to stay small (a fork copies the
 * page tables of the process that forks).
 *
 * Protocol (IPC, see spawner-protocol.ts): the runner sends `spawn`; the
 * helper answers `spawned` twice, once with the child's stdout pipe and once
 * with its stderr pipe as the sent handle (the runner reads them directly,
 * nothing is relayed), or `error`; then `exit` when the child is reaped. When
 * the runner goes away (IPC disconnect) the group of every child still alive
 * is SIGKILLed (what a leader left behind when it exited is found by its run
 * id: orphan-sweeper.ts).
 */
import { spawn } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { setGroupNice, setProcessNice, yieldCpu } from "../yield-cpu.mjs";

/**
 * Every provider gets its own process group (so a kill reaches its whole
 * tree) but stays in this helper's session, so all of them share one
 * scheduler autogroup, niced once: together they weigh like one process
 * next to the runner, however many run. Node can only give a child a new
 * session (a new autogroup each, and 200 of those outweigh the runner even
 * at nice 19), so a perl one-liner calls setpgid and execs the CLI (the
 * pid is kept). perl costs a few ms per start, so the first providers
 * alive at once are still detached into autogroups of their own (a lone run
 * starts as fast as it can); from the third on, they share. Without perl
 * (FERMILINK_GROUP_EXEC empty), every provider is detached and niced alone.
 *
 * The nice value is for a crowd: while no more than SOLO_PROVIDERS are
 * alive, they run at the runner's priority (niced, one CLI streaming at full
 * speed lost a third of its rate to the client reading it on a busy 2-core
 * box). The third live provider renices them, for the rest of their lives: a
 * nice value cannot be lowered again without privileges.
 */
const GROUP_EXEC = process.env.FERMILINK_GROUP_EXEC ?? "";
/** Providers alive at once that still get an autogroup of their own. */
const SOLO_PROVIDERS = 2;
/**
 * perl warns on stderr at start-up when the locale it is given is not
 * installed, which would show as the provider's own log lines; PERL_BADLANG=0
 * silences that, and is taken out again before the CLI starts unless the
 * caller had set it (the first argument says which).
 *
 * A CLI that cannot be executed (missing, not executable, a script whose
 * interpreter is missing) must fail as node's own spawn fails, not start a
 * run that exits 127: fd 3 is an exec-status pipe, close-on-exec (perl marks
 * every descriptor above $^F = 2 so when it opens it), so the helper reads EOF
 * when the exec succeeded and the errno when it failed (libuv's own trick).
 */
const SETPGID_EXEC =
  "open(my $st, '>&=', 3); delete $ENV{PERL_BADLANG} if shift(@ARGV) eq 'drop'; setpgrp(0, 0); exec { $ARGV[0] } @ARGV; my ($n, $m) = ($! + 0, qq($!)); syswrite($st, qq($n\n)) if $st; print STDERR qq(cannot execute $ARGV[0]: $m\n); exit 127;";

/**
 * Variables that would make perl load code of its own before the one-liner
 * runs; a provider given any of them (through the admin's passthrough) is
 * started detached instead, so the wrapper never runs anything but itself.
 */
const PERL_CODE_VARS = ["PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB"];

/** Live children by their pid (= their process group id). */
const live = new Set();
/** Children from their spawn() until their exit: counted at once, before node reports them. */
let running = 0;
/** The nice value of this helper's (and so every shared provider's) autogroup. */
let sharedNice = 0;
/** Providers started while few were alive, not niced yet: pid → the nice value they were given. */
const unniced = new Map();

/** Kill a child's group; a child still before its setpgid is killed alone (its CLI never starts). */
function killTree(pid) {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

/**
 * How long a shared provider's perl wrapper may take to make it a group
 * leader. It takes ≈ 6 ms on an idle box; the bound is for a wrapper that
 * hangs, so it is generous: a box loaded enough to delay perl for seconds
 * must not fail runs (a run aborted meanwhile ends at once all the same).
 */
const GROUP_LEADER_DEADLINE_MS = Number(process.env.FERMILINK_GROUP_LEADER_DEADLINE_MS || 30_000);

/**
 * Calls `then(true)` once `pid` leads its own process group or exited
 * (`gone`); `then(false)` when neither happened by `deadline`.
 */
function whenGroupLeader(pid, gone, deadline, then) {
  const poll = () => {
    try {
      process.kill(-pid, 0);
    } catch {
      if (gone()) {
        then(true);
        return;
      }
      if (Date.now() < deadline) {
        setTimeout(poll, 1);
        return;
      }
      then(false);
      return;
    }
    then(true);
  };
  poll();
}

/** Errno numbers to their names (ENOENT, ...), as node's spawn errors carry them; first name wins. */
const ERRNO_NAMES = new Map();
for (const [name, n] of Object.entries(osConstants.errno)) {
  if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);
}

/**
 * Reads the wrapper's exec-status pipe (see SETPGID_EXEC) from the spawn on:
 * a socket that reaches its end unread is destroyed without an 'end', so a
 * reader attached later (once the group exists) would miss a fast exec.
 * Returns `wait(deadline, then)`: `then(null)` once the pipe closed empty (the
 * exec succeeded, or the wrapper died before it: its exit is reported as the
 * run's), `then(errno)` when the exec failed, `then(undefined)` when neither
 * happened by `deadline`.
 */
function watchExec(pipe) {
  let text = "";
  let outcome;
  let waiter = null;
  const settle = (result) => {
    if (outcome !== undefined) return;
    outcome = result;
    pipe.destroy();
    waiter?.(result);
  };
  pipe.setEncoding("utf8");
  pipe.on("data", (d) => {
    text += d;
  });
  const closed = () => {
    const n = Number.parseInt(text, 10);
    settle(Number.isInteger(n) && n > 0 ? n : null);
  };
  pipe.once("end", closed);
  pipe.once("close", closed);
  pipe.once("error", closed);
  return (deadline, then) => {
    if (outcome !== undefined) {
      then(outcome);
      return;
    }
    const timer = setTimeout(
      () => {
        waiter = null;
        pipe.destroy();
        then(undefined);
      },
      Math.max(0, deadline - Date.now()),
    );
    waiter = (result) => {
      clearTimeout(timer);
      then(result);
    };
  };
}

/** The spawn error node would report for a binary that cannot run (the wrapper itself always can). */
function execProblem(bin) {
  if (!bin.includes("/")) return null;
  try {
    accessSync(bin, constants.X_OK);
    if (!statSync(bin).isDirectory()) return null;
  } catch (err) {
    return err;
  }
  // A directory passes the X_OK check; exec refuses it.
  return Object.assign(new Error(`spawn ${bin} EACCES`), { code: "EACCES" });
}

/** Errnos only an exec gives (a spawn's chdir into the working directory can fail with the others). */
const EXEC_ONLY_ERRNOS = new Set(["ENOEXEC", "ETXTBSY", "EISDIR"]);
const EXEC_ERRNOS = new Set([
  ...EXEC_ONLY_ERRNOS,
  "ENOENT",
  "EACCES",
  "EPERM",
  "ENOTDIR",
  "ELOOP",
  "ENAMETOOLONG",
]);

/**
 * Whether a failed spawn of the wrapper is the wrapper's own fault (perl
 * removed, no longer executable, being replaced), not the command's (E2BIG),
 * the working directory's or the system's (EAGAIN): the runner then reports
 * its own start failure, never a missing CLI.
 */
function wrapperAtFault(code) {
  if (EXEC_ONLY_ERRNOS.has(code)) return true;
  return EXEC_ERRNOS.has(code) && execProblem(GROUP_EXEC) !== null;
}

function start(msg) {
  const { id, bin, args, env, cwd, niceness } = msg;
  const crowded = running >= SOLO_PROVIDERS;
  const shared =
    GROUP_EXEC !== "" && crowded && !PERL_CODE_VARS.some((name) => Object.hasOwn(env, name));
  const ownBadlang = Object.hasOwn(env, "PERL_BADLANG");
  /** Report a spawn that failed; `ofWrapper`: the program spawned was the wrapper. */
  const failed = (err, ofWrapper) => {
    const code = err.code ?? "";
    const wrapper = ofWrapper && wrapperAtFault(code) ? { wrapper: GROUP_EXEC } : {};
    toRunner({ type: "error", id, code, message: err.message, ...wrapper });
  };
  const problem = shared ? execProblem(bin) : null;
  if (problem) {
    failed(problem, false);
    return;
  }
  let child;
  try {
    child = shared
      ? spawn(GROUP_EXEC, ["-e", SETPGID_EXEC, "--", ownBadlang ? "keep" : "drop", bin, ...args], {
          cwd,
          env: ownBadlang ? env : { ...env, PERL_BADLANG: "0" },
          // fd 3: the exec-status pipe.
          stdio: ["ignore", "pipe", "pipe", "pipe"],
        })
      : spawn(bin, args, { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    failed(err, shared);
    return;
  }
  running += 1;
  let counted = true;
  const uncount = () => {
    if (counted) running -= 1;
    counted = false;
  };
  if (niceness > 0 && child.pid !== undefined) {
    if (!crowded) {
      // Full priority while few run (see the top).
      unniced.set(child.pid, niceness);
    } else {
      for (const [pid, n] of unniced) yieldCpu(pid, n);
      unniced.clear();
      if (!shared) yieldCpu(child.pid, niceness);
      else {
        // Inside the shared autogroup the per-process value still ranks the helper above its
        // CLIs (and is all there is on kernels without autogroups).
        setProcessNice(child.pid, niceness);
        if (niceness !== sharedNice) {
          setGroupNice(process.pid, niceness);
          sharedNice = niceness;
        }
      }
    }
  }
  // The pipes are the runner's: this process must never read from them (a socket starts
  // reading at once, and what it read would stay here), and must not let ChildProcess drain or
  // close them when the child exits while their handles still wait in the IPC send queue (each
  // handle waits for the runner's acknowledgement of the one before).
  const pipes = [child.stdout, child.stderr];
  /** The wrapper's exec-status pipe (shared providers only); read here, never the runner's. */
  const execStatus = shared ? child.stdio[3] : null;
  const waitForExec = execStatus ? watchExec(execStatus) : null;
  for (const pipe of pipes) {
    pipe.pause();
    pipe._handle?.readStop();
  }
  child.stdio[1] = null;
  child.stdio[2] = null;
  // The pipes are this process's to close when they never reach the runner.
  const closePipes = () => {
    for (const pipe of pipes) pipe.destroy();
  };
  child.once("error", (err) => {
    uncount();
    closePipes();
    execStatus?.destroy();
    failed(err, shared);
  });
  child.once("spawn", () => {
    const pid = child.pid;
    live.add(pid);
    // The runner hears of the child only once it leads its group (a kill then reaches it), and
    // of its exit only after that, even when it exits first.
    let announced = false;
    let exited = null;
    const sendExit = ({ code, signal }) => toRunner({ type: "exit", id, code, signal });
    child.once("exit", (code, signal) => {
      live.delete(pid);
      unniced.delete(pid);
      uncount();
      if (announced) sendExit({ code, signal });
      else exited = { code, signal };
    });
    const announce = () => {
      announced = true;
      // keepOpen false: this process's copies of the pipes close once they are sent.
      toRunner({ type: "spawned", id, pid, stream: "stdout" }, pipes[0]);
      toRunner({ type: "spawned", id, pid, stream: "stderr" }, pipes[1]);
      if (exited) sendExit(exited);
    };
    if (!shared) {
      announce();
      return;
    }
    const deadline = Date.now() + GROUP_LEADER_DEADLINE_MS;
    const timedOut = (what) => {
      // It must not run unsupervised, nor become the CLI unannounced. Before the setpgid it is
      // the perl wrapper alone, so killing the pid kills all there is; after it, its group.
      killTree(pid);
      closePipes();
      toRunner({
        type: "error",
        id,
        code: "ETIMEDOUT",
        message: `the provider did not start within ${GROUP_LEADER_DEADLINE_MS} ms (${what})`,
      });
    };
    whenGroupLeader(
      pid,
      () => exited !== null,
      deadline,
      (leads) => {
        if (!leads) {
          execStatus.destroy();
          timedOut("its process group was never made");
          return;
        }
        waitForExec(deadline, (errno) => {
          if (errno === null) {
            announce();
            return;
          }
          if (errno === undefined) {
            timedOut("the CLI was never executed");
            return;
          }
          // The wrapper exits 127 by itself; nobody is told of that exit (never announced).
          closePipes();
          const code = ERRNO_NAMES.get(errno) ?? "";
          toRunner({
            type: "error",
            id,
            code,
            message: `spawn ${bin} ${code || `errno ${errno}`}`,
          });
        });
      },
    );
  });
}

process.on("message", (msg) => {
  if (msg && msg.type === "spawn") start(msg);
});

/** The runner is gone (or its channel broke): nobody reads these providers any more. */
function runnerGone() {
  for (const pid of live) killTree(pid);
  process.exit(0);
}

/**
 * A message to the runner. The channel can close between a child's start and
 * its report (the runner died meanwhile): that must end here in `runnerGone`,
 * not as an unhandled 'error' that would kill the helper before its groups.
 */
function toRunner(msg, handle) {
  if (!process.connected) return;
  process.send(msg, handle, undefined, (err) => {
    if (err && !process.connected) runnerGone();
  });
}

process.on("disconnect", runnerGone);
process.on("error", runnerGone);
// The runner's close (SpawnHelper.close): its disconnect alone may never arrive, see below.
process.on("SIGTERM", runnerGone);
// 'disconnect' alone is not enough: while pipe handles still wait for the runner's
// acknowledgement (a burst of starts), node defers it until they are acknowledged, which a
// dead runner never does. A new parent (this process was re-parented) says the same for sure.
const runnerPid = process.ppid;
setInterval(() => {
  if (process.ppid !== runnerPid) runnerGone();
}, 200).unref();
