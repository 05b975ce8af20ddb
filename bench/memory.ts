/**
 * Memory (issue 8 §4), the runner in its own process (as `npm start` runs it:
 * the build in dist/), RSS from /proc/<pid>/status, heap from its /metrics):
 *  - a client pauses for 10 s in a 100,000-line run (the provider prints at
 *    full speed meanwhile; the run store is the paused client's buffer by
 *    design). Server RSS must grow by at most 8 MB and stop growing. Per face:
 *    a fresh runner whose client reads 50,000 events, then pauses (the
 *    issue's wording: growth over the pause); a fresh runner whose client
 *    pauses after the first event, so the whole run happens in the pause
 *    (growth from before the request); on that runner then one full-speed run
 *    of the same size (its growth reported beside), and a second paused run.
 *    Faces: SSE and Connect (HTTP/1.1) by default; `BENCH_FACES=sse,connect,grpc`.
 *  - server RSS per live run with 1,000 idle runs (a provider that prints a
 *    line and sleeps; limits raised; 100 user ids), against the idle server.
 */
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { RunService } from "../gen/fermilink/runner/v1/run_pb.js";
import {
  ROOT,
  type RunnerProcess,
  type ServerMemory,
  sleep,
  sseRun,
  startRunner,
  type Target,
  writeResult,
} from "./lib.js";

const PAUSE_MS = Number(process.env.BENCH_PAUSE_MS ?? 10_000);
const IDLE_RUNS = Number(process.env.BENCH_IDLE_RUNS ?? 1000);
const FACES = (process.env.BENCH_FACES ?? "sse,connect").split(",") as Face[];
const PROMPT = "#scenario=bench-100k";
const MB = 1024 * 1024;

type Face = "sse" | "connect" | "grpc";

/** Where a paused client stops reading: after `at` events, until `until` resolves; then it leaves. */
interface Pause {
  at: number;
  until: () => Promise<void>;
}

/**
 * One run of 100,000 lines on `face`, read in full; or, with `pause`, read
 * up to `pause.at` events, then nothing until the pause ends, then leave (what
 * is left to read then is not the question).
 */
async function runOn(r: RunnerProcess, face: Face, session: string, pause?: Pause) {
  const leave = new AbortController();
  if (face === "sse") {
    const res = sseRun(
      r.baseUrl,
      { session_id: session, user_prompt: PROMPT },
      pause
        ? {
            pauseAfterFrames: pause.at,
            pauseAfterFirst: async () => {
              await pause.until();
              leave.abort();
            },
            signal: leave.signal,
          }
        : {},
    );
    if (pause) await res.catch(() => {});
    else if (((await res).frames.get("agent") ?? 0) < 100_000)
      throw new Error("SSE run incomplete");
    return;
  }
  const transport =
    face === "connect"
      ? createConnectTransport({ baseUrl: r.baseUrl, httpVersion: "1.1" })
      : createGrpcTransport({ baseUrl: r.baseUrl });
  const it = createClient(RunService, transport)
    .run({ sessionId: session, userPrompt: PROMPT }, { signal: leave.signal })
    [Symbol.asyncIterator]();
  let n = 0;
  if (pause) {
    while (n < pause.at && !(await it.next()).done) n++;
    await pause.until();
    leave.abort();
    await it.return?.().catch(() => {});
    return;
  }
  while (!(await it.next()).done) n++;
  if (n < 100_000) throw new Error(`${face} run incomplete: ${n}`);
}

interface Growth {
  /** Max RSS over the start, MB. */
  growthMb: number;
  /** Max RSS over the first half's peak: "stops growing" when about 0. */
  lateGrowthMb: number;
  startMb: number;
  peakMb: number;
  samples: number;
}

