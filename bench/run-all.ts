/**
 * `npm run bench [name...]`: the benchmarks in turn, each in its own node
 * process (so one bench's heap never skews the next one's baselines), each
 * writing bench/results/<name>.json; then bench/results/summary.md from
 * every results file present. Never part of `npm test`; nothing here asserts
 * a time: these are measurements.
 *
 * `npm run bench -- --summary-only` rewrites summary.md without running anything.
 *
 * Knobs: BENCH_REPS (repetitions; default 3, burst 2), BENCH_RUNS (run-overhead
 * runs, 50), BENCH_PAUSE_MS (10000), BENCH_IDLE_RUNS (1000), BENCH_FACES
 * (memory faces, "sse,connect"), BENCH_CPU_PROF=<dir> (profile the server),
 * BENCH_SERVER_FLAGS (more node flags for the server).
 */
import { spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import path from "node:path";
import { ROOT, type Target } from "./lib.js";

// The burst last: its 200 CLIs leave the machine loaded for a minute, which skews what follows.
const ALL = ["stream-throughput", "run-overhead", "memory", "burst"];
// `--summary-only`: rewrite summary.md from the results files, running nothing.
const summaryOnly = process.argv.includes("--summary-only");
const wanted = process.argv.slice(2).filter((a) => a !== "--summary-only");
const unknown = wanted.filter((w) => !ALL.includes(w));
if (unknown.length > 0) {
  process.stderr.write(`unknown bench: ${unknown.join(", ")} (known: ${ALL.join(", ")})\n`);
  process.exit(2);
}

const ran: { name: string; seconds: number; load: number; code: number | null }[] = [];
for (const name of summaryOnly ? [] : wanted.length > 0 ? wanted : ALL) {
  process.stdout.write(`\n== ${name}\n`);
  const load = loadavg()[0] ?? 0;
  const t = performance.now();
  const child = spawn(process.execPath, ["--import", "tsx", path.join("bench", `${name}.ts`)], {
    cwd: ROOT,
    stdio: "inherit",
  });
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  ran.push({ name, seconds: (performance.now() - t) / 1000, load, code });
  if (code !== 0) process.stderr.write(`${name} failed (exit ${code}); going on\n`);
}

interface Result {
  date: string;
  reps?: number;
  machine?: { loadavg_1m_at_end?: number };
  targets: Target[];
}
const rows: string[] = [];
const dates: string[] = [];
for (const name of ALL) {
  const text = await readFile(path.join(ROOT, "bench/results", `${name}.json`), "utf8").catch(
    () => null,
  );
  if (!text) continue;
  const r = JSON.parse(text) as Result;
  dates.push(
    `${name} ${r.date} (reps ${r.reps ?? "?"}, 1-min load at end ${r.machine?.loadavg_1m_at_end?.toFixed(1) ?? "?"})`,
  );
  for (const t of r.targets)
    rows.push(
      `| ${name} | ${t.metric} | ${t.target} | ${t.measured} | ${t.target === "reported" ? "" : t.pass ? "met" : "**missed**"} |`,
    );
}
const cpu = cpus();
const summary = `# Benchmark results

Machine: ${cpu[0]?.model ?? "?"}, ${cpu.length} cores, Node ${process.version}; summary written ${new Date().toISOString()}.
Each figure is the median over the repetitions, with (min–max) where there were several;
ratios are taken per repetition against a baseline measured in the same run. The JSON files
beside this one have every figure (min, max, p99, CPU cores used by server, providers and client).
Other work on the machine skews all of it: compare ratios, not absolute rates.

| bench | metric | target | measured | |
| --- | --- | --- | --- | --- |
${rows.join("\n")}

Results from:
${dates.map((d) => `- ${d}`).join("\n")}
${ran.length > 0 ? `\nThis invocation ran: ${ran.map((r) => `${r.name} ${r.seconds.toFixed(0)} s (load ${r.load.toFixed(1)} at start)${r.code === 0 ? "" : ` failed, exit ${r.code}`}`).join(", ")}.\n` : ""}`;
await writeFile(path.join(ROOT, "bench/results/summary.md"), summary);
process.stdout.write(`\n${summary}`);
process.exitCode = ran.some((r) => r.code !== 0) ? 1 : 0;
