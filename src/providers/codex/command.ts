/**
 * Codex headless command (spec §6.2), adjusted to codex 0.169
 * (real-clis.md §3, §9): `--full-auto` no longer exists, so enforce mode is
 * `--sandbox <mode>` alone. `exec` never asks for approval; a refused command
 * goes back to the model.
 */
import path from "node:path";
import { pickChildEnv, sortEnv } from "../child-env.js";
import { END_OF_OPTIONS, enforcedMode, policyEffort, policyModel } from "../command-parts.js";
import type { BuildCommandInput, CommandSpec } from "../provider-adapter.js";
import { applyCodexEnvRules, CODEX_ENV_VARS, isPlaceholderKey } from "./env.js";

/** The model provider the runner defines when FERMILINK_CODEX_BASE_URL is set. */
const PROVIDER_NAME = "fermilink";

/** A TOML basic string (codex parses `-c key=value` values as TOML). */
function tomlString(s: string): string {
  return JSON.stringify(s);
}

/**
 * The prompt argument. A prompt of exactly `-` is codex's "read the prompt
 * from stdin", even after `--`, and stdin is /dev/null: codex 0.169 exits 1
 * with "No prompt provided via stdin." and the model never sees it. A
 * trailing newline, which the model reads as the same prompt, keeps it text.
 */
function codexPrompt(prompt: string): string {
  return prompt === "-" ? "-\n" : prompt;
}

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
  // Headless hardening (real-clis.md §5, §6): no telemetry, update check, feedback or plugin
  // sync (the hosts they call are not needed for a run), and no endless reconnecting.
  args.push(
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
  );
  const endpoint = input.endpoint;
  if (endpoint?.baseUrl) {
    // A custom provider, not `openai_base_url`: the built-in one first tries WebSockets for
    // seconds, and OPENAI_BASE_URL is ignored (real-clis.md §3). Retries stay bounded.
    args.push(
      "--config",
      `model_provider=${PROVIDER_NAME}`,
      "--config",
      `model_providers.${PROVIDER_NAME}={name="${PROVIDER_NAME}",base_url=${tomlString(endpoint.baseUrl)},env_key="CODEX_API_KEY",wire_api="responses",request_max_retries=1,stream_max_retries=1,stream_idle_timeout_ms=30000}`,
    );
  }
  // clap: after `--` the prompt is positional even when it is `--help` or `resume`
  // (checked against codex 0.169: `exec -- resume` sends "resume" as the prompt).
  args.push(END_OF_OPTIONS, codexPrompt(input.prompt));

  const picked = pickChildEnv(input.hostEnv, CODEX_ENV_VARS, input.envPassthrough);
  const { env, codexHome } = applyCodexEnvRules(picked, input.hostEnv);
  // FERMILINK_CODEX_API_KEY is also FermiLink's prefixed key, which the rules above already
  // promoted or dropped (stored login, placeholder, a native key set). It overrides them only
  // as the key of the runner's own endpoint, read through that provider's env_key.
  if (endpoint?.baseUrl && endpoint.apiKey && !isPlaceholderKey(endpoint.apiKey)) {
    env.CODEX_API_KEY = endpoint.apiKey;
  }
  // Without an admin CODEX_HOME each session gets its own, beside (never inside) the repo.
  const home = codexHome ?? (input.runDir ? path.join(input.runDir, ".codex-home") : null);
  if (home !== null) env.CODEX_HOME = home;
  const spec: CommandSpec = { bin: input.bin, args, env: sortEnv(env) };
  if (home !== null) spec.dirs = [home];
  return spec;
}
