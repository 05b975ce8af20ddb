/**
 * opencode headless command (spec §6.2, real-clis.md §3): `run --dir <repo>
 * --format json`. Only read-only (`--agent plan`) and bypass
 * (`--dangerously-skip-permissions`) get a flag; workspace-write uses the
 * permissions of opencode's config, as in FermiLink.
 */
import { type ProviderEnvVars, pickChildEnv } from "../child-env.js";
import { END_OF_OPTIONS, enforcedMode, policyEffort, policyModel } from "../command-parts.js";
import type { BuildCommandInput, CommandSpec } from "../provider-adapter.js";

/** opencode reads `OPENCODE_*`; model keys live in its own config (real-clis.md §3). */
export const OPENCODE_ENV_VARS: ProviderEnvVars = Object.freeze({
  prefixes: Object.freeze(["OPENCODE_"]),
  names: Object.freeze([]),
});

/**
 * The prompt's argv tail. opencode's `run [message..]` handler joins
 * `[...message, ...argv["--"]]` with spaces, after wrapping every element that
 * contains a space in double quotes (backslash-escaping inner quotes). A
 * single-element prompt would therefore reach the model as `"…"` with `\"`
 * inside; instead the prompt is split on " " so that the join rebuilds it
 * byte for byte (no element holds a space, so none is quoted).
 *
 * No `--` in that case, on purpose: yargs coerces arguments after `--` that
 * look like numbers (`42` → 42, `1.` → 1), which both alters them and makes
 * opencode's handler throw (`arg.includes` of a number). Positionals of the
 * string-typed `message` are not coerced. An element that starts with `-`
 * would be read as a flag, though, so when any element does, the prompt goes
 * as ONE element after `--`: never a flag, at the price of opencode's quoting
 * (and a prompt that is only a negative number, like `-5`, still becomes a
 * number and fails loudly). Checked against yargs 17 with populate-- on.
 */
export function opencodePromptArgs(prompt: string): string[] {
  const pieces = prompt.split(" ");
  return pieces.some((p) => p.startsWith("-")) ? [END_OF_OPTIONS, prompt] : pieces;
}

const VARIANT_FOR_EFFORT: Readonly<Record<string, string>> = { xhigh: "max" };

/**
 * `opencode run --dir <repo> [--agent plan | --dangerously-skip-permissions]
 * [--model m] [--variant v] --format json <prompt pieces>`.
 *
 * `--format json` comes last, unlike spec §6.2, because yargs lets a boolean
 * flag swallow a following `true`/`false`: `--dangerously-skip-permissions
 * false do it` would turn the flag off and eat the word. Only a string-valued
 * option may stand right before the prompt.
 */
export function buildOpencodeCommand(input: BuildCommandInput): CommandSpec {
  const { policy } = input;
  const args = ["run", "--dir", input.repoDir];
  if (policy.sandboxPolicy === "bypass") args.push("--dangerously-skip-permissions");
  else if (enforcedMode(policy) === "read-only") args.push("--agent", "plan");
  const model = policyModel(policy);
  if (model !== null) args.push("--model", model);
  const effort = policyEffort(policy);
  if (effort !== null) args.push("--variant", VARIANT_FOR_EFFORT[effort] ?? effort);
  args.push("--format", "json", ...opencodePromptArgs(input.prompt));
  return {
    bin: input.bin,
    args,
    env: pickChildEnv(input.hostEnv, OPENCODE_ENV_VARS, input.envPassthrough),
  };
}
