/**
 * Admission overhead and ops latency under a burst (issue 3), each as a ratio
 * against a baseline measured in the same run: idle `/ops/concurrency`
 * latency vs. its latency while 200 runs from 20 users start (provider sleeps
 * 1 s), and the latency of a 429 answer. Never part of `npm test`.
 *
 *   npm run bench            (writes bench/results/admission-ops.json)
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { arch, cpus, tmpdir } from "node:os";
import path from "node:path";
import { startApp } from "../src/app.js";
import { loadConfig } from "../src/config/load-config.js";
import { createLogger } from "../src/log/logger.js";
import { FAKE_AGENT } from "../test/helpers/start-server.js";

const REPS = 5;

function stats(samples: number[]) {
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0;
  return { p50: q(0.5), p99: q(0.99), min: s[0] ?? 0, max: s.at(-1) ?? 0, n: s.length };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function main() {
  const home = await mkdtemp(path.join(tmpdir(), "flr-bench-"));
  const config = loadConfig({
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    FERMILINK_HOME: home,
    FERMILINK_RUNNER_PORT: "0",
    FERMILINK_RUNNER_METRICS_PORT: "0",
    FERMILINK_CODEX_BIN: FAKE_AGENT,
    FERMILINK_RUNNER_LOG_LEVEL: "silent",
    FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "200",
    FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS: "10",
    FERMILINK_RUNNER_MAX_QUEUE_SIZE: "2000",
    FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "0",
  });
  const app = await startApp(config, { logger: createLogger("silent") });
  const base = `http://127.0.0.1:${app.port}`;
  const ops = () => fetch(`${base}/ops/concurrency`).then((r) => r.text());

  const idle: number[] = [];
  const busy: number[] = [];
  const ttfb: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    for (let i = 0; i < 50; i++) idle.push(await timed(ops));
    let done = false;
    const probe = (async () => {
      while (!done) busy.push(await timed(ops));
    })();
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const t = performance.now();
        const res = await fetch(`${base}/run`, {
          method: "POST",
          body: JSON.stringify({
            user_id: `u${i % 20}`,
            session_id: `b${rep}-${i}`,
            user_prompt: "#scenario=sleep-1s",
          }),
        });
        const reader = (res.body as ReadableStream<Uint8Array>).getReader();
        await reader.read();
        ttfb.push(performance.now() - t);
        while (!(await reader.read()).done) {}
      }),
    );
    done = true;
    await probe;
  }
  await app.close();

  // 429 latency: a server whose queue is full (limit 1, queue 1, both taken).
  const full = await startApp(
    loadConfig({
      ...process.env,
      PATH: process.env.PATH ?? "",
      FERMILINK_HOME: home,
      FERMILINK_RUNNER_PORT: "0",
      FERMILINK_RUNNER_METRICS_PORT: "0",
      FERMILINK_CODEX_BIN: FAKE_AGENT,
      FERMILINK_RUNNER_LOG_LEVEL: "silent",
      FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1",
      FERMILINK_RUNNER_MAX_QUEUE_SIZE: "1",
      FERMILINK_RUNNER_SHUTDOWN_GRACE_SECONDS: "0",
    }),
    { logger: createLogger("silent") },
  );
  const fbase = `http://127.0.0.1:${full.port}`;
  const holders = [0, 1].map((i) =>
    fetch(`${fbase}/run`, {
      method: "POST",
      body: JSON.stringify({ session_id: `h${i}`, user_prompt: "#scenario=slow" }),
    }),
  );
  await Promise.all(holders);
  const rejected: number[] = [];
  const fullIdleOps: number[] = [];
  for (let i = 0; i < 200; i++) {
    rejected.push(
      await timed(() =>
        fetch(`${fbase}/run`, { method: "POST", body: '{"user_prompt":"x"}' }).then((r) =>
          r.text(),
        ),
      ),
    );
    fullIdleOps.push(await timed(() => fetch(`${fbase}/ops/concurrency`).then((r) => r.text())));
  }
  await full.close();
  await rm(home, { recursive: true, force: true });

  const result = {
    machine: { cpus: cpus().length, model: cpus()[0]?.model, arch: arch() },
    node: process.version,
    date: new Date().toISOString(),
    ops_idle_ms: stats(idle),
    ops_during_burst_ms: stats(busy),
    ops_burst_over_idle_p50: stats(busy).p50 / stats(idle).p50,
    burst_time_to_first_byte_ms: stats(ttfb),
    reject_429_ms: stats(rejected),
    reject_429_over_ops_p50: stats(rejected).p50 / stats(fullIdleOps).p50,
  };
  const file = path.join(
    path.dirname(new URL(import.meta.url).pathname),
    "results",
    "admission-ops.json",
  );
  await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${String(err)}\n`);
  process.exit(1);
});
