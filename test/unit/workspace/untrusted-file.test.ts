/** Files an agent could have replaced are read without ever blocking or following a link. */
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { manifestPath, readManifest } from "../../../src/packages/manifest.js";
import { readUntrustedFile, readUntrustedFileSync } from "../../../src/workspace/untrusted-file.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "flr-untrusted-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("reading an untrusted file", () => {
  it("reads a small regular file, and refuses a FIFO, a symlink, a device and a large file at once", async () => {
    const ok = path.join(dir, "ok.json");
    await writeFile(ok, '{"a":1}');
    const fifo = path.join(dir, "fifo");
    execFileSync("mkfifo", [fifo]);
    const link = path.join(dir, "link");
    await symlink(ok, link);
    const zero = path.join(dir, "zero");
    await symlink("/dev/zero", zero);
    const big = path.join(dir, "big");
    await writeFile(big, "x".repeat(2000));
    for (const read of [
      (f: string) => readUntrustedFileSync(f, 1000),
      (f: string) => readUntrustedFile(f, 1000),
    ]) {
      expect(await read(ok)).toBe('{"a":1}');
      // A FIFO with no writer: an ordinary open() would wait for one forever.
      expect(await read(fifo)).toBeNull();
      expect(await read(link)).toBeNull();
      expect(await read(zero)).toBeNull();
      expect(await read("/dev/zero")).toBeNull();
      expect(await read(big)).toBeNull();
      expect(await read(path.join(dir, "missing"))).toBeNull();
    }
  });

  it("gives a session whose package manifest was replaced by a FIFO or a link to /dev/zero no manifest", async () => {
    const session = path.join(dir, "s");
    await mkdir(session);
    execFileSync("mkfifo", [manifestPath(session)]);
    expect(await readManifest(session)).toBeNull();
    await rm(manifestPath(session));
    await symlink("/dev/zero", manifestPath(session));
    expect(await readManifest(session)).toBeNull();
  });

  it("keeps each name of a long manifest once (a Set, not a scan per name)", async () => {
    const session = path.join(dir, "s2");
    await mkdir(session);
    const names = Array.from({ length: 40_000 }, (_, i) => ({ name: `e${i % 30_000}` }));
    await writeFile(
      manifestPath(session),
      JSON.stringify({ package_id: "p", linked_entries: names }),
    );
    const m = await readManifest(session);
    expect(m?.entries.length).toBe(30_000);
  });
});
