/** The provider alias of AGENTS.md in a repo that a process left over from an earlier run still writes. */
import { spawn } from "node:child_process";
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { syncAgentsFile } from "../../../src/workspace/agents-file.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "flr-agents-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("syncAgentsFile", () => {
  it("never writes through a link that a leftover agent keeps planting at the alias", async () => {
    const repo = path.join(dir, "repo");
    await mkdir(repo);
    // A file outside the repo that the runner may write (its own state, say): the agent's target.
    const outside = path.join(dir, "runner-state");
    await writeFile(outside, "runner state");
    const alias = path.join(repo, "CLAUDE.md");
    const wanted = Buffer.from("policy");
    // A process outliving its run that keeps making the alias a link out of the repo, whatever it was.
    const racer = spawn(
      process.execPath,
      [
        "-e",
        "const fs = require('node:fs'); const [t, p] = process.argv.slice(1); for (;;) { try { fs.unlinkSync(p); } catch {} try { fs.symlinkSync(t, p); } catch {} }",
        outside,
        alias,
      ],
      { stdio: "ignore" },
    );
    try {
      // The racer is running once its first link is there.
      while (!(await lstat(alias).catch(() => null))) await new Promise((r) => setTimeout(r, 5));
      for (let i = 0; i < 300; i++) {
        await syncAgentsFile(repo, wanted, "CLAUDE.md", ["CLAUDE.md", "GEMINI.md"]);
        expect(await readFile(outside, "utf8")).toBe("runner state");
      }
    } finally {
      racer.kill("SIGKILL");
    }
    await new Promise((r) => racer.once("exit", r));
    // Alone again, the alias is the template's link.
    await unlink(alias).catch(() => {});
    await syncAgentsFile(repo, wanted, "CLAUDE.md", ["CLAUDE.md", "GEMINI.md"]);
    expect((await lstat(alias)).isSymbolicLink()).toBe(true);
    expect(await readlink(alias)).toBe("AGENTS.md");
  });
});
