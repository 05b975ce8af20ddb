import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Heartbeat } from "../../../src/workspace/heartbeat.js";

const HEARTBEAT_TS = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "..",
  "src",
  "workspace",
  "heartbeat.ts",
);

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "flr-beat-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const OLD = new Date(Date.now() - 3_600_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ageOf = async (p: string) => Date.now() - (await stat(p)).mtimeMs;

async function oldFile(name: string): Promise<string> {
  const p = path.join(root, name);
  await writeFile(p, "x");
  await utimes(p, OLD, OLD);
  return p;
}

describe("Heartbeat", () => {
  it("touches its paths on every beat while it has any, and stops once it has none", async () => {
    const beat = new Heartbeat(20);
    const a = await oldFile("a");
    const b = await oldFile("b");
    expect(beat.running).toBe(false);
    beat.add(a);
    beat.add(b);
    expect(beat.running).toBe(true);
    await sleep(100);
    expect(await ageOf(a)).toBeLessThan(1_000);
    expect(await ageOf(b)).toBeLessThan(1_000);
    // One path let go: only the other is touched still.
    beat.delete(a);
    expect(beat.has(a)).toBe(false);
    expect(beat.running).toBe(true);
    await utimes(a, OLD, OLD);
    await utimes(b, OLD, OLD);
    await sleep(100);
    expect(await ageOf(a)).toBeGreaterThan(3_000_000);
    expect(await ageOf(b)).toBeLessThan(1_000);
    beat.delete(b);
    expect(beat.running).toBe(false);
    await utimes(b, OLD, OLD);
    await sleep(100);
    expect(await ageOf(b)).toBeGreaterThan(3_000_000);
  });

  it("takes a path that vanished in its stride, and keeps it for when it is back", async () => {
    const beat = new Heartbeat(60_000);
    const kept = await oldFile("kept");
    const gone = path.join(root, "gone");
    beat.add(gone);
    beat.add(kept);
    await expect(beat.touch()).resolves.toBeUndefined();
    expect(await ageOf(kept)).toBeLessThan(1_000);
    // Forgotten only when its owner says so (a failure that passes must not end a live heartbeat).
    expect(beat.has(gone)).toBe(true);
    await oldFile("gone");
    await beat.touch();
    expect(await ageOf(gone)).toBeLessThan(1_000);
    beat.delete(gone);
    beat.delete(kept);
  });

  it("never keeps the process alive", async () => {
    // A process whose only work left is a heartbeat of a minute ends at once.
    const script = `import { Heartbeat } from ${JSON.stringify(HEARTBEAT_TS)};
      const beat = new Heartbeat(60_000);
      beat.add(${JSON.stringify(root)});
      process.stdout.write(String(beat.running));`;
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    let out = "";
    child.stdout.on("data", (b: Buffer) => {
      out += b.toString();
    });
    const started = Date.now();
    const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
    clearTimeout(killer);
    expect({ code, signal, out }).toEqual({ code: 0, signal: null, out: "true" });
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});
