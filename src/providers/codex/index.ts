import type { ProviderAdapter } from "../provider-adapter.js";
import { buildCodexCommand } from "./command.js";
import { normalizeCodexLine } from "./normalize.js";

/** OpenAI Codex CLI (`@openai/codex`), run as `codex exec --json` (spec §6.1–§6.3). */
export const codexAdapter: ProviderAdapter = Object.freeze({
  id: "codex",
  binEnvKey: "FERMILINK_CODEX_BIN",
  defaultBinName: "codex",
  workspaceAlias: null,
  buildCommand: buildCodexCommand,
  normalize: normalizeCodexLine,
  resultEventTypes: ["turn.completed", "turn.failed"],
});
