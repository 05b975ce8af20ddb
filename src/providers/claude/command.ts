/**
 * Claude Code headless command (spec §6.2, real-clis.md §3). Claude has
 * permission modes, not an OS sandbox: read-only → `plan`, workspace-write →
 * `acceptEdits`, bypass → `bypassPermissions`. Any other enforced mode
 * (e.g. `danger-full-access`) gets no flag, as in FermiLink, which leaves
 * Claude's default mode (shell commands refused headless): never wider.
 */
import { type ProviderEnvVars, pickChildEnv } from "../child-env.js";
import { END_OF_OPTIONS, enforcedMode, policyEffort, policyModel } from "../command-parts.js";
import type { BuildCommandInput, CommandSpec } from "../provider-adapter.js";

/** Claude reads `ANTHROPIC_*` and `CLAUDE_*` (which includes `CLAUDE_CODE_*` and `CLAUDE_CONFIG_DIR`). */
export const CLAUDE_ENV_VARS: ProviderEnvVars = Object.freeze({
  prefixes: Object.freeze(["ANTHROPIC_", "CLAUDE_", "CLAUDE_CODE_"]),
  names: Object.freeze([]),
});

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
  return {
    bin: input.bin,
    args,
    env: pickChildEnv(input.hostEnv, CLAUDE_ENV_VARS, input.envPassthrough),
  };
}
