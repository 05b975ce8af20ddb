/** Gemini's reasoning effort travels as a settings file (fix for spec §10 item 15). */
import { describe, expect, it } from "vitest";
import type { AgentPolicy } from "../../../src/events/run-event.js";
import {
  GEMINI_HEADLESS_SETTINGS,
  GEMINI_SETTINGS_ENV,
  geminiEffortSettings,
} from "../../../src/providers/gemini/command.js";
import { geminiAdapter } from "../../../src/providers/gemini/index.js";

const POLICY: AgentPolicy = {
  provider: "gemini",
  sandboxPolicy: "enforce",
  sandboxMode: "workspace-write",
  model: null,
  reasoningEffort: null,
};

function build(extra: Partial<AgentPolicy>, runDir?: string) {
  return geminiAdapter.buildCommand({
    bin: "/b/gemini",
    repoDir: "/srv/ws/s1/repo",
    prompt: "p",
    policy: { ...POLICY, ...extra },
    hostEnv: { PATH: "/usr/bin", GEMINI_CLI_SYSTEM_SETTINGS_PATH: "/etc/admin.json" },
    envPassthrough: [],
    ...(runDir === undefined ? {} : { runDir }),
  });
}

describe("gemini reasoning effort", () => {
  it("without an effort there is no file and the host settings path is kept", () => {
    const spec = build({});
    expect(spec.files).toBeUndefined();
    expect(spec.env).toEqual({
      GEMINI_CLI_NO_RELAUNCH: "true",
      GEMINI_CLI_SYSTEM_SETTINGS_PATH: "/etc/admin.json",
      PATH: "/usr/bin",
    });
  });

  it("writes a settings file into the session dir (repo's parent) and points Gemini at it", () => {
    const spec = build({ reasoningEffort: "medium" });
    const file = "/srv/ws/s1/.gemini-system-settings.json";
    expect(spec.env).toEqual({
      GEMINI_CLI_NO_RELAUNCH: "true",
      [GEMINI_SETTINGS_ENV]: file,
      PATH: "/usr/bin",
    });
    expect(spec.files).toEqual([
      {
        path: file,
        content: `${JSON.stringify(
          {
            modelConfigs: {
              customOverrides: [
                {
                  match: { model: "auto-gemini-3" },
                  modelConfig: {
                    generateContentConfig: {
                      thinkingConfig: { includeThoughts: true, thinkingLevel: "MEDIUM" },
                    },
                  },
                },
              ],
            },
          },
          null,
          2,
        )}\n`,
      },
    ]);
  });

  it("honours an explicit runDir", () => {
    const spec = build({ reasoningEffort: "low" }, "/var/lib/runs/r1");
    expect(spec.files?.map((f) => f.path)).toContain(
      "/var/lib/runs/r1/.gemini-system-settings.json",
    );
  });

  it("gives each session its own home with headless settings, and the configured endpoint", () => {
    const spec = geminiAdapter.buildCommand({
      bin: "/b/gemini",
      repoDir: "/srv/ws/s1/repo",
      prompt: "p",
      policy: POLICY,
      hostEnv: { PATH: "/usr/bin", HOME: "/root" },
      envPassthrough: [],
      runDir: "/srv/ws/s1",
      endpoint: { baseUrl: "http://127.0.0.1:9", apiKey: "g-key" },
    });
    expect(spec.env).toMatchObject({
      HOME: "/srv/ws/s1/.gemini-home",
      GOOGLE_GEMINI_BASE_URL: "http://127.0.0.1:9",
      GEMINI_API_KEY: "g-key",
    });
    const settings = spec.files?.find(
      (f) => f.path === "/srv/ws/s1/.gemini-home/.gemini/settings.json",
    );
    expect(JSON.parse(settings?.content ?? "{}")).toEqual(GEMINI_HEADLESS_SETTINGS);
    expect(GEMINI_HEADLESS_SETTINGS.security.auth.selectedType).toBe("gemini-api-key");
  });

  it("uses thinkingLevel for gemini-3 models and a token budget for older ones", () => {
    expect(geminiEffortSettings("gemini-3-pro", "xhigh")).toEqual({
      modelConfigs: {
        customOverrides: [
          {
            match: { model: "gemini-3-pro" },
            modelConfig: {
              generateContentConfig: {
                thinkingConfig: { includeThoughts: true, thinkingLevel: "HIGH" },
              },
            },
          },
        ],
      },
    });
    expect(geminiEffortSettings("gemini-2.5-pro", "xhigh")).toEqual({
      modelConfigs: {
        customOverrides: [
          {
            match: { model: "gemini-2.5-pro" },
            modelConfig: {
              generateContentConfig: {
                thinkingConfig: { includeThoughts: true, thinkingBudget: 16384 },
              },
            },
          },
        ],
      },
    });
  });

  it("the model flag and the settings match use the same trimmed name", () => {
    const spec = build({ model: " gemini-2.5-flash ", reasoningEffort: "low" });
    expect(spec.args).toContain("gemini-2.5-flash");
    expect(spec.files?.[0]?.content).toContain('"model": "gemini-2.5-flash"');
    expect(spec.files?.[0]?.content).toContain('"thinkingBudget": 1024');
  });
});
