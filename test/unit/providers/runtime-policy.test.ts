/** Runtime policy (spec §6.4) and per-request narrowing (spec §6.5, design §3). */
import { describe, expect, it } from "vitest";
import type { AgentEnvPolicy } from "../../../src/config/config.js";
import { RunnerError } from "../../../src/errors/runner-error.js";
import {
  DEFAULT_RUNTIME_POLICY,
  mergeRuntimePolicy,
  parseAgentRuntimeFile,
  type RuntimePolicy,
  resolveRunPolicy,
} from "../../../src/providers/runtime-policy.js";

const NO_ENV: AgentEnvPolicy = {
  provider: null,
  sandboxPolicy: null,
  sandboxMode: null,
  model: null,
  reasoningEffort: null,
};

function runtime(extra: Partial<RuntimePolicy> = {}): RuntimePolicy {
  return { ...DEFAULT_RUNTIME_POLICY, ...extra };
}

function refusal(fn: () => unknown): RunnerError {
  try {
    fn();
  } catch (err) {
    if (err instanceof RunnerError) return err;
    throw err;
  }
  throw new Error("expected a RunnerError");
}

describe("parseAgentRuntimeFile", () => {
  it("a missing file gives nothing and no warning", () => {
    expect(parseAgentRuntimeFile(null)).toEqual({ policy: {}, warning: null });
  });

  it("reads every field, normalising case and blanks", () => {
    const text = JSON.stringify({
      version: 1,
      provider: " Claude ",
      sandbox_policy: "BYPASS",
      sandbox_mode: " read-only ",
      model: "opus",
      reasoning_effort: "XHigh",
      updated_at: "2026-01-01T00:00:00Z",
    });
    expect(parseAgentRuntimeFile(text)).toEqual({
      policy: {
        provider: "claude",
        sandboxPolicy: "bypass",
        sandboxMode: "read-only",
        model: "opus",
        reasoningEffort: "xhigh",
      },
      warning: null,
    });
    expect(parseAgentRuntimeFile('{"model": "  ", "reasoning_effort": null}')).toEqual({
      policy: {},
      warning: null,
    });
  });

  it("ignores the whole file (defaults) with a warning when it is invalid", () => {
    expect(parseAgentRuntimeFile("{not json")).toEqual({
      policy: {},
      warning: "agent_runtime.json is not valid JSON; it is ignored.",
    });
    expect(parseAgentRuntimeFile("[1]")).toEqual({
      policy: {},
      warning: "agent_runtime.json is not a JSON object; it is ignored.",
    });
    expect(
      parseAgentRuntimeFile(
        '{"provider":"deepseek","model":"m","reasoning_effort":"max","sandbox_mode":5}',
      ),
    ).toEqual({
      policy: {},
      warning:
        "agent_runtime.json is ignored: provider 'deepseek' is invalid; sandbox_mode is not a string; reasoning_effort 'max' is invalid.",
    });
  });
});

describe("mergeRuntimePolicy", () => {
  it("uses FermiLink's defaults", () => {
    expect(mergeRuntimePolicy(NO_ENV, {})).toEqual({
      provider: "codex",
      sandboxPolicy: "enforce",
      sandboxMode: "workspace-write",
      model: null,
      reasoningEffort: null,
    });
  });

  it("env beats file beats defaults, field by field", () => {
    const env: AgentEnvPolicy = { ...NO_ENV, provider: "gemini", model: "env-model" };
    const file = {
      provider: "claude" as const,
      model: "file-model",
      sandboxMode: "read-only",
      reasoningEffort: "low" as const,
    };
    expect(mergeRuntimePolicy(env, file)).toEqual({
      provider: "gemini",
      sandboxPolicy: "enforce",
      sandboxMode: "read-only",
      model: "env-model",
      reasoningEffort: "low",
    });
  });
});

