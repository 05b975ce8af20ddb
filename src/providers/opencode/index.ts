import type { ProviderAdapter } from "../provider-adapter.js";
import { buildOpencodeCommand } from "./command.js";
import { normalizeOpencodeLine } from "./normalize.js";

/** opencode (`opencode-ai`), run as `opencode run --format json` (spec §6.1–§6.3). */
export const opencodeAdapter: ProviderAdapter = Object.freeze({
  id: "opencode",
  binEnvKey: "FERMILINK_OPENCODE_BIN",
  defaultBinName: "opencode",
  workspaceAlias: null,
  buildCommand: buildOpencodeCommand,
  normalize: normalizeOpencodeLine,
});
