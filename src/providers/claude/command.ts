/**
 * Claude Code headless command (spec §6.2, real-clis.md §3). Claude has
 * permission modes, not an OS sandbox: read-only → `plan`, workspace-write →
 * `acceptEdits`, bypass → `bypassPermissions`. Any other enforced mode
 * (e.g. `danger-full-access`) gets no flag, as in FermiLink, which leaves
 * Claude's default mode (shell commands refused headless): never wider.
 */
import path from "node:path";
import { type ProviderEnvVars, pickChildEnv, sortEnv } from "../child-env.js";
import { END_OF_OPTIONS, enforcedMode, policyEffort, policyModel } from "../command-parts.js";
import type { BuildCommandInput, CommandSpec } from "../provider-adapter.js";

/** Claude reads `ANTHROPIC_*` and `CLAUDE_*` (which includes `CLAUDE_CODE_*` and `CLAUDE_CONFIG_DIR`). */
export const CLAUDE_ENV_VARS: ProviderEnvVars = Object.freeze({
  prefixes: Object.freeze(["ANTHROPIC_", "CLAUDE_", "CLAUDE_CODE_"]),
  names: Object.freeze(["IS_SANDBOX"]),
});

/** Environment defaults for a headless run (the admin's own values win). */
export const CLAUDE_ENV_DEFAULTS: Readonly<Record<string, string>> = {
  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
  CLAUDE_CODE_MAX_RETRIES: "1",
  CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS: "30000",
};

const PERMISSION_MODE_FOR_SANDBOX: Readonly<Record<string, string>> = {
  "read-only": "plan",
  "workspace-write": "acceptEdits",
};

/**
 * `claude --print --add-dir <repo> --verbose --output-format stream-json
 * [--permission-mode m] [--model m] [--effort e] -- <prompt>`.
 * `--verbose` is required with `--print` + stream-json (real-clis.md §3).
 */
export function buildClaudeCommand(input: BuildCommandInput): CommandSpec {
  const { policy } = input;
  const args = [
    "--print",
    "--add-dir",
    input.repoDir,
    "--verbose",
    "--output-format",
    "stream-json",
  ];
  if (policy.sandboxPolicy === "bypass") {
    // As root this also needs IS_SANDBOX=1 (real-clis.md §3); the admin passes it through.
    args.push("--permission-mode", "bypassPermissions");
  } else {
    const mode = enforcedMode(policy);
    const permissionMode = mode === null ? undefined : PERMISSION_MODE_FOR_SANDBOX[mode];
    if (permissionMode !== undefined) args.push("--permission-mode", permissionMode);
  }
  const model = policyModel(policy);
  if (model !== null) args.push("--model", model);
  const effort = policyEffort(policy);
  // Claude's top effort is `high`; FermiLink maps xhigh onto it.
  if (effort !== null) args.push("--effort", effort === "xhigh" ? "high" : effort);
  // commander: `--` ends option parsing, so the prompt is always the positional argument.
  args.push(END_OF_OPTIONS, input.prompt);
  const env = pickChildEnv(input.hostEnv, CLAUDE_ENV_VARS, input.envPassthrough);
  const { endpoint } = input;
  if (endpoint?.baseUrl) env.ANTHROPIC_BASE_URL = endpoint.baseUrl;
  if (endpoint?.apiKey) env.ANTHROPIC_API_KEY = endpoint.apiKey;
  // Measured defaults (real-clis.md §3, §5, §6), each overridable by the admin's own value:
  // no calls home, one retry instead of ten (minutes on a dead endpoint), and a stalled
  // stream ends instead of hanging.
  for (const [name, value] of Object.entries(CLAUDE_ENV_DEFAULTS)) env[name] ??= value;
  // Claude refuses bypassPermissions as root unless told it is sandboxed (real-clis.md §3).
  if (policy.sandboxPolicy === "bypass") env.IS_SANDBOX ??= "1";
  const dirs: string[] = [];
  if (env.CLAUDE_CONFIG_DIR === undefined && input.runDir) {
    env.CLAUDE_CONFIG_DIR = path.join(input.runDir, ".claude-home");
    dirs.push(env.CLAUDE_CONFIG_DIR);
  }
  const spec: CommandSpec = { bin: input.bin, args, env: sortEnv(env) };
  if (dirs.length > 0) spec.dirs = dirs;
  return spec;
}
