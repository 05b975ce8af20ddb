/**
 * Exact argv per provider × policy × model/effort, mirroring FermiLink's
 * `tests/test_providers.py` (spec §9) adjusted to today's CLIs
 * (real-clis.md §3: no `--full-auto`; no gemini `--sandbox`).
 */
import { describe, expect, it } from "vitest";
import type { ProviderId } from "../../../src/config/providers.js";
import type { AgentPolicy } from "../../../src/events/run-event.js";
import type { BuildCommandInput } from "../../../src/providers/provider-adapter.js";
import { getProviderAdapter } from "../../../src/providers/registry.js";

const BIN = "/opt/clis/bin/agent";
const REPO = "/srv/ws/s1/repo";
const PROMPT = "hello world";

type PolicyCase = "read-only" | "workspace-write" | "bypass";

function policy(c: PolicyCase, extra: Partial<AgentPolicy> = {}): AgentPolicy {
  const base: AgentPolicy =
    c === "bypass"
      ? {
          provider: "x",
          sandboxPolicy: "bypass",
          sandboxMode: null,
          model: null,
          reasoningEffort: null,
        }
      : {
          provider: "x",
          sandboxPolicy: "enforce",
          sandboxMode: c,
          model: null,
          reasoningEffort: null,
        };
  return { ...base, ...extra };
}

function input(p: AgentPolicy, prompt = PROMPT): BuildCommandInput {
  return { bin: BIN, repoDir: REPO, prompt, policy: p, hostEnv: {}, envPassthrough: [] };
}

function argv(id: ProviderId, p: AgentPolicy, prompt = PROMPT): string[] {
  const spec = getProviderAdapter(id).buildCommand(input(p, prompt));
  expect(spec.bin).toBe(BIN);
  return spec.args;
}

const WITH_MODEL = { model: "m-1", reasoningEffort: "xhigh" } as const;

/** Flags every codex run gets: no telemetry, update check, feedback, plugin sync or endless reconnecting. */
const CODEX_HARDENING = [
  "--config",
  "analytics.enabled=false",
  "--config",
  "check_for_update_on_startup=false",
  "--config",
  "feedback.enabled=false",
  "--disable",
  "plugins",
  "--disable",
  "unbounded_connection_retries",
];

// biome-ignore format: one argv per line reads as a table
const EXPECTED: Record<ProviderId, Record<PolicyCase, { plain: string[]; tuned: string[] }>> = {
  codex: {
    "read-only": {
      plain: ["exec", "--json", "--cd", REPO, "--sandbox", "read-only", ...CODEX_HARDENING, "--", PROMPT],
      tuned: ["exec", "--json", "--cd", REPO, "--sandbox", "read-only", "--model", "m-1", "--config", 'model_reasoning_effort="xhigh"', ...CODEX_HARDENING, "--", PROMPT],
    },
    "workspace-write": {
      plain: ["exec", "--json", "--cd", REPO, "--sandbox", "workspace-write", ...CODEX_HARDENING, "--", PROMPT],
      tuned: ["exec", "--json", "--cd", REPO, "--sandbox", "workspace-write", "--model", "m-1", "--config", 'model_reasoning_effort="xhigh"', ...CODEX_HARDENING, "--", PROMPT],
    },
    bypass: {
      plain: ["exec", "--json", "--cd", REPO, "--dangerously-bypass-approvals-and-sandbox", ...CODEX_HARDENING, "--", PROMPT],
      tuned: ["exec", "--json", "--cd", REPO, "--dangerously-bypass-approvals-and-sandbox", "--model", "m-1", "--config", 'model_reasoning_effort="xhigh"', ...CODEX_HARDENING, "--", PROMPT],
    },
  },
  claude: {
    "read-only": {
      plain: ["--print", "--add-dir", REPO, "--verbose", "--output-format", "stream-json", "--permission-mode", "plan", "--", PROMPT],
      tuned: ["--print", "--add-dir", REPO, "--verbose", "--output-format", "stream-json", "--permission-mode", "plan", "--model", "m-1", "--effort", "high", "--", PROMPT],
    },
    "workspace-write": {
      plain: ["--print", "--add-dir", REPO, "--verbose", "--output-format", "stream-json", "--permission-mode", "acceptEdits", "--", PROMPT],
      tuned: ["--print", "--add-dir", REPO, "--verbose", "--output-format", "stream-json", "--permission-mode", "acceptEdits", "--model", "m-1", "--effort", "high", "--", PROMPT],
    },
    bypass: {
      plain: ["--print", "--add-dir", REPO, "--verbose", "--output-format", "stream-json", "--permission-mode", "bypassPermissions", "--", PROMPT],
      tuned: ["--print", "--add-dir", REPO, "--verbose", "--output-format", "stream-json", "--permission-mode", "bypassPermissions", "--model", "m-1", "--effort", "high", "--", PROMPT],
    },
  },
  gemini: {
    "read-only": {
      plain: ["--include-directories", REPO, "--output-format", "stream-json", "--approval-mode", "plan", `--prompt=${PROMPT}`],
      tuned: ["--include-directories", REPO, "--output-format", "stream-json", "--approval-mode", "plan", "--model", "m-1", `--prompt=${PROMPT}`],
    },
    "workspace-write": {
      plain: ["--include-directories", REPO, "--output-format", "stream-json", "--approval-mode", "auto_edit", `--prompt=${PROMPT}`],
      tuned: ["--include-directories", REPO, "--output-format", "stream-json", "--approval-mode", "auto_edit", "--model", "m-1", `--prompt=${PROMPT}`],
    },
    bypass: {
      plain: ["--include-directories", REPO, "--output-format", "stream-json", "--approval-mode", "yolo", `--prompt=${PROMPT}`],
      tuned: ["--include-directories", REPO, "--output-format", "stream-json", "--approval-mode", "yolo", "--model", "m-1", `--prompt=${PROMPT}`],
    },
  },
  opencode: {
    "read-only": {
      plain: ["run", "--dir", REPO, "--agent", "plan", "--print-logs", "--log-level", "WARN", "--format", "json", "hello", "world"],
      tuned: ["run", "--dir", REPO, "--agent", "plan", "--model", "m-1", "--variant", "max", "--print-logs", "--log-level", "WARN", "--format", "json", "hello", "world"],
    },
    "workspace-write": {
      plain: ["run", "--dir", REPO, "--print-logs", "--log-level", "WARN", "--format", "json", "hello", "world"],
      tuned: ["run", "--dir", REPO, "--model", "m-1", "--variant", "max", "--print-logs", "--log-level", "WARN", "--format", "json", "hello", "world"],
    },
    bypass: {
      plain: ["run", "--dir", REPO, "--dangerously-skip-permissions", "--print-logs", "--log-level", "WARN", "--format", "json", "hello", "world"],
      tuned: ["run", "--dir", REPO, "--dangerously-skip-permissions", "--model", "m-1", "--variant", "max", "--print-logs", "--log-level", "WARN", "--format", "json", "hello", "world"],
    },
  },
};