/** RSS every 100 ms while `work` runs. */
async function sampleWhile(
  r: RunnerProcess,
  work: Promise<void>,
  start = r.rss(),
): Promise<Growth> {
  const samples: number[] = [];
  let done = false;
  const finished = work.then(() => {
    done = true;
  });
  while (!done) {
    samples.push(r.rss());
    await Promise.race([sleep(100), finished]);
  }
  await finished;
  const half = Math.floor(samples.length / 2);
  const firstHalfMax = Math.max(start, ...samples.slice(0, half));
  const max = Math.max(start, ...samples);
  return {
    growthMb: (max - start) / MB,
    lateGrowthMb: (max - firstHalfMax) / MB,
    startMb: start / MB,
    peakMb: max / MB,
    samples: samples.length,
  };
}

const toMb = (m: ServerMemory) =>
  Object.fromEntries(Object.entries(m).map(([k, v]) => [k, Number((v / MB).toFixed(1))]));

/**
 * A run whose client pauses after `at` events: RSS growth while the client is
 * paused. After the first event (`at` 1) all of the run happens in the pause,
 * so growth counts from before the request; in the middle, from the pause.
 */
async function pausedRun(r: RunnerProcess, face: Face, session: string, at = 1) {
  const before = await r.memory();
  let pauseStarted = 0;
  let memAtPauseEnd: ServerMemory | null = null;
  let pauseBegan: () => void = () => {};
  const began = new Promise<void>((resolve) => {
    pauseBegan = resolve;
  });
  let pauseDone: () => void = () => {};
  const pauseWindow = new Promise<void>((resolve) => {
    pauseDone = resolve;
  });
  const start = r.rss();
  const run = runOn(r, face, session, {
    at,
    until: async () => {
      pauseStarted = performance.now();
      pauseBegan();
      await sleep(PAUSE_MS);
      memAtPauseEnd = await r.memory();
      pauseDone();
    },
  });
  if (at > 1) {
    const ended = run.then(() => {
      throw new Error(`${face} run ended before its client read ${at} events`);
    });
    await Promise.race([began, ended]);
  }
  const growth = await sampleWhile(r, pauseWindow, at > 1 ? r.rss() : start);
  await run;
  return {
    growth,
    paused_after_events: at,
    pause_ms: Math.round(performance.now() - pauseStarted),
    server_memory_mb_before: toMb(before),
    server_memory_mb_at_pause_end: memAtPauseEnd ? toMb(memAtPauseEnd) : null,
  };
}

const paused: Record<string, unknown> = {};
const targets: Target[] = [];
const within = (g: Growth) => g.growthMb <= 8 && g.lateGrowthMb <= 1;
/** The issue's own wording: the client pauses in the middle of the run. */
const MIDDLE = 50_000;
for (const face of FACES) {
  // A fresh runner whose client reads half the first run, then pauses: growth over the pause.
  const m = await startRunner();
  const middle = await pausedRun(m, face, `middle-${face}`, MIDDLE);
  await m.stop();
  const r = await startRunner();
  // The first big run of a fresh runner, paused after its first event, so all of it happens
  // in the pause: the strictest reading (the young generation is made resident at start-up for this).
  const fresh = await pausedRun(r, face, `fresh-${face}`);
  await sleep(500);
  // Baseline: one full-speed run (loads the rest of the code, grows heap and SQLite cache).
  const fullSpeed = await sampleWhile(r, runOn(r, face, `warm-${face}`));
  await sleep(500);
  const steady = await pausedRun(r, face, `paused-${face}`);
  await r.stop();
  paused[face] = {
    fresh_runner_paused_in_the_middle: middle,
    fresh_runner_paused_run: fresh,
    full_speed_run: fullSpeed,
    paused_run: steady,
  };
  const g = steady.growth;
  const f = fresh.growth;
  const h = middle.growth;
  const late = (x: Growth) => `second half of the pause +${x.lateGrowthMb.toFixed(1)} MB`;
  targets.push(
    {
      metric: `${face} client paused ${PAUSE_MS / 1000} s after ${MIDDLE.toLocaleString("en")} events, fresh runner: server RSS growth over the pause`,
      target: "<= 8 MB, and stops growing",
      measured: `${h.growthMb.toFixed(1)} MB (${late(h)})`,
      pass: within(h),
    },
    {
      metric: `${face} client paused ${PAUSE_MS / 1000} s after the first event: server RSS growth from the request`,
      target: "<= 8 MB, and stops growing",
      measured: `${g.growthMb.toFixed(1)} MB (${late(g)}; the full-speed run before it: +${fullSpeed.growthMb.toFixed(1)} MB)`,
      pass: within(g),
    },
    {
      metric: `${face} client paused after the first event of a fresh runner's first run: server RSS growth from the request`,
      target: "<= 8 MB, and stops growing",
      measured: `${f.growthMb.toFixed(1)} MB (${late(f)})`,
      pass: within(f),
    },
  );
  process.stdout.write(`${face}: ${JSON.stringify(paused[face])}\n`);
}

