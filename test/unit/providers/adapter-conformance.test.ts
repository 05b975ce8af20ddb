/**
 * What every adapter must do, whatever the provider (style.md "absorb" item
 * 3): registry consistency, a clean spec, and normalisers that are total
 * functions over arbitrary input.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { PROVIDER_IDS } from "../../../src/config/providers.js";
import type { AgentItem } from "../../../src/events/run-event.js";
import { CLAUDE_ENV_DEFAULTS } from "../../../src/providers/claude/command.js";
import { OPENCODE_ENV_DEFAULTS } from "../../../src/providers/opencode/command.js";
import {
  getProviderAdapter,
  PROVIDER_ADAPTERS,
  PROVIDER_ALIASES,
} from "../../../src/providers/registry.js";

/** Variables an adapter sets for every headless run unless the admin set them (real-clis.md). */
const HEADLESS_DEFAULTS: Record<string, Record<string, string>> = {
  claude: { ...CLAUDE_ENV_DEFAULTS },
  gemini: { GEMINI_CLI_NO_RELAUNCH: "true" },
  opencode: { ...OPENCODE_ENV_DEFAULTS },
};

const TRANSCRIPTS = fileURLToPath(new URL("../../fixtures/transcripts/", import.meta.url));

/** Every fixture line of every provider: each normaliser must survive all of them. */
function allFixtureLines(): string[] {
  return PROVIDER_IDS.flatMap((p) =>
    readdirSync(path.join(TRANSCRIPTS, p)).flatMap((c) =>
      readFileSync(path.join(TRANSCRIPTS, p, c, "stdout.jsonl"), "utf8").split("\n"),
    ),
  );
}

/** Deterministic junk: truncations of real lines and type-confused events. */
function junkLines(): string[] {
  const lines = allFixtureLines();
  const cut = lines.flatMap((l) =>
    [0.1, 0.5, 0.9].map((f) => l.slice(0, Math.floor(l.length * f))),
  );
  const confused = [
    "item.completed",
    "assistant",
    "user",
    "result",
    "tool_use",
    "tool_result",
    "step_finish",
    "message",
    "error",
    "system",
    "turn.completed",
    "turn.failed",
    "text",
  ].flatMap((type) => [
    JSON.stringify({ type }),
    JSON.stringify({ type, item: 5, message: [], part: "x", usage: "x", error: 7, stats: [] }),
    JSON.stringify({
      type,
      item: { type: "command_execution", command: 5, exit_code: "0" },
      message: { content: "text" },
    }),
    JSON.stringify({
      type,
      part: { tool: "bash", state: { input: null, metadata: { exit: 1.5 } } },
      content: {},
      role: "assistant",
    }),
    JSON.stringify({ type, subtype: "api_retry", usage: { input_tokens: Number.MAX_VALUE } }),
  ]);
  return [
    ...cut,
    ...confused,
    "",
    "   ",
    "null",
    "42",
    '"str"',
    "{}",
    "{",
    "\u0000{}",
    '{"__proto__":{"x":1}}',
  ];
}

function checkItemShape(item: AgentItem): void {
  if (item.kind === "usage") {
    for (const n of [
      item.inputTokens,
      item.cachedInputTokens,
      item.outputTokens,
      item.reasoningTokens,
      item.cacheWriteInputTokens,
    ]) {
      expect(Number.isSafeInteger(n)).toBe(true);
      expect(n).toBeGreaterThanOrEqual(0);
    }
  }
  if (item.kind === "command" && item.exitCode !== null)
    expect(Number.isInteger(item.exitCode)).toBe(true);
}

describe("registry", () => {
  it("has one adapter per provider, named consistently", () => {
    expect(Object.keys(PROVIDER_ADAPTERS).sort()).toEqual([...PROVIDER_IDS].sort());
    for (const id of PROVIDER_IDS) {
      const a = getProviderAdapter(id);
      expect(a.id).toBe(id);
      expect(a.binEnvKey).toBe(`FERMILINK_${id.toUpperCase()}_BIN`);
      expect(a.defaultBinName).toBe(id);
    }
    expect(getProviderAdapter("claude").workspaceAlias).toBe("CLAUDE.md");
    expect(getProviderAdapter("gemini").workspaceAlias).toBe("GEMINI.md");
    expect(getProviderAdapter("codex").workspaceAlias).toBeNull();
    expect(getProviderAdapter("opencode").workspaceAlias).toBeNull();
    expect(PROVIDER_ALIASES).toEqual(["CLAUDE.md", "GEMINI.md"]);
  });
});

for (const id of PROVIDER_IDS) {
  describe(`${id} adapter conformance`, () => {
    const adapter = getProviderAdapter(id);

    it("returns [] for non-JSON and non-object lines", () => {
      for (const line of [
        "",
        "  ",
        "plain text",
        "Reading additional input from stdin...",
        "[1,2]",
        "null",
        "{broken",
      ]) {
        expect(adapter.normalize(line)).toEqual([]);
      }
    });

    it("never throws and always returns well-formed items", () => {
      for (const line of [...allFixtureLines(), ...junkLines()]) {
        const items = adapter.normalize(line);
        expect(Array.isArray(items)).toBe(true);
        for (const item of items) checkItemShape(item);
      }
    });

    it("builds a spec with the given binary, a sorted env and no runner secret", () => {
      const spec = adapter.buildCommand({
        bin: "/abs/bin",
        repoDir: "/srv/ws/s/repo",
        prompt: "do it",
        policy: {
          provider: id,
          sandboxPolicy: "enforce",
          sandboxMode: "read-only",
          model: null,
          reasoningEffort: null,
        },
        hostEnv: { PATH: "/usr/bin", FERMILINK_RUNNER_METRICS_TOKEN: "t", ZZZ: "z" },
        envPassthrough: ["FERMILINK_RUNNER_METRICS_TOKEN", "ZZZ"],
      });
      expect(spec.bin).toBe("/abs/bin");
      expect(spec.env).toEqual({ PATH: "/usr/bin", ZZZ: "z", ...HEADLESS_DEFAULTS[id] });
      expect(Object.keys(spec.env)).toEqual(Object.keys(spec.env).sort());
      expect(spec.args).toContain("/srv/ws/s/repo");
      expect(spec.args.join(" ")).toContain("do it");
    });
  });
}
