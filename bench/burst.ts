/**
 * Burst (issue 8 §3): 200 simultaneous runs from 20 users (the provider
 * sleeps 1 s): time to first byte, `/ops/concurrency` latency during the
 * burst against its idle latency in the same run, and how fast a 429 comes
 * back when the queue is full. The runner runs in its own process.
 */
import { REPS, startRunner, stats, timed, writeResult } from "./lib.js";

const RUNS = 200;
const USERS = 20;

const runner = await startRunner({
  FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "200",
  FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS: "10",
  FERMILINK_RUNNER_MAX_QUEUE_SIZE: "2000",
});
const ops = () => fetch(`${runner.baseUrl}/ops/concurrency`).then((r) => r.text());
const idle: number[] = [];
const busy: number[] = [];
const ttfb: number[] = [];
for (let rep = 0; rep < REPS; rep++) {
  for (let i = 0; i < 50; i++) idle.push(await timed(ops));
  let done = false;
  const probe = (async () => {
    while (!done) {
      busy.push(await timed(ops));
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  await Promise.all(
    Array.from({ length: RUNS }, async (_, i) => {
      const t = performance.now();
      const res = await fetch(`${runner.baseUrl}/run`, {
        method: "POST",
        body: JSON.stringify({
          user_id: `u${i % USERS}`,
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
await runner.stop();

// A full queue: one slot and one queue place, both taken by slow runs.
const full = await startRunner({
  FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "1",
  FERMILINK_RUNNER_MAX_QUEUE_SIZE: "1",
});
const holders = [0, 1].map((i) =>
  fetch(`${full.baseUrl}/run`, {
    method: "POST",
    body: JSON.stringify({ session_id: `h${i}`, user_prompt: "#scenario=slow" }),
  }),
);
await Promise.all(holders);
const rejected: number[] = [];
for (let i = 0; i < 200; i++) {
  rejected.push(
    await timed(async () => {
      const r = await fetch(`${full.baseUrl}/run`, { method: "POST", body: '{"user_prompt":"x"}' });
      if (r.status !== 429) throw new Error(`expected 429, got ${r.status}`);
      await r.text();
    }),
  );
}
await full.stop();

const t = stats(ttfb);
const b = stats(busy);
const r = stats(rejected);
await writeResult(
  "burst",
  {
    time_to_first_byte_ms: t,
    ops_idle_ms: stats(idle),
    ops_during_burst_ms: b,
    reject_429_ms: r,
    ops_burst_over_idle_median: b.median / stats(idle).median,
  },
  [
    {
      metric: "burst of 200 runs: time to first byte p99",
      target: "< 500 ms",
      measured: `${t.p99.toFixed(0)} ms (median ${t.median.toFixed(0)} ms)`,
      pass: t.p99 < 500,
    },
    {
      metric: "ops latency during the burst (p99)",
      target: "< 50 ms",
      measured: `${b.p99.toFixed(1)} ms (median ${b.median.toFixed(1)}, idle median ${stats(idle).median.toFixed(1)} ms)`,
      pass: b.p99 < 50,
    },
    {
      metric: "429 when the queue is full (p99)",
      target: "< 20 ms",
      measured: `${r.p99.toFixed(1)} ms (median ${r.median.toFixed(1)} ms)`,
      pass: r.p99 < 20,
    },
  ],
);
