/** opencode's stderr log lines (`--print-logs --log-level WARN`, opencode 1.18) read by the retry guard. */
import { describe, expect, it } from "vitest";
import { opencodeAdapter } from "../../../src/providers/opencode/index.js";
import { opencodeFailedCall } from "../../../src/providers/opencode/retry-guard.js";

// Captured from opencode 1.18.33 against the fake model (500, then a closed port).
const SERVER_ERROR =
  'timestamp=2026-11-25T06:36:20.634Z level=ERROR run=a75277d1 message="stream error" providerID=f modelID=m session.id=ses_1 small=false agent=build mode=primary error.error="AI_APICallError: The fake model failed on purpose" error.stack="AI_APICallError: The fake model failed on purpose\\n    at <anonymous>"';
const REFUSED =
  'timestamp=2026-11-25T06:37:30.635Z level=ERROR run=6137d993 message="stream error" providerID=f modelID=m session.id=ses_2 small=false agent=build mode=primary error.error="AI_APICallError: Cannot connect to API: Unable to connect. Is the computer able to access the url? (caused by \\"ECONNREFUSED\\")"';
const TITLE =
  'timestamp=2026-11-25T06:37:36.621Z level=ERROR run=6137d993 message="stream error" providerID=f modelID=m session.id=ses_2 small=true agent=title mode=primary error.error="AI_RetryError: Failed after 3 attempts."';
const INFO =
  "timestamp=2026-11-25T06:37:30.550Z level=INFO run=6137d993 message=stream providerID=f modelID=m session.id=ses_2 small=false agent=build mode=primary";

describe("opencode retry guard", () => {
  it("reads the error of a failed conversation call, escapes undone", () => {
    expect(opencodeFailedCall(SERVER_ERROR)).toBe(
      "AI_APICallError: The fake model failed on purpose",
    );
    expect(opencodeFailedCall(REFUSED)).toBe(
      'AI_APICallError: Cannot connect to API: Unable to connect. Is the computer able to access the url? (caused by "ECONNREFUSED")',
    );
  });

  it("ignores the title side call, informational lines and anything else", () => {
    expect(opencodeFailedCall(TITLE)).toBeNull();
    expect(opencodeFailedCall(INFO)).toBeNull();
    expect(opencodeFailedCall("stream error")).toBeNull();
    expect(opencodeFailedCall('level=ERROR message="other failure" error.error="x"')).toBeNull();
  });

  it("falls back to a plain text when the line has no error field, and bounds a long one", () => {
    expect(opencodeFailedCall('level=ERROR message="stream error" agent=build')).toBe(
      "stream error",
    );
    const long = opencodeFailedCall(
      `level=ERROR message="stream error" error.error="${"x".repeat(2000)}"`,
    );
    expect(long?.length).toBe(401);
  });

  it("is wired into the adapter with one retry, and opencode is asked for its warnings on stderr", () => {
    expect(opencodeAdapter.retryGuard?.maxRetries).toBe(1);
    expect(opencodeAdapter.retryGuard?.failedCall(SERVER_ERROR)).not.toBeNull();
    const spec = opencodeAdapter.buildCommand({
      bin: "/x/opencode",
      repoDir: "/w/s/repo",
      prompt: "hi",
      policy: {
        provider: "opencode",
        sandboxPolicy: "enforce",
        sandboxMode: null,
        model: null,
        reasoningEffort: null,
      },
      hostEnv: {},
      envPassthrough: [],
      endpoint: { baseUrl: "http://127.0.0.1:9/v1", apiKey: "k" },
    });
    expect(spec.args.join(" ")).toContain("--print-logs --log-level WARN --format json");
    const config = JSON.parse(spec.env.OPENCODE_CONFIG_CONTENT ?? "{}");
    expect(config.provider.fermilink.options).toMatchObject({
      chunkTimeout: 30_000,
      headerTimeout: 30_000,
    });
  });
});
