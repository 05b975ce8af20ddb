/** The provider CLIs this runner implements (spec §6.1, newest FermiLink). */
export const PROVIDER_IDS = ["codex", "claude", "gemini", "opencode"] as const;

/** A provider this runner can run. */
export type ProviderId = (typeof PROVIDER_IDS)[number];

/** True when `value` names a provider this runner implements. */
export function isProviderId(value: string): value is ProviderId {
  return (PROVIDER_IDS as readonly string[]).includes(value);
}

/** Reasoning efforts FermiLink accepts (spec §6.4). */
export const REASONING_EFFORTS = ["low", "medium", "high", "xhigh"] as const;
