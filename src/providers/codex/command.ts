/**
 * Codex headless command (spec §6.2), adjusted to codex 0.169
 * (real-clis.md §3, §9): `--full-auto` no longer exists, so enforce mode is
 * `--sandbox <mode>` alone. `exec` never asks for approval; a refused command
 * goes back to the model.
 */
import { pickChildEnv } from "../child-env.js";
import { END_OF_OPTIONS, enforcedMode, policyEffort, policyModel } from "../command-parts.js";
import type { BuildCommandInput, CommandSpec } from "../provider-adapter.js";
import { applyCodexEnvRules, CODEX_ENV_VARS } from "./env.js";

/**
 * `codex exec --json --cd <repo> [--dangerously-bypass-approvals-and-sandbox |
 * --sandbox <mode>] [--model m] [--config model_reasoning_effort="x"] -- <prompt>`.
 */
export function buildCodexCommand(input: BuildCommandInput): CommandSpec {
  const { policy } = input;
  const args = ["exec", "--json", "--cd", input.repoDir];
  if (policy.sandboxPolicy === "bypass") {
    args.push("--dangerously-bypass-approvals-and-sandbox");
  } else {
    // FermiLink passes any non-empty mode through; codex itself rejects an unknown one.
    const mode = enforcedMode(policy);
    if (mode !== null) args.push("--sandbox", mode);
  }
  const model = policyModel(policy);
  if (model !== null) args.push("--model", model);
  const effort = policyEffort(policy);
  // A TOML string value: codex parses `-c key=value` as TOML (xhigh is a codex effort too).
  if (effort !== null) args.push("--config", `model_reasoning_effort="${effort}"`);
  // clap: after `--` the prompt is positional even when it is `--help` or `resume`
  // (checked against codex 0.169: `exec -- resume` sends "resume" as the prompt).
  args.push(END_OF_OPTIONS, input.prompt);

  const picked = pickChildEnv(input.hostEnv, CODEX_ENV_VARS, input.envPassthrough);
  const { env, codexHome } = applyCodexEnvRules(picked, input.hostEnv);
  const spec: CommandSpec = { bin: input.bin, args, env };
  if (codexHome !== null) spec.dirs = [codexHome];
  return spec;
}