// 1,000 idle runs: a provider that prints one line and sleeps (a shell script, so the
// machine's memory goes to the runner under test, not to 1,000 node processes).
const idle = await startRunner({
  FERMILINK_CODEX_BIN: path.join(ROOT, "bench/fixtures/idle-provider.sh"),
  FERMILINK_RUNNER_GLOBAL_CONCURRENT_RUNS: String(IDLE_RUNS),
  FERMILINK_RUNNER_PER_USER_CONCURRENT_RUNS: "10",
  FERMILINK_RUNNER_SSE_HEARTBEAT_SECONDS: "0",
});
// Warm up with a few runs, so the baseline has the run code loaded.
await Promise.all(
  [0, 1, 2].map(async (i) => {
    const abort = new AbortController();
    const res = await fetch(`${idle.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session_id: `warm-${i}`, user_prompt: "wait" }),
      signal: abort.signal,
    });
    await (res.body as ReadableStream<Uint8Array>).getReader().read();
    abort.abort();
  }),
);
await sleep(2000);
const idleBefore = await idle.memory();
const rssBefore = idle.rss();
const t = performance.now();
const streams = await Promise.all(
  Array.from({ length: IDLE_RUNS }, async (_, i) => {
    const abort = new AbortController();
    const res = await fetch(`${idle.baseUrl}/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        user_id: `u${i % 100}`,
        session_id: `idle-${i}`,
        user_prompt: "wait",
      }),
      signal: abort.signal,
    });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    // The first frame is `meta`; wait for the provider's line too, so every run is live.
    let text = "";
    while (!text.includes("event: agent")) {
      const chunk = await reader.read();
      if (chunk.done) throw new Error("idle run ended");
      text += new TextDecoder().decode(chunk.value);
    }
    return abort;
  }),
);
const startSecs = (performance.now() - t) / 1000;
// Heap used counts garbage until V8 collects it: the least of a few samples is nearer the live size.
let idleAfter = await idle.memory();
for (let i = 0; i < 8; i++) {
  await sleep(500);
  const m = await idle.memory();
  if (m.heapUsed < idleAfter.heapUsed) idleAfter = m;
}
const rssAfter = idle.rss();
for (const s of streams) s.abort();
await idle.stop();
const perRunKb = (rssAfter - rssBefore) / 1024 / IDLE_RUNS;
const heapPerRunKb = (idleAfter.heapUsed - idleBefore.heapUsed) / 1024 / IDLE_RUNS;

await writeResult(
  "memory",
  {
    pause_ms: PAUSE_MS,
    paused,
    idle_runs: {
      runs: IDLE_RUNS,
      seconds_to_start_all: startSecs,
      rss_mb_before: rssBefore / MB,
      rss_mb_after: rssAfter / MB,
      rss_kb_per_run: perRunKb,
      heap_used_kb_per_run: heapPerRunKb,
      server_memory_mb_before: toMb(idleBefore),
      server_memory_mb_after: toMb(idleAfter),
    },
  },
  [
    ...targets,
    {
      metric: `server RSS per live run (${IDLE_RUNS} idle runs)`,
      target: "reported",
      measured: `${perRunKb.toFixed(0)} KB/run, heap ${heapPerRunKb.toFixed(0)} KB/run (RSS ${(rssBefore / MB).toFixed(0)} → ${(rssAfter / MB).toFixed(0)} MB)`,
      pass: true,
    },
  ],
  1,
);