describe("buildCommand argv", () => {
  for (const [id, cases] of Object.entries(EXPECTED) as [
    ProviderId,
    (typeof EXPECTED)[ProviderId],
  ][]) {
    for (const [c, want] of Object.entries(cases) as [
      PolicyCase,
      { plain: string[]; tuned: string[] },
    ][]) {
      it(`${id} ${c}`, () => {
        expect(argv(id, policy(c))).toEqual(want.plain);
      });
      it(`${id} ${c} with model and effort`, () => {
        expect(argv(id, policy(c, WITH_MODEL))).toEqual(want.tuned);
      });
    }
  }

  it("maps the other efforts one to one (claude, opencode, codex)", () => {
    const p = policy("workspace-write", { reasoningEffort: "medium" });
    expect(argv("claude", p).slice(-4)).toEqual(["--effort", "medium", "--", PROMPT]);
    expect(argv("opencode", p).slice(-9, -7)).toEqual(["--variant", "medium"]);
    expect(argv("codex", p).slice(-4 - CODEX_HARDENING.length)).toEqual([
      "--config",
      'model_reasoning_effort="medium"',
      ...CODEX_HARDENING,
      "--",
      PROMPT,
    ]);
  });

  it("trims the model and drops a blank one", () => {
    expect(argv("codex", policy("read-only", { model: "  gpt-x  " }))).toContain("gpt-x");
    expect(argv("codex", policy("read-only", { model: "   " }))).not.toContain("--model");
  });

  it("codex points at FERMILINK_CODEX_BASE_URL through its own provider, with bounded retries and a session home", () => {
    const spec = getProviderAdapter("codex").buildCommand({
      ...input(policy("workspace-write")),
      runDir: "/srv/ws/s1",
      endpoint: { baseUrl: "http://127.0.0.1:9999/v1", apiKey: "sk-test" },
    });
    expect(spec.args).toContain("model_provider=fermilink");
    const table = spec.args.find((a) => a.startsWith("model_providers.fermilink="));
    expect(table).toBe(
      'model_providers.fermilink={name="fermilink",base_url="http://127.0.0.1:9999/v1",env_key="CODEX_API_KEY",wire_api="responses",request_max_retries=1,stream_max_retries=1,stream_idle_timeout_ms=30000}',
    );
    expect(spec.env.CODEX_API_KEY).toBe("sk-test");
    expect(spec.env.CODEX_HOME).toBe("/srv/ws/s1/.codex-home");
    expect(spec.dirs).toEqual(["/srv/ws/s1/.codex-home"]);
    // An admin CODEX_HOME (e.g. a shared login) still wins, as in FermiLink.
    const shared = getProviderAdapter("codex").buildCommand({
      ...input(policy("workspace-write")),
      hostEnv: { CODEX_HOME: "/var/lib/codex" },
      runDir: "/srv/ws/s1",
    });
    expect(shared.env.CODEX_HOME).toBe("/var/lib/codex");
  });

  it("opencode's endpoint config never re-allows edits under read-only (its rules come after the plan agent's)", () => {
    const permission = (c: PolicyCase) => {
      const spec = getProviderAdapter("opencode").buildCommand({
        ...input(policy(c)),
        endpoint: { baseUrl: "http://127.0.0.1:9/v1", apiKey: "k" },
      });
      return JSON.parse(spec.env.OPENCODE_CONFIG_CONTENT ?? "{}").permission;
    };
    expect(permission("read-only")).toEqual({ edit: "deny", bash: "allow", webfetch: "deny" });
    expect(permission("workspace-write").edit).toBe("allow");
    expect(permission("bypass").edit).toBe("allow");
  });

  it("gemini: an enforced run cannot leave its approval mode (headless exit_plan_mode switches to yolo)", () => {
    const policyFile = (c: PolicyCase) =>
      getProviderAdapter("gemini")
        .buildCommand({ ...input(policy(c)), runDir: "/srv/ws/s1" })
        .files?.find(
          (f) => f.path === "/srv/ws/s1/.gemini-home/.gemini/policies/fermilink-enforce.toml",
        );
    for (const c of ["read-only", "workspace-write"] as const) {
      const content = policyFile(c)?.content ?? "";
      expect(content).toContain('toolName = ["enter_plan_mode", "exit_plan_mode"]');
      expect(content).toContain('decision = "deny"');
    }
    expect(policyFile("bypass")).toBeUndefined();
  });

  it("codex has no --full-auto any more (removed in 0.169)", () => {
    expect(argv("codex", policy("workspace-write"))).not.toContain("--full-auto");
  });

  it("gemini never passes --sandbox (needs docker) and keeps the effort out of argv", () => {
    const args = argv("gemini", policy("read-only", { reasoningEffort: "high" }));
    expect(args).not.toContain("--sandbox");
    expect(args.join(" ")).not.toContain("high");
  });

  it("danger-full-access under enforce: codex passes it; the others add no permission flag", () => {
    const p = policy("workspace-write", { sandboxMode: "danger-full-access" });
    expect(argv("codex", p)).toEqual([
      "exec",
      "--json",
      "--cd",
      REPO,
      "--sandbox",
      "danger-full-access",
      ...CODEX_HARDENING,
      "--",
      PROMPT,
    ]);
    expect(argv("claude", p)).toEqual([
      "--print",
      "--add-dir",
      REPO,
      "--verbose",
      "--output-format",
      "stream-json",
      "--",
      PROMPT,
    ]);
    expect(argv("gemini", p)).toEqual([
      "--include-directories",
      REPO,
      "--output-format",
      "stream-json",
      `--prompt=${PROMPT}`,
    ]);
    expect(argv("opencode", p)).toEqual([
      "run",
      "--dir",
      REPO,
      "--print-logs",
      "--log-level",
      "WARN",
      "--format",
      "json",
      "hello",
      "world",
    ]);
  });

  it("an unknown effort is a bug, not silently dropped", () => {
    expect(() => argv("codex", policy("read-only", { reasoningEffort: "extreme" }))).toThrow(
      /Unknown reasoning effort 'extreme'/,
    );
  });
});

