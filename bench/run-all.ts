/**
 * `npm run bench [name...]`: the benchmarks in turn (each writes
 * bench/results/<name>.json), then bench/results/summary.md. Never part of `npm test`.
 */
import { readFile, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import path from "node:path";
import type { Target } from "./lib.js";
import { ROOT } from "./lib.js";

const ALL = ["stream-throughput", "run-overhead", "burst", "memory"];
const wanted = process.argv.slice(2);
for (const name of wanted.length > 0 ? wanted : ALL) {
  process.stdout.write(`\n== ${name}\n`);
  await import(`./${name}.js`);
}

const rows: string[] = [];
for (const name of ALL) {
  const text = await readFile(path.join(ROOT, "bench/results", `${name}.json`), "utf8").catch(
    () => null,
  );
  if (!text) continue;
  const r = JSON.parse(text) as { date: string; targets: Target[] };
  for (const t of r.targets)
    rows.push(
      `| ${name} | ${t.metric} | ${t.target} | ${t.measured} | ${t.pass ? "met" : "missed"} |`,
    );
}
const summary = `# Benchmark results

Machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, Node ${process.version}, ${new Date().toISOString()}.
Each figure is a median of several repetitions (see the JSON files for min, max and p99).

| bench | metric | target | measured | |
| --- | --- | --- | --- | --- |
${rows.join("\n")}
`;
await writeFile(path.join(ROOT, "bench/results/summary.md"), summary);
process.stdout.write(`\n${summary}`);
