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
 * the runner goes away (IPC disconnect) every group it started is SIGKILLed.
 */
import { spawn } from "node:child_process";
import { crowdNice, setGroupNice, yieldCpu } from "../yield-cpu.mjs";

/** Live children by their pid (= process group id: each is detached). */
const live = new Set();

/** Niceness each live child was started with, and the autogroup nice all of them have now. */
const bases = new Map();
let groupLevel = 0;

/** Keep the providers' autogroups at `crowdNice` for how many are live (see yield-cpu.mjs). */
function rebalance() {
  let base = 0;
  for (const b of bases.values()) base = Math.max(base, b);
  const level = crowdNice(base, bases.size);
  if (level === groupLevel) return;
  groupLevel = level;
  for (const pid of bases.keys()) setGroupNice(pid, level);
}

function start(msg) {
  const { id, bin, args, env, cwd, niceness } = msg;
  let child;
  try {
    child = spawn(bin, args, { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    process.send({ type: "error", id, code: err.code ?? "", message: err.message });
    return;
  }
  if (niceness > 0 && child.pid !== undefined) {
    yieldCpu(child.pid, niceness);
    bases.set(child.pid, niceness);
    const before = groupLevel;
    rebalance();
    // Unchanged level: the new child still needs the crowd's value, not its base.
    if (groupLevel === before && groupLevel > niceness) setGroupNice(child.pid, groupLevel);
  }
  // The pipes are the runner's: this process must never read from them (a socket starts
  // reading at once, and what it read would stay here), and must not let ChildProcess drain or
  // close them when the child exits while their handles still wait in the IPC send queue (each
  // handle waits for the runner's acknowledgement of the one before).
  const pipes = [child.stdout, child.stderr];
  for (const pipe of pipes) {
    pipe.pause();
    pipe._handle?.readStop();
  }
  child.stdio[1] = null;
  child.stdio[2] = null;
  child.once("error", (err) => {
    process.send({ type: "error", id, code: err.code ?? "", message: err.message });
  });
  child.once("spawn", () => {
    const pid = child.pid;
    live.add(pid);
    child.once("exit", (code, signal) => {
      live.delete(pid);
      if (bases.delete(pid)) rebalance();
      process.send({ type: "exit", id, code, signal });
    });
    // keepOpen false: this process's copies of the pipes close once they are sent.
    process.send({ type: "spawned", id, pid, stream: "stdout" }, pipes[0]);
    process.send({ type: "spawned", id, pid, stream: "stderr" }, pipes[1]);
  });
}

process.on("message", (msg) => {
  if (msg && msg.type === "spawn") start(msg);
});

process.on("disconnect", () => {
  for (const pid of live) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  process.exit(0);
});