describe("a prompt can never become a flag", () => {
  const hostile = "--dangerously-bypass-approvals-and-sandbox --help";

  it("codex and claude put it after --, as the last element", () => {
    for (const id of ["codex", "claude"] as const) {
      const args = argv(id, policy("read-only"), hostile);
      expect(args.slice(-2)).toEqual(["--", hostile]);
    }
  });

  it("codex never gets a bare - (its read-the-prompt-from-stdin), which stdin /dev/null leaves empty", () => {
    const tail = argv("codex", policy("read-only"), "-").slice(-2);
    expect(tail[0]).toBe("--");
    expect(tail[1]).not.toBe("-");
    expect(tail[1]?.trim()).toBe("-");
    // Any other prompt travels byte for byte.
    expect(argv("codex", policy("read-only"), "- ").at(-1)).toBe("- ");
  });

  it("gemini sends it as one --prompt= token", () => {
    expect(argv("gemini", policy("read-only"), "-x\n--yolo").at(-1)).toBe("--prompt=-x\n--yolo");
  });

  it("opencode splits a safe prompt on spaces so its join rebuilds it exactly", () => {
    const prompt = '  fix print("hi")  42 1.\nnext line ';
    const args = argv("opencode", policy("workspace-write"), prompt);
    const tail = args.slice(args.indexOf("json") + 1);
    expect(tail).toEqual(["", "", "fix", 'print("hi")', "", "42", "1.\nnext", "line", ""]);
    expect(tail.join(" ")).toBe(prompt);
  });

  it("opencode sends a prompt with a dash-led word as one element after --", () => {
    const prompt = "run ls -la please";
    expect(argv("opencode", policy("workspace-write"), prompt).slice(-3)).toEqual([
      "json",
      "--",
      prompt,
    ]);
    expect(argv("opencode", policy("bypass"), "-5").slice(-2)).toEqual(["--", "-5"]);
  });
});
