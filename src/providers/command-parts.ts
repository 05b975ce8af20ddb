/**
 * Small readers of an `AgentPolicy` shared by the command builders, so every
 * adapter trims and validates the same way (FermiLink strips model and mode
 * before use: spec §6.2).
 */
import { REASONING_EFFORTS } from "../config/providers.js";
import { RunnerError } from "../errors/runner-error.js";
import type { AgentPolicy } from "../events/run-event.js";
import type { ReasoningEffort } from "./runtime-policy.js";

/**
 * The end-of-options marker of clap (codex) and commander (claude): every
 * argument after it is positional, so a prompt such as `--help` or
 * `--dangerously-skip-permissions` can never be read as a flag.
 */
export const END_OF_OPTIONS = "--";

/** The model name, trimmed; `null` when unset or blank. */
export function policyModel(policy: AgentPolicy): string | null {
  const model = policy.model?.trim() ?? "";
  return model === "" ? null : model;
}

/** The sandbox mode under `enforce`, trimmed; `null` under `bypass` or when unset. */
export function enforcedMode(policy: AgentPolicy): string | null {
  if (policy.sandboxPolicy !== "enforce") return null;
  const mode = policy.sandboxMode?.trim() ?? "";
  return mode === "" ? null : mode;
}

/**
 * The reasoning effort, or `null`. The policy was validated by
 * `runtime-policy.ts`, so an unknown value here is a bug, reported loudly
 * rather than silently dropped.
 */
export function policyEffort(policy: AgentPolicy): ReasoningEffort | null {
  const raw = policy.reasoningEffort?.trim().toLowerCase() ?? "";
  if (raw === "") return null;
  const effort = REASONING_EFFORTS.find((e) => e === raw);
  if (effort === undefined) {
    throw new RunnerError("INTERNAL", `Unknown reasoning effort '${raw}' reached a provider.`);
  }
  return effort;
}
