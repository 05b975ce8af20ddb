/**
 * The one table from provider id to adapter. Shared code asks this registry
 * and never branches on a provider's name (style.md, "absorb" item 3); adding
 * a provider means adding a folder and one line here.
 */
import { PROVIDER_IDS, type ProviderId } from "../config/providers.js";
import { claudeAdapter } from "./claude/index.js";
import { codexAdapter } from "./codex/index.js";
import { geminiAdapter } from "./gemini/index.js";
import { opencodeAdapter } from "./opencode/index.js";
import type { ProviderAdapter } from "./provider-adapter.js";

/** Every adapter, keyed by id. The `Record` type makes a missing provider a type error. */
export const PROVIDER_ADAPTERS: Readonly<Record<ProviderId, ProviderAdapter>> = Object.freeze({
  codex: codexAdapter,
  claude: claudeAdapter,
  gemini: geminiAdapter,
  opencode: opencodeAdapter,
});

/** The adapter for `id`. */
export function getProviderAdapter(id: ProviderId): ProviderAdapter {
  return PROVIDER_ADAPTERS[id];
}

/**
 * Every provider's workspace alias (CLAUDE.md, GEMINI.md), so the workspace
 * stage can remove the inactive ones' symlinks (spec §4.3 step 3).
 */
export const PROVIDER_ALIASES: readonly string[] = Object.freeze(
  PROVIDER_IDS.flatMap((id) => {
    const alias = PROVIDER_ADAPTERS[id].workspaceAlias;
    return alias === null ? [] : [alias];
  }),
);
