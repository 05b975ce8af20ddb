/**
 * The agent runtime policy (spec §6.4) and its narrowing for one request
 * (spec §6.5). Pure: the caller reads `agent_runtime.json` (re-read on every
 * run, as in FermiLink) and passes its text in.
 */
import type { AgentEnvPolicy } from "../config/config.js";
import {
  isProviderId,
  PROVIDER_IDS,
  type ProviderId,
  REASONING_EFFORTS,
} from "../config/providers.js";
import { quotedInput, RunnerError } from "../errors/runner-error.js";
import type { AgentPolicy } from "../events/run-event.js";
import { asObject } from "./json-line.js";

/** `enforce` runs the CLI in a sandbox / permission mode; `bypass` turns those off. */
export type SandboxPolicy = "enforce" | "bypass";

/** A reasoning effort FermiLink accepts (spec §6.4). */
export type ReasoningEffort = (typeof REASONING_EFFORTS)[number];

/** The admin's policy after env, file and defaults are merged (FermiLink `AgentRuntimePolicy`). */
export interface RuntimePolicy {
  provider: ProviderId;
  sandboxPolicy: SandboxPolicy;
  /** Any non-empty string (FermiLink does not restrict it); used under `enforce`. */
  sandboxMode: string;
  model: string | null;
  reasoningEffort: ReasoningEffort | null;
}

/** FermiLink's defaults (spec §6.4). */
export const DEFAULT_RUNTIME_POLICY: Readonly<RuntimePolicy> = Object.freeze({
  provider: "codex",
  sandboxPolicy: "enforce",
  sandboxMode: "workspace-write",
  model: null,
  reasoningEffort: null,
});

/** The sandbox modes a request may name, narrowest first (the order is the ranking). */
export const SANDBOX_MODES = ["read-only", "workspace-write", "danger-full-access"] as const;

/** What `agent_runtime.json` contributed, and why it was ignored if it was. */
export interface ParsedRuntimeFile {
  /** Only the fields the file set; `{}` when the file is missing or invalid. */
  policy: Partial<RuntimePolicy>;
  /** Why the file was ignored (for the caller to log); `null` when it was used or absent. */
  warning: string | null;
}

type FieldResult<T> = { ok: true; value: T | undefined } | { ok: false; problem: string };

function optionalString<T>(
  raw: unknown,
  field: string,
  accept: (v: string) => T | undefined,
): FieldResult<T> {
  if (raw === undefined || raw === null) return { ok: true, value: undefined };
  if (typeof raw !== "string") return { ok: false, problem: `${field} is not a string` };
  if (raw.trim() === "") return { ok: true, value: undefined };
  const value = accept(raw.trim());
  return value === undefined
    ? { ok: false, problem: `${field} '${raw}' is invalid` }
    : { ok: true, value };
}

/**
 * Parse `$FERMILINK_HOME/agent_runtime.json` (`null` = missing). As in
 * FermiLink, a file with any invalid field is ignored as a whole and the
 * defaults apply silently to the run; the returned warning lets the caller
 * log why. Blank or null fields count as unset.
 */
export function parseAgentRuntimeFile(text: string | null): ParsedRuntimeFile {
  if (text === null) return { policy: {}, warning: null };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { policy: {}, warning: "agent_runtime.json is not valid JSON; it is ignored." };
  }
  const obj = asObject(json);
  if (!obj)
    return { policy: {}, warning: "agent_runtime.json is not a JSON object; it is ignored." };
  const lower = (v: string) => v.toLowerCase();
  const fields = {
    provider: optionalString(obj.provider, "provider", (v) => {
      const p = lower(v);
      return isProviderId(p) ? p : undefined;
    }),
    sandboxPolicy: optionalString(obj.sandbox_policy, "sandbox_policy", (v) => {
      const p = lower(v);
      return p === "enforce" || p === "bypass" ? p : undefined;
    }),
    sandboxMode: optionalString(obj.sandbox_mode, "sandbox_mode", (v) => v),
    model: optionalString(obj.model, "model", (v) => v),
    reasoningEffort: optionalString(obj.reasoning_effort, "reasoning_effort", (v) =>
      REASONING_EFFORTS.find((e) => e === lower(v)),
    ),
  };
  const problems = Object.values(fields).flatMap((f) => (f.ok ? [] : [f.problem]));
  if (problems.length > 0) {
    return { policy: {}, warning: `agent_runtime.json is ignored: ${problems.join("; ")}.` };
  }
  const policy: Partial<RuntimePolicy> = {};
  if (fields.provider.ok && fields.provider.value) policy.provider = fields.provider.value;
  if (fields.sandboxPolicy.ok && fields.sandboxPolicy.value) {
    policy.sandboxPolicy = fields.sandboxPolicy.value;
  }
  if (fields.sandboxMode.ok && fields.sandboxMode.value)
    policy.sandboxMode = fields.sandboxMode.value;
  if (fields.model.ok && fields.model.value) policy.model = fields.model.value;
  if (fields.reasoningEffort.ok && fields.reasoningEffort.value) {
    policy.reasoningEffort = fields.reasoningEffort.value;
  }
  return { policy, warning: null };
}

