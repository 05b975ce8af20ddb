import type { ProviderAdapter } from "../provider-adapter.js";
import { buildGeminiCommand } from "./command.js";
import { normalizeGeminiLine } from "./normalize.js";

/** Google Gemini CLI (`@google/gemini-cli`), run with `--output-format stream-json` (spec §6.1–§6.3). */
export const geminiAdapter: ProviderAdapter = Object.freeze({
  id: "gemini",
  binEnvKey: "FERMILINK_GEMINI_BIN",
  defaultBinName: "gemini",
  workspaceAlias: "GEMINI.md",
  buildCommand: buildGeminiCommand,
  normalize: normalizeGeminiLine,
  resultEventTypes: ["result"],
});
