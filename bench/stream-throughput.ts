/**
 * Stream throughput (issue 8 §1): a provider printing 100,000 lines of 200
 * bytes as fast as it can, received on the SSE face, the Connect protocol and
 * gRPC, each as a ratio against a baseline measured in the same run: the
 * provider piped straight into node (the limit for any runner) and a bare
 * connect-node server streaming as many 200-byte messages (the limit for the
 * Connect face). Server and baselines run in their own processes.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { RunService } from "../gen/fermilink/runner/v1/run_pb.js";
import { FAKE_AGENT, REPS, ROOT, startRunner, stats, writeResult } from "./lib.js";

const LINES = 100_000;
const PROMPT = "#scenario=bench-100k";

/** Lines/s of the provider alone, read by a node parent through a pipe. */
async function providerAlone(): Promise<number> {
  const cwd = await mkdtemp(path.join(tmpdir(), "flr-bench-alone-"));
  const t = performance.now();
  const child = spawn(process.execPath, [FAKE_AGENT, "exec", "--json", PROMPT], {
    cwd,
    stdio: ["ignore", "pipe", "ignore"],
  });
  let lines = 0;
  for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
  }
  const secs = (performance.now() - t) / 1000;
  await rm(cwd, { recursive: true, force: true });
  return lines / secs;
}

/** Events/s received on the SSE face, and MB/s. */
async function sse(baseUrl: string, session: string): Promise<{ eps: number; mbps: number }> {
  const t = performance.now();
  const res = await fetch(`${baseUrl}/run`, {
    method: "POST",
    body: JSON.stringify({ session_id: session, user_prompt: PROMPT }),
  });
  let bytes = 0;
  let frames = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    bytes += chunk.length;
    // "event: " starts every frame; count them on the bytes, without decoding.
    for (let i = 0; i < chunk.length; i++) if (chunk[i] === 0x0a && chunk[i + 1] === 0x65) frames++;
  }
  const secs = (performance.now() - t) / 1000;
  return { eps: frames / secs, mbps: bytes / 1e6 / secs };
}

async function connectFace(
  transport: Transport,
  session: string,
  bare = false,
): Promise<{ eps: number; mbps: number }> {
  const client = createClient(RunService, transport);
  const t = performance.now();
  let events = 0;
  let bytes = 0;
  for await (const ev of client.run({ sessionId: session, userPrompt: PROMPT })) {
    events++;
    if (ev.event.case === "agent") bytes += ev.event.value.raw.length;
  }
  const secs = (performance.now() - t) / 1000;
  if (!bare && events < LINES) throw new Error(`only ${events} events`);
  return { eps: events / secs, mbps: bytes / 1e6 / secs };
}

async function startBare(): Promise<{ h1: number; h2: number; stop(): void }> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "bench/fixtures/bare-connect-server.ts"],
    {
      cwd: ROOT,
      env: { ...process.env, BARE_EVENTS: String(LINES) },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const first = await new Promise<string>((resolve) =>
    child.stdout?.once("data", (d: Buffer) => resolve(d.toString())),
  );
  const ports = JSON.parse(first) as { h1: number; h2: number };
  return { ...ports, stop: () => child.kill("SIGTERM") };
}

const runner = await startRunner();
const bare = await startBare();
const alone: number[] = [];
const sseEps: number[] = [];
const sseMbps: number[] = [];
const cEps: number[] = [];
const gEps: number[] = [];
const bareC: number[] = [];
const bareG: number[] = [];
for (let rep = 0; rep < REPS; rep++) {
  alone.push(await providerAlone());
  const s = await sse(runner.baseUrl, `sse-${rep}`);
  sseEps.push(s.eps);
  sseMbps.push(s.mbps);
  cEps.push(
    (
      await connectFace(
        createConnectTransport({ baseUrl: runner.baseUrl, httpVersion: "1.1" }),
        `c-${rep}`,
      )
    ).eps,
  );
  gEps.push((await connectFace(createGrpcTransport({ baseUrl: runner.baseUrl }), `g-${rep}`)).eps);
  bareC.push(
    (
      await connectFace(
        createConnectTransport({ baseUrl: `http://127.0.0.1:${bare.h1}`, httpVersion: "1.1" }),
        "b",
        true,
      )
    ).eps,
  );
  bareG.push(
    (await connectFace(createGrpcTransport({ baseUrl: `http://127.0.0.1:${bare.h2}` }), "b", true))
      .eps,
  );
}
bare.stop();
await runner.stop();

const m = (xs: number[]) => stats(xs).median;
const sseRatio = m(sseEps) / m(alone);
const connectRatio = m(cEps) / m(bareC);
const grpcRatio = m(gEps) / m(bareG);
const fmt = (n: number) => `${Math.round(n).toLocaleString("en-US")}/s`;
await writeResult(
  "stream-throughput",
  {
    lines: LINES,
    provider_alone_lines_per_s: stats(alone),
    sse_events_per_s: stats(sseEps),
    sse_mb_per_s: stats(sseMbps),
    connect_events_per_s: stats(cEps),
    grpc_events_per_s: stats(gEps),
    bare_connect_events_per_s: stats(bareC),
    bare_grpc_events_per_s: stats(bareG),
  },
  [
    {
      metric: "SSE face vs provider alone",
      target: ">= 0.50",
      measured: `${sseRatio.toFixed(2)} (${fmt(m(sseEps))} vs ${fmt(m(alone))})`,
      pass: sseRatio >= 0.5,
    },
    {
      metric: "Connect protocol vs bare connect-node",
      target: ">= 0.80",
      measured: `${connectRatio.toFixed(2)} (${fmt(m(cEps))} vs ${fmt(m(bareC))})`,
      pass: connectRatio >= 0.8,
    },
    {
      metric: "gRPC vs bare connect-node (h2c)",
      target: ">= 0.80",
      measured: `${grpcRatio.toFixed(2)} (${fmt(m(gEps))} vs ${fmt(m(bareG))})`,
      pass: grpcRatio >= 0.8,
    },
  ],
);
