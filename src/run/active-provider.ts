import { existsSync, readFileSync } from "node:fs";
import type { Config } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import type { ProviderAdapter } from "../providers/provider-adapter.js";
import { getProviderAdapter } from "../providers/registry.js";
import { resolveProviderBinary } from "../providers/resolve-binary.js";
import {
  mergeRuntimePolicy,
  parseAgentRuntimeFile,
  type RuntimePolicy,
} from "../providers/runtime-policy.js";

/** The provider the admin policy selects right now, with its resolved binary. */
export interface ActiveProvider {
  runtime: RuntimePolicy;
  adapter: ProviderAdapter;
  bin: string;
}

/**
 * Read the policy (FERMILINK_AGENT_* > agent_runtime.json > defaults, spec
 * §6.4) and resolve its CLI. Used at start-up (spec §1.0) and again for every
 * run, because the policy file may switch provider meanwhile (§10 item 21).
 */
export async function resolveActiveProvider(
  config: Config,
  projectBinDir: string,
  logger: Logger,
): Promise<ActiveProvider> {
  // Synchronous like the binary lookup: a small local file, read before the caller's 429 is known.
  const fileText = readPolicyFile(config.agentRuntimeFile);
  const parsed = parseAgentRuntimeFile(fileText);
  if (parsed.warning) logger.warn({ file: config.agentRuntimeFile }, parsed.warning);
  const runtime = mergeRuntimePolicy(config.agentEnv, parsed.policy);
  const adapter = getProviderAdapter(runtime.provider);
  const bin = await resolveProviderBinary(adapter, config.providerBins[adapter.id], {
    projectBinDir,
    pathEnv: config.hostEnv.PATH ?? "",
  });
  return { runtime, adapter, bin };
}

function readPolicyFile(file: string): string | null {
  // Usually absent: asking first is far cheaper than the exception a failed read builds.
  if (!existsSync(file)) return null;
  try {
    return readFileSync(file, "utf8");
  } catch {
    return null;
  }
}
