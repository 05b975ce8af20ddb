/** Shared pieces of the benchmarks: a runner in its own process, statistics, results. */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { arch, cpus, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const FAKE_AGENT = path.join(ROOT, "test/fixtures/bin/fake-agent.mjs");

/** A runner started as `npm start` does, in its own process (its own core on a 2-core box). */
export interface RunnerProcess {
  baseUrl: string;
  pid: number;
  /** Resident set size of the server process, in bytes. */
  rss(): number;
  stop(): Promise<void>;
}

export async function startRunner(env: Record<string, string> = {}): Promise<RunnerProcess> {
  const home = await mkdtemp(path.join(tmpdir(), "flr-bench-"));
  // BENCH_CPU_PROF=<dir> profiles the server (`node --cpu-prof`) to find where a target is lost.
  const prof = process.env.BENCH_CPU_PROF
    ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`]
    : [];
  const child: ChildProcess = spawn(process.execPath, [...prof, "--import", "tsx", "src/main.ts"], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: home,
      FERMILINK_HOME: home,
      FERMILINK_CODEX_BIN: FAKE_AGENT,
      FERMILINK_RUNNER_PORT: "0",
      FERMILINK_RUNNER_METRICS_PORT: "0",
      FERMILINK_RUNNER_LOG_LEVEL: "info",
      FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "0",
      FERMILINK_RUNNER_KILL_GRACE_SECONDS: "1",
      FERMILINK_RUNNER_MAX_RUNTIME_SECONDS: "600",
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    if (out.length < 100_000) out += d.toString();
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  let port = 0;
  for (let i = 0; i < 400 && port === 0; i++) {
    const m = /"port":(\d+)/.exec(out);
    if (m) port = Number(m[1]);
    else await new Promise((r) => setTimeout(r, 25));
  }
  if (port === 0) throw new Error(`runner did not start: ${out}`);
  const pid = child.pid as number;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    pid,
    rss: () => rssOf(pid),
    async stop() {
      child.kill("SIGTERM");
      await exited;
      await rm(home, { recursive: true, force: true });
    },
  };
}

/** VmRSS of a process, in bytes. */
export function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /VmRSS:\s+(\d+)/.exec(status)?.[1];
  return Number(kb ?? 0) * 1024;
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
export async function writeResult(name: string, data: unknown, targets: Target[]): Promise<void> {
  const result = {
    name,
    machine: { cpus: cpus().length, model: cpus()[0]?.model, arch: arch() },
    node: process.version,
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
      `${t.pass ? "PASS" : "MISS"}  ${t.metric}: ${t.measured} (target ${t.target})\n`,
    );
  }
}

export const REPS = Number(process.env.BENCH_REPS ?? 3);
