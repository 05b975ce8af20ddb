import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FsBatchRunner } from "../../../src/workspace/fs-batch/fs-batch.js";

const FS_BATCH_TS = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../../src/workspace/fs-batch/fs-batch.ts",
);

/** Run `body` (ESM, `runner` an FsBatchRunner) in a node process; its exit once it ended, or null after 15 s. */
async function exitOfProcess(body: string): Promise<number | null> {
  const script = `import { FsBatchRunner } from ${JSON.stringify(FS_BATCH_TS)};
    const runner = new FsBatchRunner();
    ${body}`;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    stdio: ["ignore", "inherit", "inherit"],
  });
  const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  const [code] = (await once(child, "exit")) as [number | null];
  clearTimeout(killer);
  return code;
}

let root: string;
let runner: FsBatchRunner;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "flr-fsb-"));
  runner = new FsBatchRunner();
});
afterEach(async () => {
  await runner.close();
  await rm(root, { recursive: true, force: true });
});

describe("FsBatchRunner", () => {
  it("runs a batch in order on its worker: directories, files with flag and mode, links", async () => {
    const d = path.join(root, "a", "b");
    const result = await runner.run([
      { op: "mkdir", path: d, recursive: true },
      { op: "write", path: path.join(d, "f.txt"), content: "text" },
      { op: "write", path: path.join(d, "bin"), content: new Uint8Array([1, 2]), mode: 0o600 },
      { op: "link", path: path.join(d, "alias"), target: "f.txt", copyFrom: path.join(d, "f.txt") },
    ]);
    expect(result).toEqual({ failedAt: -1, code: "", message: "" });
    expect(await readFile(path.join(d, "f.txt"), "utf8")).toBe("text");
    expect([...(await readFile(path.join(d, "bin")))]).toEqual([1, 2]);
    expect((await stat(path.join(d, "bin"))).mode & 0o777).toBe(0o600);
    expect(await readlink(path.join(d, "alias"))).toBe("f.txt");
  });

  it("never copies over what is at a link's path already: a planted link is not written through", async () => {
    const outside = path.join(root, "outside.txt");
    await writeFile(outside, "not the runner's");
    await writeFile(path.join(root, "AGENTS.md"), "policy");
    const alias = path.join(root, "CLAUDE.md");
    await symlink(outside, alias);
    const result = await runner.run([
      { op: "link", path: alias, target: "AGENTS.md", copyFrom: path.join(root, "AGENTS.md") },
    ]);
    expect(result).toMatchObject({ failedAt: 0, code: "EEXIST" });
    expect(await readFile(outside, "utf8")).toBe("not the runner's");
  });

  it("stops at the first failing op and says which one, with its error code", async () => {
    const f = path.join(root, "f");
    const result = await runner.run([
      { op: "write", path: f, content: "1" },
      { op: "write", path: f, content: "2", flag: "wx" },
      { op: "mkdir", path: path.join(root, "never") },
    ]);
    expect(result.failedAt).toBe(1);
    expect(result.code).toBe("EEXIST");
    expect(result.message).toContain(f);
    expect(await readFile(f, "utf8")).toBe("1");
    expect(existsSync(path.join(root, "never"))).toBe(false);
  });

  it("starts its worker ahead of any batch when warmed", async () => {
    expect(runner.running).toBe(false);
    await runner.warm();
    expect(runner.running).toBe(true);
    const r = await runner.run([{ op: "mkdir", path: path.join(root, "d") }]);
    expect(r.failedAt).toBe(-1);
  });

  it("fails the batches of a worker that stopped, and starts a new one for the next batch", async () => {
    const many = Array.from({ length: 2000 }, (_, i) => ({
      op: "mkdir" as const,
      path: path.join(root, `d${i}`),
    }));
    const running = runner.run(many);
    await runner.close();
    await expect(running).rejects.toThrow(/file-system worker stopped/);
    const again = await runner.run([{ op: "mkdir", path: path.join(root, "after") }]);
    expect(again.failedAt).toBe(-1);
    expect(existsSync(path.join(root, "after"))).toBe(true);
  });

  it("writes a registered tree under any new directory, also after its worker restarted", async () => {
    runner.defineTree("t", [
      { op: "mkdir", path: "" },
      { op: "mkdir", path: "sub" },
      { op: "write", path: "sub/f.txt", content: "tree" },
      { op: "write", path: "key", content: new Uint8Array([7]), mode: 0o600 },
    ]);
    const a = path.join(root, "a");
    expect((await runner.run([{ op: "stamp", tree: "t", at: a }])).failedAt).toBe(-1);
    expect(await readFile(path.join(a, "sub", "f.txt"), "utf8")).toBe("tree");
    expect((await stat(path.join(a, "key"))).mode & 0o777).toBe(0o600);
    // The stamp's directory must be new: a tree never writes into an existing one.
    expect(await runner.run([{ op: "stamp", tree: "t", at: a }])).toMatchObject({
      failedAt: 0,
      code: "EEXIST",
    });
    await runner.close();
    const b = path.join(root, "b");
    expect((await runner.run([{ op: "stamp", tree: "t", at: b }])).failedAt).toBe(-1);
    expect(await readFile(path.join(b, "sub", "f.txt"), "utf8")).toBe("tree");
    expect(
      await runner.run([{ op: "stamp", tree: "nope", at: path.join(root, "c") }]),
    ).toMatchObject({ failedAt: 0, message: "unknown tree nope" });
  });

  it("keeps the process alive while a batch is in flight, and never once its worker is idle", async () => {
    const file = path.join(root, "written.txt");
    // Not awaited: nothing else holds the process, yet the batch is done before it exits.
    const inFlight = `void runner.run([{ op: "write", path: ${JSON.stringify(file)}, content: "done" }]);`;
    expect(await exitOfProcess(inFlight)).toBe(0);
    expect(await readFile(file, "utf8")).toBe("done");
    // A worker left idle (a runner stopped in-process, without closing the shared worker): the
    // process ends by itself, not at the 15 s kill (exit null).
    expect(await exitOfProcess("await runner.warm();")).toBe(0);
  }, 40_000);
});
