import type { ProviderAdapter } from "../provider-adapter.js";
import { buildClaudeCommand } from "./command.js";
import { normalizeClaudeLine } from "./normalize.js";

/** Anthropic Claude Code (`@anthropic-ai/claude-code`), run as `claude --print` (spec §6.1–§6.3). */
export const claudeAdapter: ProviderAdapter = Object.freeze({
  id: "claude",
  binEnvKey: "FERMILINK_CLAUDE_BIN",
  defaultBinName: "claude",
  workspaceAlias: "CLAUDE.md",
  buildCommand: buildClaudeCommand,
  normalize: normalizeClaudeLine,
  resultEventTypes: ["result"],
});