describe("resolveRunPolicy", () => {
  it("passes model and effort through and keeps the policy mode when the request names none", () => {
    const p = runtime({ model: "gpt-x", reasoningEffort: "high" });
    expect(resolveRunPolicy(p, undefined, undefined)).toEqual({
      provider: "codex",
      sandboxPolicy: "enforce",
      sandboxMode: "workspace-write",
      model: "gpt-x",
      reasoningEffort: "high",
    });
    expect(resolveRunPolicy(p, "  ", " ").sandboxMode).toBe("workspace-write");
  });

  it("bypass: the sandbox is null and a known request value is ignored (FermiLink test)", () => {
    const p = runtime({ sandboxPolicy: "bypass", model: "m", reasoningEffort: "low" });
    expect(resolveRunPolicy(p, "read-only", undefined)).toEqual({
      provider: "codex",
      sandboxPolicy: "bypass",
      sandboxMode: null,
      model: "m",
      reasoningEffort: "low",
    });
  });

  it("bypass still refuses an unknown sandbox value", () => {
    const err = refusal(() =>
      resolveRunPolicy(runtime({ sandboxPolicy: "bypass" }), "yolo", undefined),
    );
    expect(err.code).toBe("SANDBOX_INVALID");
    expect(err.message).toBe(
      "Sandbox 'yolo' is not a known mode. Allowed: read-only, workspace-write, danger-full-access.",
    );
  });

  it("enforce: narrowing and equal modes are honoured (trimmed, lowercased)", () => {
    expect(resolveRunPolicy(runtime(), " Read-Only ", undefined).sandboxMode).toBe("read-only");
    expect(resolveRunPolicy(runtime(), "workspace-write", undefined).sandboxMode).toBe(
      "workspace-write",
    );
    const wide = runtime({ sandboxMode: "danger-full-access" });
    expect(resolveRunPolicy(wide, "workspace-write", undefined).sandboxMode).toBe(
      "workspace-write",
    );
    expect(resolveRunPolicy(wide, "danger-full-access", undefined).sandboxMode).toBe(
      "danger-full-access",
    );
  });

  it("enforce: a wider mode is refused, saying what is allowed", () => {
    const ro = refusal(() =>
      resolveRunPolicy(runtime({ sandboxMode: "read-only" }), "workspace-write", undefined),
    );
    expect(ro.code).toBe("SANDBOX_INVALID");
    expect(ro.message).toBe(
      "Sandbox 'workspace-write' would widen this runner's sandbox mode 'read-only'. Allowed: read-only.",
    );
    const ww = refusal(() => resolveRunPolicy(runtime(), "danger-full-access", undefined));
    expect(ww.message).toBe(
      "Sandbox 'danger-full-access' would widen this runner's sandbox mode 'workspace-write'. Allowed: read-only, workspace-write.",
    );
  });

  it("enforce: an unknown mode is refused, listing the allowed values", () => {
    const err = refusal(() => resolveRunPolicy(runtime(), "full", undefined));
    expect(err.code).toBe("SANDBOX_INVALID");
    expect(err.message).toBe(
      "Sandbox 'full' is not a known mode. Allowed: read-only, workspace-write, danger-full-access.",
    );
  });

  it("a custom policy mode accepts only itself or read-only", () => {
    const custom = runtime({ sandboxMode: "lab-only" });
    expect(resolveRunPolicy(custom, undefined, undefined).sandboxMode).toBe("lab-only");
    expect(resolveRunPolicy(custom, "LAB-ONLY", undefined).sandboxMode).toBe("lab-only");
    expect(resolveRunPolicy(custom, "read-only", undefined).sandboxMode).toBe("read-only");
    const err = refusal(() => resolveRunPolicy(custom, "workspace-write", undefined));
    expect(err.message).toBe(
      "Sandbox 'workspace-write' would widen this runner's sandbox mode 'lab-only'. Allowed: read-only, lab-only.",
    );
  });

  it("accepts the runner's own provider, in any case", () => {
    expect(resolveRunPolicy(runtime(), undefined, " CODEX ").provider).toBe("codex");
  });

  it("refuses an unknown provider with FermiLink's list", () => {
    const err = refusal(() => resolveRunPolicy(runtime(), undefined, " DeepSeek "));
    expect(err.code).toBe("PROVIDER_UNSUPPORTED");
    expect(err.message).toBe(
      "Provider 'DeepSeek' is not supported. Supported: codex, claude, gemini, opencode.",
    );
  });

  it("refuses another known provider instead of silently running codex", () => {
    const err = refusal(() => resolveRunPolicy(runtime(), undefined, "gemini"));
    expect(err.code).toBe("PROVIDER_MISMATCH");
    expect(err.message).toBe(
      "This runner runs provider 'codex', not 'gemini'. Omit the 'provider' field or set it to 'codex'.",
    );
  });
});
