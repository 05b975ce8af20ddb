import { type ChildProcess, spawn } from "node:child_process";
import {
  copyFileSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { afterEach, describe, expect, it } from "vitest";
import { NODE_START_FLAGS } from "../../../src/cli/v8-tuning.js";
import { postRun } from "../../helpers/sse-client.js";
import { FAKE_AGENT } from "../../helpers/start-server.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

let dir: string | undefined;
let server: ChildProcess | undefined;
afterEach(() => {
  if (server?.exitCode === null) server.kill("SIGKILL");
  server = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/**
 * A checkout of its own (the build script, the sources, a link to the dependencies), so dist/
 * here is nobody else's. The sources are copies: esbuild follows a link to them and writes
 * what it finds outside the checkout under dist/_.._/.
 */
function scratchCheckout(): string {
  const root = mkdtempSync(path.join(tmpdir(), "flr-build-"));
  mkdirSync(path.join(root, "scripts"));
  copyFileSync(path.join(ROOT, "scripts/build.mjs"), path.join(root, "scripts/build.mjs"));
  for (const d of ["src", "gen"])
    cpSync(path.join(ROOT, d), path.join(root, d), { recursive: true });
  symlinkSync(path.join(ROOT, "node_modules"), path.join(root, "node_modules"));
  return root;
}

function build(root: string, env: Record<string, string> = {}): { done: Promise<number | null> } {
  const child = spawn(process.execPath, [path.join(root, "scripts/build.mjs")], {
    env: { ...process.env, ...env },
    stdio: "ignore",
  });
  return { done: new Promise((r) => child.on("exit", (code) => r(code))) };
}

/** The builds beside dist/ (.dist-<ms>-<pid>), oldest first. */
function builds(root: string): string[] {
  return readdirSync(root)
    .filter((n) => n.startsWith(".dist-"))
    .sort();
}

/**
 * Looks for `file` in a tight loop on a thread of its own (so it looks while this thread waits)
 * until stopped; how many looks, and how many found it missing.
 */
function watchFile(file: string): { stop(): Promise<{ looks: number; missing: number }> } {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { workerData, parentPort } = require("node:worker_threads");
     const { existsSync } = require("node:fs");
     let looks = 0, missing = 0;
     while (Atomics.load(workerData.flag, 0) === 0) {
       looks++;
       if (!existsSync(workerData.file)) missing++;
     }
     parentPort.postMessage({ looks, missing });`,
    { eval: true, workerData: { file, flag } },
  );
  const result = new Promise<{ looks: number; missing: number }>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  return {
    stop: () => {
      Atomics.store(flag, 0, 1);
      return result;
    },
  };
}

describe("scripts/build.mjs", () => {
  it("rebuilds dist/ without leaving a running server's later loads without it", async () => {
    dir = scratchCheckout();
    expect(await build(dir).done).toBe(0);
    const helper = path.join(dir, "dist/src/process/spawner/spawner-child.mjs");
    expect(existsSync(helper)).toBe(true);
    // Rebuilds while something keeps loading from dist/: it is there at every look. Emptied
    // first, it was missing for the whole transpile; swapped in with two renames, between them
    // (for as long as the build was descheduled there).
    const watch = watchFile(helper);
    for (let i = 0; i < 3; i++) expect(await build(dir).done).toBe(0);
    const { looks, missing } = await watch.stop();
    expect(looks).toBeGreaterThan(1000);
    expect(missing).toBe(0);
    // Nothing of the builds is left beside dist/ but the one it names: nothing runs from the others.
    expect(
      readdirSync(dir)
        .filter((n) => !n.startsWith(".dist-"))
        .sort(),
    ).toEqual(["dist", "gen", "node_modules", "scripts", "src"]);
    expect(builds(dir)).toEqual([readlinkSync(path.join(dir, "dist"))]);
  }, 60_000);

  it("builds dist/ as a directory for npm pack (which leaves links out), and a link again after", async () => {
    dir = scratchCheckout();
    const dist = path.join(dir, "dist");
    expect(await build(dir).done).toBe(0);
    // npm runs the `prepare` script when it packs, with npm_command=pack.
    expect(await build(dir, { npm_command: "pack" }).done).toBe(0);
    expect(lstatSync(dist).isDirectory()).toBe(true);
    expect(existsSync(path.join(dist, "src/main.js"))).toBe(true);
    expect(builds(dir)).toEqual([]);
    expect(await build(dir).done).toBe(0);
    expect(lstatSync(dist).isSymbolicLink()).toBe(true);
    expect(existsSync(path.join(dist, "src/main.js"))).toBe(true);
    expect(builds(dir)).toEqual([readlinkSync(dist)]);
  }, 60_000);

  it("keeps the build a running server started on until it stops", async () => {
    dir = scratchCheckout();
    // The server finds its checkout by package.json and serves web/ from it.
    for (const f of ["package.json", "web"]) symlinkSync(path.join(ROOT, f), path.join(dir, f));
    expect(await build(dir).done).toBe(0);
    const first = readlinkSync(path.join(dir, "dist"));
    const home = path.join(dir, "home");
    mkdirSync(home);
    // `npm start`'s command, in the scratch checkout.
    const proc = spawn(process.execPath, [...NODE_START_FLAGS, "dist/src/main.js"], {
      cwd: dir,
      env: {
        PATH: process.env.PATH ?? "",
        HOME: home,
        FERMILINK_HOME: home,
        FERMILINK_CODEX_BIN: FAKE_AGENT,
        FERMILINK_RUNNER_PORT: "0",
        FERMILINK_RUNNER_METRICS_PORT: "0",
        // Not the default 200, made before the server listens (seconds on a loaded box).
        FERMILINK_RUNNER_SPARE_WORKSPACES: "2",
        FERMILINK_RUNNER_WARMUP_REQUESTS: "0",
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    server = proc;
    const exited = new Promise((r) => proc.once("exit", r));
    let out = "";
    proc.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    let port = 0;
    for (let i = 0; i < 200 && port === 0; i++) {
      port = Number(/"port":(\d+)/.exec(out)?.[1] ?? 0);
      if (port === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(port).toBeGreaterThan(0);
    // Two builds later the server still loads from its own: its first run starts the spawn
    // helper, by the path of the build the server started on.
    for (let i = 0; i < 2; i++) expect(await build(dir).done).toBe(0);
    expect(builds(dir)).toContain(first);
    expect(readlinkSync(path.join(dir, "dist"))).not.toBe(first);
    const run = await postRun(`http://127.0.0.1:${port}`, { user_prompt: "after two builds" });
    expect(JSON.parse(run.events.at(-1)?.data ?? "{}").reason).toBe("completed");
    // Once it is gone, the next build removes every build but its own.
    proc.kill("SIGTERM");
    await exited;
    expect(await build(dir).done).toBe(0);
    expect(builds(dir)).toEqual([readlinkSync(path.join(dir, "dist"))]);
  }, 90_000);
});
