import { readdirSync, readFileSync } from "node:fs";
import { RUN_ID_ENV } from "../../src/process/reap-orphans.js";
import { isAlive } from "./process-census.js";

/**
 * Live (non-zombie) processes whose environment carries one of `runIds` in
 * FERMILINK_RUN_ID: every provider and whatever it spawned, escapees from its
 * process group included.
 */
export function processesWithRunIds(runIds: ReadonlySet<string>): { pid: number; runId: string }[] {
  const found: { pid: number; runId: string }[] = [];
  const prefix = `${RUN_ID_ENV}=`;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let environ: string;
    try {
      environ = readFileSync(`/proc/${entry}/environ`, "utf8");
    } catch {
      continue; // Gone meanwhile, or not ours to read.
    }
    const runId = environ
      .split("\0")
      .find((e) => e.startsWith(prefix))
      ?.slice(prefix.length);
    if (runId !== undefined && runIds.has(runId) && isAlive(Number(entry))) {
      found.push({ pid: Number(entry), runId });
    }
  }
  return found;
}
