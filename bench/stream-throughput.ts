/**
 * Stream throughput (issue 8 §1): a provider printing 100,000 lines of 200
 * bytes as fast as it can, received by a client on the SSE face (frames
 * parsed), the Connect protocol (HTTP/1.1) and gRPC (h2c), each as a ratio
 * against a baseline measured in the same repetition:
 *  - the provider alone, started from node exactly as the runner starts it
 *    (same argv, env, cwd, nice), stdout piped and its lines counted: the
 *    limit for any runner;
 *  - a bare connect-node server (bench/fixtures/bare-connect-server.ts)
 *    streaming 100,000 AgentEvent messages of 200-byte lines: the limit for
 *    the Connect face;
 *  - the same bare server sending what the runner sends for each line (run
 *    id, time, raw line and its typed reading: 427 bytes, not 232): reported
 *    beside the target, it separates the runner's own cost from what the
 *    richer message costs the client.
 * Server, bare server and provider each run in their own process; the cores
 * each used are recorded, to show which one was the bottleneck. Every
 * workload runs once untimed before the repetitions (JIT warm-up on both sides).
 */
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { RunService } from "../gen/fermilink/runner/v1/run_pb.js";
import {
  type CoresUsed,
  fmtRange,
  measureCores,
  perSecond,
  REPS,
  ratios,
  readInvocation,
  type Stats,
  spawnLikeRunner,
  sseRun,
  startFixtureServer,
  startRunner,
  stats,
  writeResult,
} from "./lib.js";

const LINES = 100_000;
const PROMPT = "#scenario=bench-100k";

interface Sample {
  eps: number;
  mbps: number;
  cores: CoresUsed;
}

/** Lines/s and MB/s of the provider alone, read by this process through a pipe. */
async function providerAlone(inv: Awaited<ReturnType<typeof readInvocation>>): Promise<Sample> {
  let lines = 0;
  let bytes = 0;
  const m = await measureCores(null, () =>
    spawnLikeRunner(inv, PROMPT, (chunk) => {
      bytes += chunk.length;
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
    }),
  );
  if (lines < LINES) throw new Error(`provider alone printed ${lines} lines`);
  return { eps: lines / m.secs, mbps: bytes / 1e6 / m.secs, cores: m.cores };
}

/** Events/s (every frame) and MB/s (the provider's lines) on the SSE face. */
async function sse(baseUrl: string, pid: number, session: string): Promise<Sample> {
  const m = await measureCores(pid, () =>
    sseRun(baseUrl, { session_id: session, user_prompt: PROMPT }),
  );
  const agent = m.value.frames.get("agent") ?? 0;
  if (agent < LINES) throw new Error(`SSE: only ${agent} agent frames`);
  const frames = [...m.value.frames.values()].reduce((a, b) => a + b, 0);
  return { eps: frames / m.secs, mbps: m.value.agentBytes / 1e6 / m.secs, cores: m.cores };
}

/** Events/s and MB/s (the agent lines' raw bytes) of one Run call. */
async function connectFace(transport: Transport, pid: number, session: string): Promise<Sample> {
  const client = createClient(RunService, transport);
  const m = await measureCores(pid, async () => {
    let events = 0;
    let bytes = 0;
    for await (const ev of client.run({ sessionId: session, userPrompt: PROMPT })) {
      events++;
      if (ev.event.case === "agent") bytes += ev.event.value.raw.length;
    }
    return { events, bytes };
  });
  if (m.value.events < LINES) throw new Error(`only ${m.value.events} events`);
  return { eps: m.value.events / m.secs, mbps: m.value.bytes / 1e6 / m.secs, cores: m.cores };
}

interface Bare {
  h1: Transport;
  h2: Transport;
  pid: number;
  stop(): void;
}

async function startBare(shape: "line" | "runner"): Promise<Bare> {
  const bare = await startFixtureServer<{ h1: number; h2: number }>(
    "bench/fixtures/bare-connect-server.ts",
    { BARE_EVENTS: String(LINES), BARE_SHAPE: shape },
  );
  return {
    h1: createConnectTransport({ baseUrl: `http://127.0.0.1:${bare.info.h1}`, httpVersion: "1.1" }),
    h2: createGrpcTransport({ baseUrl: `http://127.0.0.1:${bare.info.h2}` }),
    pid: bare.pid,
    stop: bare.stop,
  };
}

const runner = await startRunner();
const bare = await startBare("line");
const shaped = await startBare("runner");
// Learn how the runner starts the provider (for the baseline).
await sseRun(runner.baseUrl, { session_id: "warm", user_prompt: "#scenario=bench-one-line" });
const inv = await readInvocation(runner, "warm");
const h1 = createConnectTransport({ baseUrl: runner.baseUrl, httpVersion: "1.1" });
const h2 = createGrpcTransport({ baseUrl: runner.baseUrl });
// One untimed pass of every workload first: the code of each face (server and this client)
// is compiled by then on both sides, so the first repetition is not a measure of V8's JIT.
await providerAlone(inv);
await sse(runner.baseUrl, runner.pid, "warm-sse");
for (const b of [bare, shaped]) for (const t of [b.h1, b.h2]) await connectFace(t, b.pid, "b");
for (const t of [h1, h2]) await connectFace(t, runner.pid, "warm-connect");
type Series =
  | "alone"
  | "sse"
  | "connect"
  | "grpc"
  | "bareConnect"
  | "bareGrpc"
  | "shapedConnect"
  | "shapedGrpc";
