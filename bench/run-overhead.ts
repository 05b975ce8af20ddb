/**
 * Per-run overhead (issue 8 §2): a trivial run (the provider prints one line
 * and exits), from request to exit event, for a new session and for a reused
 * one, against the same provider spawned from node (spawn to exit).
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { FAKE_AGENT, startRunner, stats, timed, writeResult } from "./lib.js";

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const PROMPT = "#scenario=bench-one-line";

async function providerAlone(cwd: string): Promise<number> {
  return timed(
    () =>
      new Promise<void>((resolve) => {
        const child = spawn(process.execPath, [FAKE_AGENT, "exec", "--json", PROMPT], {
          cwd,
          stdio: ["ignore", "pipe", "pipe"],
        });
        child.stdout.resume();
        child.stderr.resume();
        child.once("close", () => resolve());
      }),
  );
}

async function runToExit(baseUrl: string, session: string): Promise<number> {
  return timed(async () => {
    const res = await fetch(`${baseUrl}/run`, {
      method: "POST",
      body: JSON.stringify({ session_id: session, user_prompt: PROMPT }),
    });
    const text = await res.text();
    if (!text.includes("runner.exit")) throw new Error("no exit event");
  });
}

const runner = await startRunner();
const cwd = await mkdtemp(path.join(tmpdir(), "flr-bench-alone-"));
const alone: number[] = [];
const fresh: number[] = [];
const reused: number[] = [];
// Warm up both paths once (module caches, the pristine git repo).
await providerAlone(cwd);
await runToExit(runner.baseUrl, "warm");
for (let i = 0; i < RUNS; i++) {
  alone.push(await providerAlone(cwd));
  fresh.push(await runToExit(runner.baseUrl, `new-${i}`));
  reused.push(await runToExit(runner.baseUrl, "same"));
}
await runner.stop();
await rm(cwd, { recursive: true, force: true });

const a = stats(alone).median;
const newExtra = stats(fresh).median - a;
const reusedExtra = stats(reused).median - a;
await writeResult(
  "run-overhead",
  {
    provider_alone_ms: stats(alone),
    new_session_ms: stats(fresh),
    reused_session_ms: stats(reused),
  },
  [
    {
      metric: "trivial run, new session, over provider alone",
      target: "<= 15 ms",
      measured: `${newExtra.toFixed(1)} ms (${stats(fresh).median.toFixed(1)} vs ${a.toFixed(1)} ms)`,
      pass: newExtra <= 15,
    },
    {
      metric: "trivial run, reused session, over provider alone",
      target: "<= 15 ms",
      measured: `${reusedExtra.toFixed(1)} ms (${stats(reused).median.toFixed(1)} vs ${a.toFixed(1)} ms)`,
      pass: reusedExtra <= 15,
    },
  ],
);
