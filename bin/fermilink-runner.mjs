#!/usr/bin/env node
// The `fermilink-runner` command: the build in dist/ (`npm ci` makes it, through the `prepare`
// script; `npm run build` or `npm start` makes it again after a change to the sources; a packed
// package carries it).
//
// The server needs node flags that only the command line can set (NODE_START_FLAGS in
// src/cli/v8-tuning.ts: V8 sizes its heap before any of our code runs). A shebang cannot pass
// them portably (`env -S` is missing from BusyBox and older coreutils), so `serve` runs the
// server as a child node with them: in its own session, so a terminal's Ctrl-C reaches it once,
// through this process; every stop signal is passed on, and the server's exit code (or the
// signal that ended it) is this process's; Ctrl-Z stops both, and `fg` continues both. The server stops itself when this process dies
// (serve.ts, LAUNCHER_PID_ENV). Other commands run here directly.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { constants } from "node:os";
import { fileURLToPath } from "node:url";

const main = new URL("../dist/src/cli/main.js", import.meta.url);
if (!existsSync(main)) {
  process.stderr.write(
    "fermilink-runner: dist/ is missing: run `npm run build` in the checkout first.\n",
  );
  process.exit(1);
}

/** Signals that stop (or, SIGUSR1, debug) the server: passed on to it. */
const FORWARDED = ["SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2"];

const { NODE_START_FLAGS, LAUNCHER_PID_ENV } = await import(
  new URL("../dist/src/cli/launcher.js", import.meta.url).href
);
const needsFlags =
  process.argv[2] === "serve" && NODE_START_FLAGS.some((f) => !process.execArgv.includes(f));
if (!needsFlags) {
  await import(main.href);
} else {
  const child = spawn(
    process.execPath,
    [...process.execArgv, ...NODE_START_FLAGS, fileURLToPath(main), ...process.argv.slice(2)],
    {
      stdio: "inherit",
      env: { ...process.env, [LAUNCHER_PID_ENV]: String(process.pid) },
      detached: true,
    },
  );
  const forward = (signal) => {
    try {
      child.kill(signal);
    } catch {
      // Already gone: its exit is on its way.
    }
  };
  for (const signal of FORWARDED) process.on(signal, forward);
  // Ctrl-Z stops the terminal's foreground group, which is this process alone: the server (in a
  // session of its own) stops with it, and goes on when the shell continues it (fg, bg).
  process.on("SIGTSTP", () => {
    forward("SIGSTOP");
    process.kill(process.pid, "SIGSTOP");
  });
  process.on("SIGCONT", () => forward("SIGCONT"));
  child.once("error", (err) => {
    process.stderr.write(`fermilink-runner: cannot start the server: ${err.message}\n`);
    process.exit(2);
  });
  child.once("exit", (code, signal) => {
    if (signal === null) process.exit(code ?? 2);
    // End as the server ended: by the same signal, which the shell reports as 128+n.
    for (const s of FORWARDED) process.off(s, forward);
    process.kill(process.pid, signal);
    // A signal whose default is not to end a process (SIGPIPE is ignored by node).
    setTimeout(() => process.exit(128 + (constants.signals[signal] ?? 0)), 100);
  });
}
