import { describe, expect, it } from "vitest";
import { judgeVersion, parseVersion } from "../../../src/providers/version-check.js";

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
});
