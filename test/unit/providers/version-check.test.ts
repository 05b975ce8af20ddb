import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  checkProviderVersion,
  judgeVersion,
  parseVersion,
} from "../../../src/providers/version-check.js";

describe("provider CLI version check", () => {
  it("reads the version each CLI prints", () => {
    expect(parseVersion("codex-cli 0.169.0")).toBe("0.169.0");
    expect(parseVersion("2.1.331 (Claude Code)")).toBe("2.1.331");
    expect(parseVersion("no version here")).toBeNull();
  });

  it("accepts the tested major.minor and warns outside it", () => {
    expect(judgeVersion("codex", "codex-cli 0.169.3").ok).toBe(true);
    expect(judgeVersion("gemini", "0.61.0").ok).toBe(true);
    const newer = judgeVersion("codex", "codex-cli 0.170.0");
    expect(newer.ok).toBe(false);
    expect(newer.message).toBe(
      "0.170.0 is outside the tested 0.169.x; flags or JSON output may differ",
    );
    expect(judgeVersion("opencode", "1.180.0").ok).toBe(false);
    expect(judgeVersion("claude", "garbage").message).toMatch(/could not read a version/);
  });

  it("asks gemini for its version without the relaunch a run also turns off", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "flr-version-"));
    try {
      // Prints a version only when it would not relaunch itself (as gemini then starts twice).
      const bin = path.join(dir, "gemini");
      await writeFile(
        bin,
        '#!/bin/sh\n[ "$GEMINI_CLI_NO_RELAUNCH" = true ] && echo 0.61.0 || echo relaunching\n',
      );
      await chmod(bin, 0o755);
      const env = { PATH: process.env.PATH ?? "" };
      expect(await checkProviderVersion("gemini", bin, env)).toMatchObject({
        ok: true,
        version: "0.61.0",
      });
      // Only gemini's: another provider's check gets the environment as given.
      expect((await checkProviderVersion("codex", bin, env)).version).toBeNull();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
