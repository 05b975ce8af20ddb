/**
 * Burst (issue 8 §3): 200 simultaneous runs (new sessions) from 20 users, the
 * provider sleeping 1 s. Measured, each beside a baseline from the same run:
 *  - time to first byte (the `meta` frame) p50/p99, against one run alone on
 *    the idle runner;
 *  - `GET /ops/concurrency` latency while the burst is admitted and running,
 *    against the same request on the idle runner;
 *  - 429 latency when overloaded: a runner with a small queue (20 slots, 20
 *    queue places) hit by the same burst, so 160 callers are refused while
 *    the others start; against a bare node server that answers every caller
 *    of the same flood 429 at once (bench/fixtures/bare-429-server.ts: what
 *    machine, loopback and client cost by themselves), and a 429 from a full
 *    but otherwise quiet runner.
 * Replaces bench/admission-ops.ts (ops and 429 latency), whose figures are here.
 */
import {
  type CoresUsed,
  fmtRange,
  measureCores,
  type RunnerProcess,
  type Stats,
  sleep,
  sseRun,
  startFixtureServer,
  startRunner,
  stats,
  timed,
  writeResult,
} from "./lib.js";

const RUNS = 200;
const USERS = 20;
/** A burst lasts about 20 s on a 2-core box: two by default keeps this bench near a minute. */
const BURST_REPS = Math.max(1, Number(process.env.BENCH_REPS ?? 2));

const ops = (r: RunnerProcess) =>
  timed(async () => {
    const res = await fetch(`${r.baseUrl}/ops/concurrency`);
    await res.text();
  });

/** `fn` while probing /ops/concurrency every 5 ms; the probe latencies and the server's peak RSS. */
async function probing<T>(
  r: RunnerProcess,
  fn: () => Promise<T>,
): Promise<{ value: T; ops: number[]; peakRssMb: number }> {
  const samples: number[] = [];
  let peak = 0;
  let done = false;
  const probe = (async () => {
    while (!done) {
      samples.push(await ops(r));
      peak = Math.max(peak, r.rss());
      await sleep(5);
    }
  })();
  const value = await fn();
  done = true;
  await probe;
  return { value, ops: samples, peakRssMb: peak / 1024 / 1024 };
}

/** 200 runs at once from 20 users; per run: ms to the first body byte, HTTP status, ms to the status. */
function burst(baseUrl: string, tag: string) {
  return Promise.all(
    Array.from({ length: RUNS }, (_, i) =>
      sseRun(baseUrl, {
        user_id: `u${i % USERS}`,
        session_id: `${tag}-${i}`,
        user_prompt: "#scenario=sleep-1s",
      }),
    ),
  );
}

// 1. The burst on a runner with the default limits (200 runs, 10 per user): all start at once.
const runner = await startRunner({
  FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "200",
  FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS: "10",
  FERMILINK_RUNNER_MAX_QUEUE_SIZE: "2000",
});
const aloneTtfb: number[] = [];
const idleOps: number[] = [];
const burstTtfb: number[] = [];
const burstOps: number[] = [];
const burstSecs: number[] = [];
const burstPeakRss: number[] = [];
const burstCores: CoresUsed[] = [];
await sseRun(runner.baseUrl, { session_id: "warm", user_prompt: "#scenario=bench-one-line" });
const idleRssMb = runner.rss() / 1024 / 1024;
for (let rep = 0; rep < BURST_REPS; rep++) {
  for (let i = 0; i < 50; i++) idleOps.push(await ops(runner));
  for (let i = 0; i < 5; i++) {
    const one = await sseRun(runner.baseUrl, {
      user_id: "solo",
      session_id: `solo-${rep}-${i}`,
      user_prompt: "#scenario=bench-one-line",
    });
    aloneTtfb.push(one.firstByteMs);
  }
  const m = await measureCores(runner.pid, () =>
    probing(runner, () => burst(runner.baseUrl, `b${rep}`)),
  );
  const b = m.value;
  burstSecs.push(m.secs);
  burstCores.push(m.cores);
  for (const run of b.value) {
    if (run.status !== 200 || run.exitMs < 0) throw new Error(`burst run failed: ${run.status}`);
    burstTtfb.push(run.firstByteMs);
  }
  burstOps.push(...b.ops);
  burstPeakRss.push(b.peakRssMb);
  process.stdout.write(
    `rep ${rep + 1}/${BURST_REPS}: first byte p99 ${stats(b.value.map((x) => x.firstByteMs)).p99.toFixed(0)} ms, ops p99 ${stats(b.ops).p99.toFixed(1)} ms\n`,
  );
}
await runner.stop();