/** Env beats the file, the file beats the defaults, field by field (spec §6.4). */
export function mergeRuntimePolicy(
  envPolicy: AgentEnvPolicy,
  file: Partial<RuntimePolicy>,
): RuntimePolicy {
  const d = DEFAULT_RUNTIME_POLICY;
  return {
    provider: envPolicy.provider ?? file.provider ?? d.provider,
    sandboxPolicy: envPolicy.sandboxPolicy ?? file.sandboxPolicy ?? d.sandboxPolicy,
    sandboxMode: envPolicy.sandboxMode ?? file.sandboxMode ?? d.sandboxMode,
    model: envPolicy.model ?? file.model ?? d.model,
    reasoningEffort: envPolicy.reasoningEffort ?? file.reasoningEffort ?? d.reasoningEffort,
  };
}

/** Trimmed and lowercased; `null` when omitted or blank. */
function requestValue(raw: string | undefined): string | null {
  const v = raw?.trim().toLowerCase() ?? "";
  return v === "" ? null : v;
}

function checkProvider(policy: RuntimePolicy, raw: string | undefined): void {
  const requested = requestValue(raw);
  if (requested === null) return;
  if (!isProviderId(requested)) {
    throw new RunnerError(
      "PROVIDER_UNSUPPORTED",
      `Provider '${quotedInput(raw?.trim() ?? "")}' is not supported. Supported: ${PROVIDER_IDS.join(", ")}.`,
    );
  }
  if (requested !== policy.provider) {
    throw new RunnerError(
      "PROVIDER_MISMATCH",
      `This runner runs provider '${policy.provider}', not '${requested}'. ` +
        `Omit the 'provider' field or set it to '${policy.provider}'.`,
    );
  }
}

/** Modes a request may name under `policyMode`: never wider (spec §6.5, design §3). */
function allowedModes(policyMode: string): string[] {
  const rank = (SANDBOX_MODES as readonly string[]).indexOf(policyMode);
  // A custom policy mode (FermiLink allows any string) cannot be ranked: only itself or read-only.
  if (rank < 0) return ["read-only", policyMode];
  return SANDBOX_MODES.slice(0, rank + 1);
}

function narrowSandbox(policy: RuntimePolicy, raw: string | undefined): string | null {
  const requested = requestValue(raw);
  const policyMode = policy.sandboxMode.trim();
  const known = (SANDBOX_MODES as readonly string[]).includes(requested ?? "");
  const isPolicyOwn = policy.sandboxPolicy === "enforce" && requested === policyMode.toLowerCase();
  if (requested !== null && !known && !isPolicyOwn) {
    throw new RunnerError(
      "SANDBOX_INVALID",
      `Sandbox '${quotedInput(raw?.trim() ?? "")}' is not a known mode. Allowed: ${SANDBOX_MODES.join(", ")}.`,
    );
  }
  // Under bypass there is no sandbox at all; a valid request value is ignored (FermiLink test
  // test_resolve_run_policy_honors_bypass_policy).
  if (policy.sandboxPolicy === "bypass") return null;
  if (requested === null || isPolicyOwn) return policyMode;
  const allowed = allowedModes(policyMode);
  if (!allowed.includes(requested)) {
    throw new RunnerError(
      "SANDBOX_INVALID",
      `Sandbox '${requested}' would widen this runner's sandbox mode '${policyMode}'. ` +
        `Allowed: ${allowed.join(", ")}.`,
    );
  }
  return requested;
}

/**
 * The policy for one run (spec §6.5, with its silent cases made errors):
 * the request may name the runner's own provider and a sandbox mode that is
 * equal to or narrower than the admin's. Model and effort always come from
 * the policy.
 * @throws RunnerError PROVIDER_UNSUPPORTED, PROVIDER_MISMATCH or SANDBOX_INVALID.
 */
export function resolveRunPolicy(
  policy: RuntimePolicy,
  requestSandbox: string | undefined,
  requestProvider: string | undefined,
): AgentPolicy {
  checkProvider(policy, requestProvider);
  return {
    provider: policy.provider,
    sandboxPolicy: policy.sandboxPolicy,
    sandboxMode: narrowSandbox(policy, requestSandbox),
    model: policy.model,
    reasoningEffort: policy.reasoningEffort,
  };
}
