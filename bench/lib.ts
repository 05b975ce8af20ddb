/**
 * Shared pieces of the benchmarks: a runner in its own process (as `npm start`
 * runs it), the provider replayed exactly as the runner started it (the
 * baselines), CPU and memory probes, an SSE reader, statistics and results.
 */

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import { arch, cpus, loadavg, setPriority, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { NODE_START_FLAGS } from "../src/cli/v8-tuning.js";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const FAKE_AGENT = path.join(ROOT, "test/fixtures/bin/fake-agent.mjs");

/** Repetitions of each measurement (`BENCH_REPS=10 npm run bench` for tighter figures). */
export const REPS = Math.max(1, Number(process.env.BENCH_REPS ?? 3));

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Memory figures the runner's own /metrics reports (prom-client default metrics), in bytes. */
export interface ServerMemory {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
}

/** A runner started as `npm start` does, in its own process (its own core on a 2-core box). */
export interface RunnerProcess {
  baseUrl: string;
  pid: number;
  home: string;
  workspacesRoot: string;
  /** Resident set size of the server process, in bytes (/proc/<pid>/status VmRSS). */
  rss(): number;
  /** CPU seconds of the server itself and of its reaped children (the providers). */
  cpu(): CpuTimes;
  /** Heap and external memory of the server, scraped from its metrics port. */
  memory(): Promise<ServerMemory>;
  stop(): Promise<void>;
}

/**
 * Every server process a bench started: killed when the bench exits, however
 * it ends (an error, Ctrl-C, a `timeout` around `npm run bench`), so no runner,
 * its providers or a baseline server outlive it.
 */
const started = new Set<ChildProcess>();
const killStarted = () => {
  for (const child of started) if (child.exitCode === null) child.kill("SIGKILL");
};
process.once("exit", killStarted);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    killStarted();
    process.exit(128 + (signal === "SIGINT" ? 2 : 15));
  });
}
function track(child: ChildProcess): ChildProcess {
  started.add(child);
  child.once("exit", () => started.delete(child));
  return child;
}

let built = false;
/** `npm start` builds dist/ before it starts it; a bench does the same before its first runner. */
function buildOnce(): void {
  if (built) return;
  execFileSync(process.execPath, [path.join(ROOT, "scripts/build.mjs")], {
    cwd: ROOT,
    stdio: "inherit",
  });
  built = true;
}

export async function startRunner(env: Record<string, string> = {}): Promise<RunnerProcess> {
  buildOnce();
  const home = await mkdtemp(path.join(tmpdir(), "flr-bench-"));
  // BENCH_CPU_PROF=<dir> profiles the server (`node --cpu-prof`) to find where a target is lost.
  // BENCH_SERVER_FLAGS adds node flags (e.g. `--heapsnapshot-signal=SIGUSR2`); BENCH_RUNNER_ENV, a
  // JSON object, adds runner variables to every runner a bench starts (A/B runs of a setting).
  const prof = process.env.BENCH_CPU_PROF
    ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`]
    : [];
  prof.push(...(process.env.BENCH_SERVER_FLAGS ?? "").split(" ").filter((f) => f !== ""));
  const child: ChildProcess = track(
    // The node flags of `npm start` (src/cli/v8-tuning.ts), so the bench measures what it runs.
    spawn(process.execPath, [...NODE_START_FLAGS, ...prof, "dist/src/main.js"], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: home,
        FERMILINK_HOME: home,
        FERMILINK_SOFTWARE_ROOT: path.join(home, "no-software"),
        FERMILINK_CODEX_BIN: FAKE_AGENT,
        FERMILINK_RUNNER_PORT: "0",
        FERMILINK_RUNNER_METRICS_PORT: "0",
        FERMILINK_RUNNER_LOG_LEVEL: "info",
        FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "0",
        FERMILINK_RUNNER_KILL_GRACE_SECONDS: "1",
        FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "600",
        // The provider-alone baselines use the same value (spawnLikeRunner).
        ...(process.env.FERMILINK_RUNNER_PROVIDER_NICE
          ? { FERMILINK_RUNNER_PROVIDER_NICE: process.env.FERMILINK_RUNNER_PROVIDER_NICE }
          : {}),
        ...(JSON.parse(process.env.BENCH_RUNNER_ENV ?? "{}") as Record<string, string>),
        ...env,
      },
      stdio: ["ignore", "pipe", "inherit"],
    }),
  );
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    if (out.length < 100_000) out += d.toString();
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  let port = 0;
  let metricsPort = 0;
  for (let i = 0; i < 800 && port === 0; i++) {
    const m = /"port":(\d+),"metricsPort":(\d+)/.exec(out);
    if (m) {
      port = Number(m[1]);
      metricsPort = Number(m[2]);
    } else if (child.exitCode !== null) break;
    else await sleep(25);
  }
  if (port === 0) {
    child.kill("SIGKILL");
    throw new Error(`runner did not start: ${out}`);
  }
  const pid = child.pid as number;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    pid,
    home,
    workspacesRoot: path.join(home, "workspaces"),
    rss: () => rssOf(pid),
    cpu: () => cpuOf(pid),
    memory: () => scrapeMemory(metricsPort),
    async stop() {
      child.kill("SIGTERM");
      await exited;
      await rm(home, { recursive: true, force: true });
    },
  };
}

async function scrapeMemory(metricsPort: number): Promise<ServerMemory> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)`, "m").exec(text)?.[1] ?? 0);
  return {
    rss: read("process_resident_memory_bytes"),
    heapUsed: read("nodejs_heap_size_used_bytes"),
    heapTotal: read("nodejs_heap_size_total_bytes"),
    external: read("nodejs_external_memory_bytes"),
  };
}

