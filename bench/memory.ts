/**
 * Memory (issue 8 §4): server RSS while a client pauses for 10 s in the
 * middle of a 100,000-line run (SSE face and gRPC), and server RSS per live
 * run with 1,000 idle runs. The runner runs in its own process; the journal
 * (SQLite) is the buffer for a paused viewer.
 */
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RunService } from "../gen/fermilink/runner/v1/run_pb.js";
import { ROOT, type RunnerProcess, startRunner, writeResult } from "./lib.js";

const PAUSE_MS = Number(process.env.BENCH_PAUSE_MS ?? 10_000);
const IDLE_RUNS = Number(process.env.BENCH_IDLE_RUNS ?? 1000);
const MB = 1024 * 1024;

/** RSS samples every 250 ms while `pause` runs: growth over the start, and over the pause's middle. */
async function sampleWhile(
  runner: RunnerProcess,
  pause: Promise<void>,
): Promise<{ growthMb: number; lateGrowthMb: number }> {
  const start = runner.rss();
  const samples: number[] = [];
  let done = false;
  void pause.then(() => {
    done = true;
  });
  while (!done) {
    samples.push(runner.rss());
    await new Promise((r) => setTimeout(r, 250));
  }
  const half = Math.floor(samples.length / 2);
  const firstHalfMax = Math.max(start, ...samples.slice(0, half));
  const max = Math.max(start, ...samples);
  // "Stops growing": the second half of the pause adds (almost) nothing over the first half's peak.
  return { growthMb: (max - start) / MB, lateGrowthMb: (max - firstHalfMax) / MB };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const runner = await startRunner();
// Warm up: one full run, so the baseline includes loaded code and a warm heap.
await (
  await fetch(`${runner.baseUrl}/run`, {
    method: "POST",
    body: JSON.stringify({ user_prompt: "#scenario=bench-100k" }),
  })
).text();

const sseRes = await fetch(`${runner.baseUrl}/run`, {
  method: "POST",
  body: JSON.stringify({ session_id: "paused-sse", user_prompt: "#scenario=bench-100k" }),
});
const reader = (sseRes.body as ReadableStream<Uint8Array>).getReader();
await reader.read();
const sse = await sampleWhile(runner, sleep(PAUSE_MS));
while (!(await reader.read()).done) {}

const client = createClient(RunService, createGrpcTransport({ baseUrl: runner.baseUrl }));
const it = client
  .run({ sessionId: "paused-grpc", userPrompt: "#scenario=bench-100k" })
  [Symbol.asyncIterator]();
await it.next();
const grpc = await sampleWhile(runner, sleep(PAUSE_MS));
while (!(await it.next()).done) {}
await runner.stop();

// 1,000 idle runs: a provider that prints one line and sleeps (a shell script, so the
// machine's memory goes to the runner under test, not to 1,000 node processes).
const idle = await startRunner({
  FERMILINK_CODEX_BIN: path.join(ROOT, "bench/fixtures/idle-provider.sh"),
  FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: String(IDLE_RUNS),
  FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS: "10",
  FERMILINK_RUNNER_SSE_HEARTBEAT_SECONDS: "0",
});
const before = idle.rss();
const streams = await Promise.all(
  Array.from({ length: IDLE_RUNS }, async (_, i) => {
    const abort = new AbortController();
    const res = await fetch(`${idle.baseUrl}/run`, {
      method: "POST",
      body: JSON.stringify({
        user_id: `u${i % 100}`,
        session_id: `idle-${i}`,
        user_prompt: "wait",
      }),
      signal: abort.signal,
    });
    const r = (res.body as ReadableStream<Uint8Array>).getReader();
    await r.read();
    return { abort, r };
  }),
);
await sleep(2000);
const after = idle.rss();
for (const s of streams) s.abort.abort();
await idle.stop();
const perRunKb = (after - before) / 1024 / IDLE_RUNS;

await writeResult(
  "memory",
  {
    pause_ms: PAUSE_MS,
    sse_paused: sse,
    grpc_paused: grpc,
    idle_runs: IDLE_RUNS,
    idle_rss_before_mb: before / MB,
    idle_rss_after_mb: after / MB,
    idle_rss_per_run_kb: perRunKb,
  },
  [
    {
      metric: "SSE client paused 10 s mid-run: server RSS growth",
      target: "<= 8 MB, and stops growing",
      measured: `${sse.growthMb.toFixed(1)} MB (last half of the pause: +${sse.lateGrowthMb.toFixed(1)} MB)`,
      pass: sse.growthMb <= 8 && sse.lateGrowthMb <= 1,
    },
    {
      metric: "gRPC client paused 10 s mid-run: server RSS growth",
      target: "<= 8 MB, and stops growing",
      measured: `${grpc.growthMb.toFixed(1)} MB (last half of the pause: +${grpc.lateGrowthMb.toFixed(1)} MB)`,
      pass: grpc.growthMb <= 8 && grpc.lateGrowthMb <= 1,
    },
    {
      metric: `server RSS per live run (${IDLE_RUNS} idle runs)`,
      target: "reported",
      measured: `${perRunKb.toFixed(0)} KB/run (${(before / MB).toFixed(0)} → ${(after / MB).toFixed(0)} MB)`,
      pass: true,
    },
  ],
);