// 2. Overload: 20 slots and 20 queue places; the same burst, so 160 callers get a 429.
const bare429 = await startFixtureServer<{ port: number }>("bench/fixtures/bare-429-server.ts");
const bareUrl = `http://127.0.0.1:${bare429.info.port}`;
const bareFlood429: number[] = [];
const small = await startRunner({
  FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: "20",
  FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS: "10",
  FERMILINK_RUNNER_MAX_QUEUE_SIZE: "20",
  FERMILINK_RUNNER_MAX_PENDING_PER_USER: "10",
});
const quiet429: number[] = [];
const overload429: number[] = [];
const overloadOps: number[] = [];
const refusedPerBurst: number[] = [];
const post = (body: Record<string, unknown>, signal?: AbortSignal) =>
  fetch(`${small.baseUrl}/run`, {
    method: "POST",
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
for (let rep = 0; rep < BURST_REPS; rep++) {
  // Quiet baseline: every slot and queue place held by slow runs, then one refused caller at a time.
  const hold = new AbortController();
  const holders = Array.from({ length: 40 }, (_, i) =>
    post(
      { user_id: `h${i % 4}`, session_id: `h${rep}-${i}`, user_prompt: "#scenario=slow" },
      hold.signal,
    ),
  );
  const heads = await Promise.all(holders);
  await sleep(2000); // the 20 admitted providers start (node processes) before the quiet 429s
  for (let i = 0; i < 50; i++) {
    const r = await sseRun(small.baseUrl, { user_id: "late", user_prompt: "x" });
    if (r.status !== 429) throw new Error(`expected 429, got ${r.status}`);
    quiet429.push(r.headersMs);
  }
  hold.abort();
  await Promise.all(heads.map((h) => h.body?.cancel().catch(() => {})));
  for (let i = 0; i < 200 && (await activeRuns(small)) > 0; i++) await sleep(50);
  // The floor: the same flood against a server that does nothing but answer 429.
  const floor = await burst(bareUrl, `f${rep}`);
  bareFlood429.push(...floor.map((x) => x.headersMs));
  // Overload: the burst against 40 places.
  const b = await probing(small, () => burst(small.baseUrl, `o${rep}`));
  const refused = b.value.filter((x) => x.status === 429);
  refusedPerBurst.push(refused.length);
  overload429.push(...refused.map((x) => x.headersMs));
  overloadOps.push(...b.ops);
}
await small.stop();
bare429.stop();

async function activeRuns(r: RunnerProcess): Promise<number> {
  const j = (await (await fetch(`${r.baseUrl}/ops/concurrency`)).json()) as {
    active_total?: number;
    pending_total?: number;
  };
  return (j.active_total ?? 0) + (j.pending_total ?? 0);
}

const t = stats(burstTtfb);
const a = stats(aloneTtfb);
const io = stats(idleOps);
const bo = stats(burstOps);
const q = stats(quiet429);
const o = stats(overload429);
const f = stats(bareFlood429);
const x = (n: number, d: Stats) => `${(n / d.median).toFixed(1)}×`;
await writeResult(
  "burst",
  {
    runs: RUNS,
    users: USERS,
    burst_duration_s: stats(burstSecs),
    // spawn() forks the runner: the bigger its RSS, the longer each fork blocks its loop.
    server_peak_rss_mb_during_burst: stats(burstPeakRss),
    // CPU cores used during each burst: the runner's main thread, its providers, this client.
    cores_during_burst: burstCores,
    server_rss_mb_idle: idleRssMb,
    first_byte_ms: { burst: t, alone_idle: a },
    ops_concurrency_ms: { idle: io, during_burst: bo, during_overload: stats(overloadOps) },
    reject_429_ms: { overloaded: o, quiet_full_queue: q, bare_node_same_flood: f },
    refused_per_overload_burst: stats(refusedPerBurst),
  },
  [
    {
      metric: "burst of 200 runs: time to first byte p99 (p50)",
      target: "< 500 ms",
      measured: `${t.p99.toFixed(0)} ms (p50 ${t.median.toFixed(0)} ms); ${x(t.p99, a)} / ${x(t.median, a)} one run alone (${a.median.toFixed(1)} ms)`,
      pass: t.p99 < 500,
    },
    {
      metric: "/ops/concurrency during the burst p99 (p50)",
      target: "< 50 ms",
      measured: `${bo.p99.toFixed(1)} ms (p50 ${bo.median.toFixed(1)} ms); ${x(bo.p99, io)} / ${x(bo.median, io)} idle (${io.median.toFixed(1)} ms)`,
      pass: bo.p99 < 50,
    },
    {
      metric: "429 when overloaded (small queue) p99 (p50)",
      target: "< 20 ms",
      measured: `${o.p99.toFixed(1)} ms (p50 ${o.median.toFixed(1)} ms); bare node answering the same flood: ${f.p99.toFixed(1)} ms (p50 ${f.median.toFixed(1)} ms), ratio ${(o.p99 / f.p99).toFixed(2)} / ${(o.median / f.median).toFixed(2)}; a quiet 429 ${fmtRange(q, 1, " ms")}`,
      pass: o.p99 < 20,
    },
  ],
  BURST_REPS,
);