/** A baseline server from bench/fixtures in its own process; it prints one JSON line when ready. */
export async function startFixtureServer<T>(
  script: string,
  env: Record<string, string> = {},
): Promise<{ info: T; pid: number; stop(): void }> {
  const child: ChildProcess = track(
    spawn(process.execPath, ["--import", "tsx", script], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
      stdio: ["ignore", "pipe", "inherit"],
    }),
  );
  const first = await new Promise<string>((resolve) =>
    child.stdout?.once("data", (d: Buffer) => resolve(d.toString())),
  );
  return {
    info: JSON.parse(first) as T,
    pid: child.pid as number,
    stop: () => child.kill("SIGTERM"),
  };
}

/** VmRSS of a process, in bytes. */
export function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /VmRSS:\s+(\d+)/.exec(status)?.[1];
  return Number(kb ?? 0) * 1024;
}

/** CPU seconds from /proc/<pid>/stat: the process itself, and its children it has reaped. */
export interface CpuTimes {
  self: number;
  children: number;
}

const TICKS_PER_S = 100; // USER_HZ on Linux

export function cpuOf(pid: number): CpuTimes {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces) start at field 3.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const n = (i: number) => Number(f[i - 3] ?? 0);
  return { self: (n(14) + n(15)) / TICKS_PER_S, children: (n(16) + n(17)) / TICKS_PER_S };
}

/**
 * Seconds the main thread of `pid` spent runnable but waiting for a CPU
 * (/proc/<pid>/schedstat): how much other processes on the box held it back.
 */
export function runQueueWaitOf(pid: number | "self"): number {
  try {
    const f = readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ");
    return Number(f[1] ?? 0) / 1e9;
  } catch {
    return 0;
  }
}

/** CPU seconds this (client) process has used. */
export function clientCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/**
 * Cores used over a measured stretch: the server, its providers (reaped
 * children), and this client. Shows which process was the bottleneck
 * (one core = 1.00; the box has two).
 */
export interface CoresUsed {
  server: number;
  providers: number;
  client: number;
  /** Share of the wall time the server's main thread waited for a CPU (another process had it). */
  serverWaitingForCpu: number;
  clientWaitingForCpu: number;
}