const series: Record<Series, Sample[]> = {
  alone: [],
  sse: [],
  connect: [],
  grpc: [],
  bareConnect: [],
  bareGrpc: [],
  shapedConnect: [],
  shapedGrpc: [],
};
for (let rep = 0; rep < REPS; rep++) {
  series.alone.push(await providerAlone(inv));
  series.sse.push(await sse(runner.baseUrl, runner.pid, `sse-${rep}`));
  series.bareConnect.push(await connectFace(bare.h1, bare.pid, "b"));
  series.connect.push(await connectFace(h1, runner.pid, `c-${rep}`));
  series.shapedConnect.push(await connectFace(shaped.h1, shaped.pid, "b"));
  series.bareGrpc.push(await connectFace(bare.h2, bare.pid, "b"));
  series.grpc.push(await connectFace(h2, runner.pid, `g-${rep}`));
  series.shapedGrpc.push(await connectFace(shaped.h2, shaped.pid, "b"));
  process.stdout.write(
    `rep ${rep + 1}/${REPS}: ${Object.entries(series)
      .map(([k, v]) => `${k} ${perSecond(v.at(-1)?.eps ?? 0)}`)
      .join(", ")}\n`,
  );
}
bare.stop();
shaped.stop();
await runner.stop();

const eps = (xs: Sample[]) => xs.map((x) => x.eps);
const describe = (xs: Sample[]) => {
  const median = (f: (s: Sample) => number) => Number(stats(xs.map(f)).median.toFixed(2));
  return {
    events_per_s: stats(eps(xs)),
    mb_per_s: stats(xs.map((x) => x.mbps)),
    // CPU per event is what other work on the box does not change (rates it does).
    server_cpu_us_per_event: stats(xs.map((x) => (x.cores.server / x.eps) * 1e6)),
    provider_cpu_us_per_line: stats(xs.map((x) => (x.cores.providers / x.eps) * 1e6)),
    cores_median: {
      server: median((s) => s.cores.server),
      providers: median((s) => s.cores.providers),
      client: median((s) => s.cores.client),
      server_waiting_for_cpu: median((s) => s.cores.serverWaitingForCpu),
      client_waiting_for_cpu: median((s) => s.cores.clientWaitingForCpu),
    },
  };
};
const sseRatio = ratios(eps(series.sse), eps(series.alone));
const connectRatio = ratios(eps(series.connect), eps(series.bareConnect));
const grpcRatio = ratios(eps(series.grpc), eps(series.bareGrpc));
const shapedConnectRatio = ratios(eps(series.connect), eps(series.shapedConnect));
const shapedGrpcRatio = ratios(eps(series.grpc), eps(series.shapedGrpc));
const vs = (a: Sample[], b: Sample[]) =>
  `${perSecond(stats(eps(a)).median)} vs ${perSecond(stats(eps(b)).median)}`;
const target = (metric: string, r: Stats, min: number, a: Sample[], b: Sample[]) => ({
  metric,
  target: `>= ${min.toFixed(2)}`,
  measured: `${fmtRange(r)}; ${vs(a, b)}`,
  pass: r.median >= min,
});
await writeResult(
  "stream-throughput",
  {
    lines: LINES,
    line_bytes: 200,
    // cores: CPU seconds per wall second of the server (bare or runner), of the providers
    // (the runner's reaped children) and of this client, over each measurement.
    provider_alone: describe(series.alone),
    sse: describe(series.sse),
    connect: describe(series.connect),
    grpc: describe(series.grpc),
    bare_connect: describe(series.bareConnect),
    bare_grpc: describe(series.bareGrpc),
    // The bare server sending the runner's 427-byte messages instead of 232-byte ones.
    bare_runner_shaped_connect: describe(series.shapedConnect),
    bare_runner_shaped_grpc: describe(series.shapedGrpc),
    ratios: {
      sse_vs_alone: sseRatio,
      connect_vs_bare: connectRatio,
      grpc_vs_bare: grpcRatio,
      connect_vs_bare_runner_shaped: shapedConnectRatio,
      grpc_vs_bare_runner_shaped: shapedGrpcRatio,
    },
  },
  [
    target("SSE face vs provider alone (events/s)", sseRatio, 0.5, series.sse, series.alone),
    target(
      "Connect protocol (HTTP/1.1) vs bare connect-node",
      connectRatio,
      0.8,
      series.connect,
      series.bareConnect,
    ),
    target("gRPC (h2c) vs bare connect-node", grpcRatio, 0.8, series.grpc, series.bareGrpc),
    {
      metric: "Connect / gRPC vs bare connect-node sending the runner's own messages",
      target: "reported",
      measured: `${fmtRange(shapedConnectRatio)} / ${fmtRange(shapedGrpcRatio)}`,
      pass: true,
    },
    {
      metric: "server CPU per event (µs): SSE / Connect / gRPC; bare Connect / gRPC",
      target: "reported",
      measured: [series.sse, series.connect, series.grpc, series.bareConnect, series.bareGrpc]
        .map((xs) => stats(xs.map((x) => (x.cores.server / x.eps) * 1e6)).median.toFixed(1))
        .join(" / ")
        .replace(/ \/ (?=[^/]*\/[^/]*$)/, "; "),
      pass: true,
    },
  ],
);
