/**
 * Per-run overhead (issue 8 §2): a trivial run (the provider prints one line
 * and exits), from the request to the `runner.exit` frame, for a new session
 * and for a reused one, against the same provider started from node exactly
 * as the runner starts it (same argv, env, cwd, process group, nice; spawn to
 * exit). The difference is what the runner adds. The SSE reader also notes
 * when `meta` arrived, to split the overhead into before the spawn
 * (validation, admission, workspace) and after it.
 */
import {
  fmtRange,
  readInvocation,
  type SseRun,
  spawnLikeRunner,
  sseRun,
  startRunner,
  stats,
  writeResult,
} from "./lib.js";

// 50 pairs: the box is noisy, and a median of 30 still moved by 10-20 ms from one invocation to the next.
const RUNS = Math.max(1, Number(process.env.BENCH_RUNS ?? 50));
const PROMPT = "#scenario=bench-one-line";

async function run(baseUrl: string, session: string): Promise<SseRun> {
  const r = await sseRun(baseUrl, { session_id: session, user_prompt: PROMPT });
  if (r.exitMs < 0 || !r.exit.includes('"completed"')) throw new Error(`run failed: ${r.exit}`);
  return r;
}

const runner = await startRunner();
// Warm up both paths (module caches, the pristine git repo, prepared statements), and learn
// how the runner starts the provider.
await run(runner.baseUrl, "warm");
await run(runner.baseUrl, "same");
const inv = await readInvocation(runner, "warm");
await spawnLikeRunner(inv, PROMPT);

const alone: number[] = [];
const aloneSpawnCall: number[] = [];
const fresh: SseRun[] = [];
const reused: SseRun[] = [];
for (let i = 0; i < RUNS; i++) {
  const one = await spawnLikeRunner(inv, PROMPT);
  alone.push(one.ms);
  aloneSpawnCall.push(one.spawnMs);
  fresh.push(await run(runner.baseUrl, `new-${i}`));
  reused.push(await run(runner.baseUrl, "same"));
}
await runner.stop();

const a = stats(alone);
// Paired differences: each run against the provider-alone sample taken just before it.
const over = (rs: SseRun[]) => stats(rs.map((r, i) => r.exitMs - (alone[i] ?? Number.NaN)));
const describe = (rs: SseRun[]) => ({
  to_exit_ms: stats(rs.map((r) => r.exitMs)),
  to_meta_ms: stats(rs.map((r) => r.metaMs)),
  meta_to_exit_ms: stats(rs.map((r) => r.exitMs - r.metaMs)),
  over_alone_ms: over(rs),
});
const target = (metric: string, rs: SseRun[]) => {
  const exit = stats(rs.map((r) => r.exitMs));
  const extra = exit.median - a.median;
  return {
    metric,
    target: "<= 15 ms",
    measured: `${extra.toFixed(1)} ms (${exit.median.toFixed(1)} vs ${a.median.toFixed(1)} ms; paired ${fmtRange(over(rs), 1, " ms")}; meta after ${stats(rs.map((r) => r.metaMs)).median.toFixed(1)} ms)`,
    pass: extra <= 15,
  };
};
await writeResult(
  "run-overhead",
  {
    runs: RUNS,
    provider_alone_ms: a,
    // How long spawn() blocked the bench process (a node process of about the runner's size).
    provider_alone_spawn_call_ms: stats(aloneSpawnCall),
    bench_rss_mb: process.memoryUsage().rss / 1024 / 1024,
    new_session: describe(fresh),
    reused_session: describe(reused),
  },
  [
    target("trivial run to exit, new session, over provider alone", fresh),
    target("trivial run to exit, reused session, over provider alone", reused),
  ],
  RUNS,
);