export async function measureCores<T>(
  pid: number | null,
  fn: () => Promise<T>,
): Promise<{ value: T; secs: number; cores: CoresUsed }> {
  // Without a server, "providers" are this process's own reaped children (the provider alone).
  const own = () => ({ self: 0, children: cpuOf(process.pid).children });
  const s0 = pid === null ? own() : cpuOf(pid);
  const w0 = pid === null ? 0 : runQueueWaitOf(pid);
  const cw0 = runQueueWaitOf("self");
  const c0 = clientCpu();
  const t = performance.now();
  const value = await fn();
  const secs = (performance.now() - t) / 1000;
  const s1 = pid === null ? own() : cpuOf(pid);
  const w1 = pid === null ? 0 : runQueueWaitOf(pid);
  const cw1 = runQueueWaitOf("self");
  const c1 = clientCpu();
  return {
    value,
    secs,
    cores: {
      server: (s1.self - s0.self) / secs,
      providers: (s1.children - s0.children) / secs,
      client: (c1 - c0) / secs,
      serverWaitingForCpu: (w1 - w0) / secs,
      clientWaitingForCpu: (cw1 - cw0) / secs,
    },
  };
}

/** How the runner started the provider, as the fake agent recorded it (.fake-agent/invocation.json). */
export interface Invocation {
  argv: string[];
  cwd: string;
  env: Record<string, string>;
}

export async function readInvocation(runner: RunnerProcess, session: string): Promise<Invocation> {
  const file = path.join(runner.workspacesRoot, session, "repo", ".fake-agent", "invocation.json");
  return JSON.parse(await readFile(file, "utf8")) as Invocation;
}

/**
 * The baseline "provider alone": the fake agent started from node exactly as
 * the runner starts a lone provider (same argv, environment, working
 * directory, own session and process group, the runner's priority: the spawn
 * helper nices providers only once more than two are alive), but with
 * `prompt` as its last argument.
 * `onStdout` sees each chunk; resolves with the ms from spawn to exit, and
 * the ms the spawn() call itself blocked this process (the fork).
 */
