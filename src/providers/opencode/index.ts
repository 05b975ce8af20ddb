import type { ProviderAdapter } from "../provider-adapter.js";
import { buildOpencodeCommand } from "./command.js";
import { normalizeOpencodeLine } from "./normalize.js";
import { OPENCODE_RETRY_GUARD } from "./retry-guard.js";

/** opencode (`opencode-ai`), run as `opencode run --format json` (spec §6.1–§6.3). */
export const opencodeAdapter: ProviderAdapter = Object.freeze({
  id: "opencode",
  binEnvKey: "FERMILINK_OPENCODE_BIN",
  defaultBinName: "opencode",
  workspaceAlias: null,
  buildCommand: buildOpencodeCommand,
  normalize: normalizeOpencodeLine,
  resultEventTypes: ["step_finish", "error"],
  // `opencode-ai` ships its binary in a platform package; where only that package is installed
  // (as in this project), no `.bin/opencode` link exists.
  extraBinCandidates: [
    "../opencode-linux-x64/bin/opencode",
    "../opencode-linux-arm64/bin/opencode",
  ],
  retryGuard: OPENCODE_RETRY_GUARD,
  readOnlyNeedsBwrap: true,
});
