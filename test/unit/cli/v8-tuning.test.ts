import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/**
 * V8's cached-data tag hashes its version and every flag's value: two
 * processes with the same tag run V8 with the same flags.
 */
async function tagOf(nodeArgs: string[], code: string): Promise<string> {
  const { stdout } = await run(
    process.execPath,
    [...nodeArgs, "--import", "tsx", "--input-type=module", "-e", code],
    { cwd: ROOT },
  );
  return stdout.trim();
}

const PRINT_TAG = `process.stdout.write(String((await import("node:v8")).cachedDataVersionTag()));`;

describe("tuneV8", () => {
  it("sets the same V8 configuration as its flags given on the command line", async () => {
    const { TUNED_V8_FLAGS } = await import("../../../src/cli/v8-tuning.js");
    const [tuned, onCommandLine, plain] = await Promise.all([
      tagOf([], `(await import("./src/cli/v8-tuning.ts")).tuneV8(); ${PRINT_TAG}`),
      tagOf([...TUNED_V8_FLAGS], PRINT_TAG),
      tagOf([], PRINT_TAG),
    ]);
    expect(TUNED_V8_FLAGS).toContain("--no-allocation-site-pretenuring");
    expect(tuned).toBe(onCommandLine);
    expect(tuned).not.toBe(plain);
  });
});