export async function spawnLikeRunner(
  inv: Invocation,
  prompt: string,
  onStdout: (chunk: Buffer) => void = () => {},
  niceness = 0,
): Promise<{ ms: number; spawnMs: number }> {
  // A run id of its own (the same length): the runner's orphan sweeper kills what still carries
  // an ended run's id, and took a replay of that run's provider for one (a baseline of 2,492 lines).
  const env = { ...inv.env, FERMILINK_RUN_ID: randomUUID() };
  const t = performance.now();
  const child = spawn(process.execPath, [FAKE_AGENT, ...inv.argv.slice(0, -1), prompt], {
    cwd: inv.cwd,
    env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const spawnMs = performance.now() - t;
  if (niceness > 0 && child.pid !== undefined) setPriority(child.pid, niceness);
  child.stdout.on("data", onStdout);
  child.stderr.resume();
  await new Promise<void>((resolve) => child.once("close", () => resolve()));
  return { ms: performance.now() - t, spawnMs };
}

/** What an SSE reader saw of one `POST /run`. */
export interface SseRun {
  status: number;
  /** Frames by event name (`agent`, `meta`, `log`, `runner.exit`). */
  frames: Map<string, number>;
  /** Bytes received on the wire (the body). */
  wireBytes: number;
  /** Bytes of `data:` payloads of agent frames (the provider's lines). */
  agentBytes: number;
  /** ms from the request to the status line, the first body byte, `meta`, and `runner.exit`. */
  headersMs: number;
  firstByteMs: number;
  metaMs: number;
  exitMs: number;
  /** The `runner.exit` payload. */
  exit: string;
}

/**
 * `POST /run` and parse the answer as a client would: frames split on blank
 * lines, `event:`, `id:` and `data:` fields read (the runner ends lines with
 * LF). `pauseAfterFirst` stops reading (the socket fills, TCP pushes back)
 * until it resolves, once the first chunk, or with `pauseAfterFrames` once
 * that many frames, has been read.
 */
export function sseRun(
  baseUrl: string,
  body: Record<string, unknown>,
  opts: {
    pauseAfterFirst?: () => Promise<void>;
    pauseAfterFrames?: number;
    signal?: AbortSignal;
  } = {},
): Promise<SseRun> {
  const t = performance.now();
  const url = new URL("/run", baseUrl);
  return new Promise<SseRun>((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        agent: false,
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
      (res) => {
        const r: SseRun = {
          status: res.statusCode ?? 0,
          headersMs: performance.now() - t,
          frames: new Map(),
          wireBytes: 0,
          agentBytes: 0,
          firstByteMs: -1,
          metaMs: -1,
          exitMs: -1,
          exit: "",
        };
        res.setEncoding("utf8");
        let buf = "";
        let paused = false;
        let framesRead = 0;
        const frame = (text: string) => {
          let event = "message";
          let data = "";
          let start = 0;
          while (start < text.length) {
            let end = text.indexOf("\n", start);
            if (end === -1) end = text.length;
            const line = text.slice(start, end);
            start = end + 1;
            if (line.startsWith("data: "))
              data = data === "" ? line.slice(6) : `${data}\n${line.slice(6)}`;
            else if (line.startsWith("event: ")) event = line.slice(7);
            // `id:` and comments (`: queued`, keepalive) need nothing here.
          }
          if (event === "message" && data === "") return;
          framesRead++;
          r.frames.set(event, (r.frames.get(event) ?? 0) + 1);
          if (event === "agent") r.agentBytes += data.length;
          else if (event === "meta") r.metaMs = performance.now() - t;
          else if (event === "runner.exit") {
            r.exitMs = performance.now() - t;
            r.exit = data;
          }
        };
        res.on("data", (chunk: string) => {
          if (r.firstByteMs < 0) r.firstByteMs = performance.now() - t;
          r.wireBytes += Buffer.byteLength(chunk);
          buf += chunk;
          let cut = buf.indexOf("\n\n");
          let from = 0;
          while (cut !== -1) {
            frame(buf.slice(from, cut));
            from = cut + 2;
            cut = buf.indexOf("\n\n", from);
          }
          buf = buf.slice(from);
          if (opts.pauseAfterFirst && !paused && framesRead >= (opts.pauseAfterFrames ?? 0)) {
            paused = true;
            res.pause();
            void opts.pauseAfterFirst().then(() => res.resume());
          }
        });
        res.on("end", () => {
          if (buf.trim() !== "") frame(buf);
          resolve(r);
        });
        res.on("error", reject);
        // A request aborted by `signal` ends here (settling twice is a no-op).
        res.on("close", () => (res.complete ? resolve(r) : reject(new Error("aborted"))));
      },
    );
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

export interface Stats {
  median: number;
  p99: number;
  min: number;
  max: number;
  n: number;
}

export function stats(samples: number[]): Stats {
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0;
  return { median: q(0.5), p99: q(0.99), min: s[0] ?? 0, max: s.at(-1) ?? 0, n: s.length };
}

/** Ratios of paired samples (each repetition against the baseline measured beside it). */
export function ratios(measured: number[], baseline: number[]): Stats {
  return stats(measured.map((m, i) => m / (baseline[i] ?? Number.NaN)));
}

/** "0.54 (0.49–0.58)": median, then min–max when there is more than one sample. */
export function fmtRange(s: Stats, digits = 2, unit = ""): string {
  const f = (n: number) => `${n.toFixed(digits)}${unit}`;
  return s.n > 1 ? `${f(s.median)} (${f(s.min)}–${f(s.max)})` : f(s.median);
}

/** "46,570/s" */
export const perSecond = (n: number) => `${Math.round(n).toLocaleString("en-US")}/s`;

export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** One measured target: what was asked, what was measured, and whether it holds. */
export interface Target {
  metric: string;
  target: string;
  measured: string;
  pass: boolean;
}

/** Write `bench/results/<name>.json` with the machine it ran on. */
export async function writeResult(
  name: string,
  data: unknown,
  targets: Target[],
  reps = REPS,
): Promise<void> {
  const result = {
    name,
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      arch: arch(),
      // Other work on the box skews every figure; the load average says how busy it was.
      loadavg_1m_at_end: loadavg()[0],
    },
    node: process.version,
    reps,
    date: new Date().toISOString(),
    targets,
    data,
  };
  await writeFile(
    path.join(ROOT, "bench/results", `${name}.json`),
    `${JSON.stringify(result, null, 2)}\n`,
  );
  for (const t of targets) {
    process.stdout.write(
      `${t.pass ? "MET " : "MISS"}  ${t.metric}: ${t.measured} (target ${t.target})\n`,
    );
  }
}
