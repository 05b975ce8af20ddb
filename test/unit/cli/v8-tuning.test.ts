import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** What a node process with `nodeArgs` prints when it runs `code` (an ES module, tsx loaded). */
async function outputOf(nodeArgs: string[], code: string): Promise<string> {
  const { stdout } = await run(
    process.execPath,
    [...nodeArgs, "--import", "tsx", "--input-type=module", "-e", code],
    { cwd: ROOT },
  );
  return stdout.trim();
}

/**
 * V8's cached-data tag hashes its version and every flag's value: two
 * processes with the same tag run V8 with the same flags.
 */
const PRINT_TAG = `process.stdout.write(String((await import("node:v8")).cachedDataVersionTag()));`;

describe("tuneV8", () => {
  it("sets the same V8 configuration as its flags given on the command line", async () => {
    const { TUNED_V8_FLAGS } = await import("../../../src/cli/v8-tuning.js");
    const [tuned, onCommandLine, plain] = await Promise.all([
      outputOf([], `(await import("./src/cli/v8-tuning.ts")).tuneV8(); ${PRINT_TAG}`),
      outputOf([...TUNED_V8_FLAGS], PRINT_TAG),
      outputOf([], PRINT_TAG),
    ]);
    expect(TUNED_V8_FLAGS).toContain("--no-allocation-site-pretenuring");
    expect(tuned).toBe(onCommandLine);
    expect(tuned).not.toBe(plain);
  });
});

describe("pretouchYoungGeneration", () => {
  it("makes both semi-spaces of the young generation resident at start-up", async () => {
    const { NODE_START_FLAGS } = await import("../../../src/cli/v8-tuning.js");
    const code = `
      const { getHeapSpaceStatistics } = await import("node:v8");
      const resident = () =>
        getHeapSpaceStatistics().find((s) => s.space_name === "new_space").physical_space_size / 1048576;
      const before = resident();
      const reported = (await import("./src/cli/v8-tuning.ts")).pretouchYoungGeneration();
      process.stdout.write(JSON.stringify({ before, after: resident(), reported }));`;
    const out = JSON.parse(await outputOf([...NODE_START_FLAGS], code)) as Record<string, number>;
    // Two semi-spaces of 16 MB: a fresh process has touched a few MB of them.
    expect(out.before).toBeLessThan(12);
    expect(out.after).toBeGreaterThanOrEqual(30);
    expect(out.reported).toBe(Math.round(out.after as number));
  });

  it("has its node flags on every command that starts the server", async () => {
    const { NODE_START_FLAGS } = await import("../../../src/cli/v8-tuning.js");
    const pkg = JSON.parse(await readFile(path.join(ROOT, "package.json"), "utf8")) as {
      scripts: Record<string, string>;
    };
    const bin = await readFile(path.join(ROOT, "bin/fermilink-runner.mjs"), "utf8");
    const launcher = await import("../../../src/cli/launcher.js");
    expect(NODE_START_FLAGS.length).toBeGreaterThan(0);
    for (const flag of NODE_START_FLAGS) {
      // `exec`: the shell npm runs the script in becomes the server, so npm's SIGTERM reaches it.
      expect(pkg.scripts.start).toMatch(new RegExp(`&& exec node .*${flag}.* dist/src/main\\.js$`));
    }
    // The bin's launcher starts the server with the same list (test/integration/cli.test.ts
    // reads them from the running server's command line).
    expect(bin).toContain("../dist/src/cli/launcher.js");
    expect(launcher.NODE_START_FLAGS).toBe(NODE_START_FLAGS);
  });
});
